"""The ADM, score-SDE and U-ViT loaders against their authors' own code, where it is on PYTHONPATH (the nightly GPU job
has the checkouts; elsewhere these skip, naming what to provide): small random networks built by that code from its
real configs and flags, saved as it saves them, loaded through the zoo; D(x; sigma) must equal the x0 the authors'
code derives at the same noise level (guided-diffusion's p_mean_variance pred_xstart; score_sde_pytorch's
get_score_fn and Tweedie's formula; U-ViT's ScoreModel.x0_pred), to float32 precision. Discrete chains are compared on their own steps, where the authors'
labels are whole; between steps the suite interpolates in log sigma (models/kernels.py)."""
import importlib
import importlib.util
import math
import sys

import pytest
import torch

from models.published import _score_sde_root, _uvit_root, score_sde_module
from models.zoo import ZooEntry, load_denoiser

FLOAT32 = 1e-6  # relative to the largest |x0|: both sides run the same float32 network; measured 0 to 1.1e-7 (ADM,
# score-SDE) and 7.1e-8 to 1.4e-7 (U-ViT, at t 0.9 to 1e-3)
SCORE_SDE_CONFIGS = [  # Table 1's DDPMv1-v8 configs, and NCSN++ VE continuous and discrete
    ("configs/vp/ddpm/cifar10_continuous.py", "vp", "eps"), ("configs/vp/ddpm/cifar10.py", "vp-discrete", "eps"),
    ("configs/vp/cifar10_ddpmpp_continuous.py", "vp", "eps"),
    ("configs/vp/cifar10_ddpmpp_deep_continuous.py", "vp", "eps"),
    ("configs/subvp/cifar10_ddpmpp_deep_continuous.py", "subvp", "eps"),
    ("configs/subvp/cifar10_ddpm_continuous.py", "subvp", "eps"),
    ("configs/subvp/cifar10_ddpmpp_continuous.py", "subvp", "eps"),
    ("configs/ve/cifar10_ncsnpp_continuous.py", "ve", "score"), ("configs/ve/cifar10_ncsnpp.py", "ve", "score")]


def relative_gap(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs.double()).abs().max() / theirs.abs().max())


@pytest.fixture
def score_sde(tmp_path, monkeypatch):
    root = _score_sde_root()
    if root is None or importlib.util.find_spec("ml_collections") is None:
        pytest.skip("needs yang-song/score_sde_pytorch (SAMENOISE_SCORE_SDE or PYTHONPATH) and ml_collections")
    if not torch.cuda.is_available():  # its CUDA ops compile at import; on the CPU it runs their native versions
        monkeypatch.setattr("torch.utils.cpp_extension.load", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "path", sys.path + [str(root)])  # as the loader does: its configs import `configs`
    return root


def small(root, rel: str, tmp_path):
    """The real config with 32 base channels and one residual block per level, as a config file of its own (an
    absolute `config` path is read as it is)."""
    body = (root / rel).read_text().replace(
        "  return config\n", "  config.model.nf = 32\n  config.model.num_res_blocks = 1\n  return config\n")
    path = tmp_path / f"small_{rel.replace('/', '_')}"
    path.write_text(body)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module.get_config()


@pytest.mark.parametrize("rel, kernel, prediction", SCORE_SDE_CONFIGS)
def test_score_sde_loader_agrees_with_get_score_fn(score_sde, tmp_path, rel, kernel, prediction):
    path, config = small(score_sde, rel, tmp_path)
    sde_lib = importlib.import_module("sde_lib")
    utils = score_sde_module(score_sde, "utils")
    score_sde_module(score_sde, config.model.name)
    ema_module = score_sde_module(score_sde, "ema")
    config.device = torch.device("cpu")
    torch.manual_seed(0)
    model = utils.create_model(config)  # DataParallel, as its run_lib does
    for p in model.parameters():  # their init zeroes some layers; random weights make every path count
        p.data.normal_(0, 0.05)
    ema = ema_module.ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    for p in model.parameters():
        p.data.add_(0.01)  # the raw weights differ from the EMA's, which sampling uses
    torch.save({"optimizer": torch.optim.Adam(model.parameters()).state_dict(), "model": model.state_dict(),
                "ema": ema.state_dict(), "step": 0}, tmp_path / "ckpt.pth")
    ema.copy_to(model.parameters())
    D = load_denoiser(ZooEntry(name="x", source=str(tmp_path / "ckpt.pth"), format="score-sde", config=str(path),
                               kernel=kernel, prediction=prediction, image_size=32))
    c, m = config.training, config.model
    n_scales = m.num_scales
    sde = {"vpsde": lambda: sde_lib.VPSDE(m.beta_min, m.beta_max, n_scales),
           "subvpsde": lambda: sde_lib.subVPSDE(m.beta_min, m.beta_max, n_scales),
           "vesde": lambda: sde_lib.VESDE(m.sigma_min, m.sigma_max, n_scales)}[c.sde]()
    score_fn = utils.get_score_fn(sde, model, train=False, continuous=c.continuous)
    gaps = []
    for t in (0.9, 0.5, 0.1, 0.02):
        x0 = torch.rand(2, 3, 32, 32) * 2 - 1 if config.data.centered else torch.rand(2, 3, 32, 32)
        if c.continuous:
            mean, std = sde.marginal_prob(x0, torch.full((2,), t))
            scale = mean.flatten(1)[:, 0] / x0.flatten(1)[:, 0]
        elif c.sde == "vpsde":  # on the chain's own steps, with its own coefficients
            n = round(t * (n_scales - 1))
            t = n / (n_scales - 1)
            scale, std = sde.sqrt_alphas_cumprod[n].repeat(2), sde.sqrt_1m_alphas_cumprod[n].repeat(2)
        else:  # NCSN's index n counts down from sigma_max
            n = round((1 - t) * (n_scales - 1))
            t = 1 - n / (n_scales - 1)
            scale = torch.ones(2)
            std = torch.full((2,), m.sigma_max * (m.sigma_min / m.sigma_max) ** (n / (n_scales - 1)))
        scale, std = scale[:, None, None, None], std[:, None, None, None]
        x_t = scale * x0 + std * torch.randn_like(x0)
        with torch.no_grad():
            theirs = (x_t + std**2 * score_fn(x_t, torch.full((2,), t))) / scale  # Tweedie's formula
            if config.data.centered:
                ours = D(x_t.double() / scale.double(), (std / scale).double().reshape(-1))
            else:  # [0, 1] data: the suite's x is 2 x - 1, its sigma twice theirs
                ours, theirs = D(2 * x_t.double() - 1, 2 * std.double().reshape(-1)), 2 * theirs - 1
        gaps.append(relative_gap(ours, theirs))
    assert max(gaps) < FLOAT32, gaps


GUIDED = {"image_size": 64, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
          "attention_resolutions": "32", "num_head_channels": 16, "resblock_updown": True, "use_scale_shift_norm": True,
          "use_new_attention_order": True, "use_fp16": True}  # small, with every option of the 64x64 release
IMPROVED = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "attention_resolutions": "16"}  # CIFAR-10 size


@pytest.mark.parametrize("fmt, flags", [
    ("guided-diffusion", GUIDED | {"learn_sigma": True, "class_cond": True, "noise_schedule": "cosine"}),
    ("guided-diffusion", GUIDED | {"noise_schedule": "linear", "diffusion_steps": 4000, "rescale_timesteps": True}),
    ("guided-diffusion", GUIDED | {"learn_sigma": True, "noise_schedule": "linear", "predict_xstart": True}),
    # improved-diffusion's CIFAR-10 flags: 4000 cosine steps, learned sigma, timesteps rescaled by default
    ("improved-diffusion", IMPROVED | {"learn_sigma": True, "noise_schedule": "cosine", "diffusion_steps": 4000}),
])
def test_adm_loader_agrees_with_the_authors_diffusion(tmp_path, fmt, flags):
    package = fmt.replace("-", "_")
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"needs openai/{fmt} on PYTHONPATH")
    script_util = importlib.import_module(f"{package}.script_util")
    torch.manual_seed(0)
    # the reference runs in float32: guided-diffusion's float16 torso needs a GPU
    model, diffusion = script_util.create_model_and_diffusion(
        **script_util.model_and_diffusion_defaults() | flags | ({"use_fp16": False} if "use_fp16" in flags else {}))
    for p in model.parameters():  # their init zeroes the output layer
        p.data.normal_(0, 0.05)
    torch.save(model.state_dict(), tmp_path / "adm.pt")
    model.eval()
    conditional = flags.get("class_cond", False)
    D = load_denoiser(ZooEntry(name="adm", source=str(tmp_path / "adm.pt"), format=fmt, kernel="vp-discrete",
                               prediction="x0" if flags.get("predict_xstart") else "eps", time_input="discrete",
                               image_size=flags["image_size"], conditional=conditional, flags=flags))
    y = torch.tensor([3, 7]) if conditional else None
    gaps = []
    for step in (900, 500, 100, 5):
        n = step * flags.get("diffusion_steps", 1000) // 1000
        x_t = torch.randn(2, 3, flags["image_size"], flags["image_size"])
        with torch.no_grad():
            theirs = diffusion.p_mean_variance(model, x_t, torch.full((2,), n), clip_denoised=False,
                                               model_kwargs={} if y is None else {"y": y})["pred_xstart"]
            alpha_bar = float(diffusion.alphas_cumprod[n])
            ours = D(x_t.double() / math.sqrt(alpha_bar), math.sqrt((1 - alpha_bar) / alpha_bar), y)
        gaps.append(relative_gap(ours, theirs))
    assert max(gaps) < FLOAT32, gaps


# configs/cifar10_uvit_small.py's network arguments, narrower and shallower (512 wide and 12 deep in the release)
UVIT_SMALL = {"img_size": 32, "patch_size": 2, "embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_ratio": 4,
              "qkv_bias": False, "mlp_time_embed": False, "num_classes": -1}


def test_uvit_loader_agrees_with_the_authors_score_model(tmp_path, monkeypatch):
    root = _uvit_root()
    missing = [m for m in ("einops", "absl", "tqdm") if importlib.util.find_spec(m) is None]
    if root is None or not (root / "sde.py").is_file() or missing:
        pytest.skip("needs baofff/U-ViT (SAMENOISE_UVIT or PYTHONPATH) and einops, absl-py, tqdm (its sde.py's "
                    f"imports){': missing ' + ', '.join(missing) if missing else ''}")
    from models.published import load_uvit  # noqa: F401 - the loader under test, through the zoo below
    monkeypatch.syspath_prepend(str(root))
    uvit, sde = importlib.import_module("libs.uvit"), importlib.import_module("sde")
    try:
        torch.manual_seed(0)
        nnet = uvit.UViT(**UVIT_SMALL)
        for p in nnet.parameters():  # some of their init is zero
            p.data.normal_(0, 0.05)
        torch.save(nnet.state_dict(), tmp_path / "uvit.pth")  # as their TrainState saves nnet_ema.pth
        nnet.eval()
        score_model = sde.ScoreModel(nnet, pred="noise_pred", sde=sde.VPSDE())  # train.py / eval.py's
        D = load_denoiser(ZooEntry(name="uvit", source=str(tmp_path / "uvit.pth"), format="uvit", kernel="vp",
                                   prediction="eps", time_input="t", time_scale=999.0, image_size=32,
                                   flags=UVIT_SMALL))
        # a random U-ViT's output hardly moves with its time token (given t instead of 999 t, x0 still agreed within
        # 1e-6): the time each network is called with is compared on its own
        seen = {"theirs": [], "ours": []}
        nnet.register_forward_pre_hook(lambda m, args: seen["theirs"].append(args[1].double()))
        D.net.model.register_forward_pre_hook(lambda m, args: seen["ours"].append(args[1].double()))
        gaps = []
        for t in (0.9, 0.5, 0.1, 1e-3):
            x_t = torch.randn(2, 3, 32, 32)
            tt = torch.full((2,), t)
            alpha = score_model.sde.cum_alpha(tt.double())[0]  # float64: 1 - alpha at t = 1e-3 is 1e-4
            with torch.no_grad():
                theirs = score_model.x0_pred(x_t, tt)
                ours = D(x_t.double() / float(alpha) ** 0.5, math.sqrt((1 - float(alpha)) / float(alpha)))
            gaps.append(relative_gap(ours, theirs))
        assert max(gaps) < FLOAT32, gaps
        assert len(seen["ours"]) == len(seen["theirs"]) == 4
        for ours, theirs in zip(seen["ours"], seen["theirs"]):  # 999 t; t recovered from sigma in float64
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in ("libs", "sde", "uvit_libs")]:
            del sys.modules[name]

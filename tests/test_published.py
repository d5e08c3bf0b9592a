"""The ADM, score-SDE and U-ViT loaders (models/published.py) and the EDM pickle's baselines, on tiny stand-ins of
their authors' code written here: the same package layout, key names, flags and checkpoint layout, a much smaller
network. Each is loaded through the registry, sampled, and compared with a direct call of the stand-in through the score
convention of its authors' code (parity within 1e-5: the same float32 network calls, float64 arithmetic)."""
import importlib
import math
import pickle
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from models.generate import solve
from models.grids import make_grid
from models.published import adm_betas, score_sde_module
from models.samplers import sample_euler
from models.zoo import Unavailable, ZooEntry, ZooError, check_available, load_denoiser, read_zoo
from tests.helpers import edm_stand_in

PARITY = 1e-5  # the same float32 network calls on both sides; only float64 step arithmetic may differ


def forget(*prefixes: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


# --- ADM ------------------------------------------------------------------------------------------------------------

ADM_SCRIPT_UTIL = '''
import torch
from torch import nn

NUM_CLASSES = 5


def model_and_diffusion_defaults():
    return dict(image_size=8, num_channels=8, num_res_blocks=1, attention_resolutions="16,8", class_cond=False,
                use_fp16=False, learn_sigma=False, diffusion_steps=1000, noise_schedule="linear",
                timestep_respacing="", use_kl=False, predict_xstart=False, rescale_timesteps=False,
                rescale_learned_sigmas=False)


def create_model(image_size, num_channels, num_res_blocks, learn_sigma=False, class_cond=False,
                 attention_resolutions="16", use_fp16=False):
    return UNetModel(num_channels, 6 if learn_sigma else 3, NUM_CLASSES if class_cond else None)


class UNetModel(nn.Module):
    """ADM's key names (time_embed, input_blocks, label_emb, out) around a one-convolution network."""

    def __init__(self, ch, out_channels, num_classes):
        super().__init__()
        self.ch = ch
        self.time_embed = nn.Sequential(nn.Linear(ch, ch), nn.SiLU(), nn.Linear(ch, ch))
        self.input_blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(3, ch, 3, padding=1))])
        if num_classes:
            self.label_emb = nn.Embedding(num_classes, ch)
        self.out = nn.Sequential(nn.GroupNorm(2, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, timesteps, y=None):
        half = self.ch // 2
        freqs = torch.exp(-torch.arange(half, dtype=torch.float32) * (9.21 / half))
        args = timesteps[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=1))
        if y is not None:
            emb = emb + self.label_emb(y)
        return self.out(self.input_blocks[0](x) + emb[:, :, None, None])
'''


@pytest.fixture
def adm_code(tmp_path, monkeypatch):
    """write(package) puts a stand-in of OpenAI's package on sys.path and returns its script_util."""
    def write(package: str):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "script_util.py").write_text(ADM_SCRIPT_UTIL)
        monkeypatch.syspath_prepend(str(tmp_path))
        return importlib.import_module(f"{package}.script_util")

    yield write
    forget("guided_diffusion", "improved_diffusion")


def save_adm(script_util, path, **flags):
    torch.manual_seed(0)
    args = script_util.model_and_diffusion_defaults() | flags
    unet = script_util.create_model(args["image_size"], args["num_channels"], args["num_res_blocks"],
                                    learn_sigma=args["learn_sigma"], class_cond=args["class_cond"])
    torch.save(unet.state_dict(), path)
    return unet.eval()


def adm_entry(tmp_path, fmt="guided-diffusion", **fields):
    return ZooEntry(**{"name": "adm-tiny", "source": str(tmp_path / "adm.pt"), "format": fmt,
                       "kernel": "vp-discrete", "prediction": "eps", "time_input": "discrete", "image_size": 8,
                       "sampler": "euler", "nfe": 6} | fields)


@pytest.mark.parametrize("steps", [1000, 4000])
@pytest.mark.parametrize("schedule, diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_adm_betas_match_diffusers_schedules(steps, schedule, diffusers_name):
    """The same named schedules as diffusers' DDPMScheduler (linear rescaled to `steps`, the capped cosine);
    diffusers computes them in float32."""
    from diffusers import DDPMScheduler

    scale = 1000 / steps
    ref = DDPMScheduler(num_train_timesteps=steps, beta_schedule=diffusers_name, beta_start=1e-4 * scale,
                        beta_end=0.02 * scale).betas.double()
    assert torch.allclose(adm_betas(schedule, steps), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fmt, package, flags", [
    ("guided-diffusion", "guided_diffusion", {"learn_sigma": True, "class_cond": True, "noise_schedule": "cosine",
                                              "diffusion_steps": 4000}),
    ("improved-diffusion", "improved_diffusion", {"rescale_timesteps": True, "noise_schedule": "cosine",
                                                  "diffusion_steps": 4000}),
    ("guided-diffusion", "guided_diffusion", {}),
])
def test_adm_checkpoint_samples_like_its_network_called_directly(tmp_path, adm_code, fmt, package, flags):
    script_util = adm_code(package)
    unet = save_adm(script_util, tmp_path / "adm.pt", **flags)
    conditional = flags.get("class_cond", False)
    D = load_denoiser(adm_entry(tmp_path, fmt, conditional=conditional, flags=flags))
    steps = flags.get("diffusion_steps", 1000)
    log_sigmas = 0.5 * torch.log(1 / torch.cumprod(1 - adm_betas(flags.get("noise_schedule", "linear"), steps), 0) - 1)
    factor = 1000 / steps if flags.get("rescale_timesteps") else 1

    def direct(x, sigma, label=None):
        """ADM's eps-network at the step n nearest sigma in log sigma, on x_t = x_hat / sqrt(1 + sigma^2)."""
        sigma = float(sigma)
        n = int(torch.argmin((log_sigmas - math.log(sigma)).abs()))
        t = torch.full((len(x),), n * factor, dtype=torch.float32 if factor != 1 else torch.long)
        with torch.no_grad():
            eps = unet((x / math.sqrt(1 + sigma**2)).float(), t, label)[:, :3].double()
        return x - sigma * eps

    eps = torch.randn((3, 3, 8, 8), generator=torch.Generator().manual_seed(1)).double()
    labels = torch.tensor([0, 3, 4]) if conditional else None
    x = D.kernel.initial_state(eps)
    with torch.no_grad():
        ours = solve(D, x, D.kernel, "euler", 6, label=labels).x
    ref = sample_euler(direct, x, make_grid("edm", D.kernel, 6), labels).x
    assert (ours - ref).abs().max() < PARITY
    assert D.kernel.num_train_timesteps == steps


def test_adm_flags_that_disagree_with_the_checkpoint_are_refused_by_name(tmp_path, adm_code):
    script_util = adm_code("guided_diffusion")
    save_adm(script_util, tmp_path / "adm.pt", learn_sigma=True, class_cond=True)
    with pytest.raises(ZooError, match=r"flag learn_sigma is False in the entry but the checkpoint .* was built with "
                                       r"learn_sigma = True"):
        load_denoiser(adm_entry(tmp_path, conditional=True, flags={"class_cond": True}))
    with pytest.raises(ZooError, match=r"flag class_cond is False in the entry .* class_cond = True"):
        load_denoiser(adm_entry(tmp_path, flags={"learn_sigma": True}))
    with pytest.raises(ZooError, match=r"flag num_channels is 16 in the entry .* num_channels = 8"):
        load_denoiser(adm_entry(tmp_path, conditional=True, flags={"learn_sigma": True, "class_cond": True,
                                                                   "num_channels": 16}))
    with pytest.raises(ZooError, match=r"flags \['num_chanels'\] are not guided_diffusion flags; valid flags: "):
        load_denoiser(adm_entry(tmp_path, flags={"num_chanels": 8}))
    ok = {"learn_sigma": True, "class_cond": True}
    with pytest.raises(ZooError, match=r"marked unconditional but its network takes 5 classes"):
        load_denoiser(adm_entry(tmp_path, flags=ok))
    with pytest.raises(ZooError, match=r"flag image_size is 8 \(the package default\) but the entry's "
                                       r"image_size is 16"):
        load_denoiser(adm_entry(tmp_path, conditional=True, image_size=16, flags=ok))
    with pytest.raises(ZooError, match=r"prediction is 'eps' in the entry but 'x0'"):
        load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok | {"predict_xstart": True}))
    with pytest.raises(ZooError, match=r"noise_schedule 'sqrt' is not supported; supported: linear, cosine"):
        load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok | {"noise_schedule": "sqrt"}))
    # 0 divided by zero, 1 made a one-level chain; 1000.5 (loaded as 1000 steps beside a 1000 / 1000.5 rescale) is
    # refused by its type
    for steps in (0, -5, 1):
        with pytest.raises(ZooError, match=rf"flag diffusion_steps must be a whole number >= 2, got {steps}"):
            load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok | {"diffusion_steps": steps}))
    # a flag of another type than its default's reached create_model: "64" channels or 1 for a bool built another
    # network or failed inside the authors' code
    for flag, value, what in (("diffusion_steps", 1000.5, "an int"), ("num_channels", "8", "an int"),
                              ("class_cond", 1, "a bool"), ("noise_schedule", 1, "a string"),
                              ("attention_resolutions", [16, 8], "a string")):
        with pytest.raises(ZooError, match=rf"flag {flag} is {re.escape(repr(value))}; valid: {what}, as its default"):
            load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok | {flag: value}))
    torch.save(torch.zeros(3), tmp_path / "adm.pt")  # a bare tensor: torch's own error named neither entry nor file
    with pytest.raises(ZooError, match=r"adm.pt holds a Tensor, not a dict of named weights"):
        load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok))
    save_adm(script_util, tmp_path / "adm.pt", learn_sigma=True, class_cond=True)
    assert load_denoiser(adm_entry(tmp_path, conditional=True, flags=ok)).num_classes == 5


def test_adm_entry_with_its_flags_table_loads_from_a_zoo_file(tmp_path, adm_code):
    """models/real.toml's layout: the flags as a [models.<name>.flags] table; the source relative to the file."""
    save_adm(adm_code("guided_diffusion"), tmp_path / "adm.pt", learn_sigma=True, class_cond=True)
    (tmp_path / "zoo.toml").write_text(textwrap.dedent("""
        [models.adm-tiny]
        source = "adm.pt"
        format = "guided-diffusion"
        kernel = "vp-discrete"
        time_input = "discrete"
        image_size = 8
        conditional = true
        num_classes = 5

        [models.adm-tiny.flags]
        learn_sigma = true
        class_cond = true
        noise_schedule = "cosine"
    """))
    entry = read_zoo(tmp_path / "zoo.toml")["adm-tiny"]
    assert entry.flags == {"learn_sigma": True, "class_cond": True, "noise_schedule": "cosine"}
    assert load_denoiser(entry).num_classes == 5


def test_an_adm_entrys_fingerprint_names_the_authors_code_it_is_built_with(tmp_path, adm_code):
    """The network and the defaults of the flags an entry leaves out come from the authors' package: an edit there
    (a pull in the checkout, another fork on PYTHONPATH) makes the entry's sets again."""
    from fixtures.zoo import entry_fingerprint

    save_adm(adm_code("guided_diffusion"), tmp_path / "adm.pt")
    entry = adm_entry(tmp_path)
    first = entry_fingerprint(entry)
    assert entry_fingerprint(entry) == first
    script = tmp_path / "guided_diffusion" / "script_util.py"
    script.write_text(script.read_text().replace("num_channels=8", "num_channels=16"))
    assert "num_channels=16" in script.read_text() and entry_fingerprint(entry) != first


def test_adm_without_its_package_says_what_to_provide(tmp_path):
    entry = adm_entry(tmp_path)
    with pytest.raises(Unavailable, match=r"need OpenAI's `guided_diffusion` package importable: clone "
                                          r"https://github.com/openai/guided-diffusion"):
        check_available(entry)
    with pytest.raises(Unavailable, match=r"`improved_diffusion`.*github.com/openai/improved-diffusion"):
        load_denoiser(adm_entry(tmp_path, "improved-diffusion"))


# --- score-SDE ------------------------------------------------------------------------------------------------------

SCORE_SDE_UTILS = '''
import sde_lib  # as score_sde_pytorch's models/utils.py: the checkout's root must be importable

_MODELS = {}


def register_model(cls=None, *, name=None):
    def _register(cls):
        _MODELS[name or cls.__name__] = cls
        return cls
    return _register if cls is None else _register(cls)


def get_model(name):
    return _MODELS[name]
'''

SCORE_SDE_NET = '''
import math

import torch
from torch import nn

from . import utils


@utils.register_model(name="ddpm")
class DDPM(nn.Module):
    """score_sde_pytorch's conventions in one convolution: [0, 1] inputs when data.centered is False, a descending
    sigma table for discrete VE labels, and the output divided by sigma under model.scale_by_sigma."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        m = config.model
        self.register_buffer("sigmas", torch.exp(torch.linspace(math.log(m.sigma_max), math.log(m.sigma_min),
                                                                m.num_scales)))
        c = config.data.num_channels
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.temb = nn.Linear(1, c)

    def forward(self, x, labels):
        if not self.config.data.centered:
            x = 2 * x - 1
        h = torch.tanh(self.conv(x)) + self.temb(torch.log1p(labels.float())[:, None])[:, :, None, None]
        if self.config.model.scale_by_sigma:
            used = labels.float() if self.config.training.continuous else self.sigmas[labels.long()]
            h = h / used[:, None, None, None]
        return h
'''

SCORE_SDE_CONFIG = '''
from types import SimpleNamespace


def get_config():
    training = SimpleNamespace(sde={sde!r}, continuous={continuous})
    data = SimpleNamespace(image_size=8, num_channels=3, centered={centered})
    model = SimpleNamespace(name="ddpm", sigma_min=0.01, sigma_max=50.0, num_scales=1000, beta_min=0.1,
                            beta_max=20.0, scale_by_sigma={scale_by_sigma}, ema_rate=0.9999)
    return SimpleNamespace(training=training, data=data, model=model)
'''

VARIANTS = {  # config file -> (sde, continuous, centered, scale_by_sigma, entry kernel, entry prediction)
    "vp_cont": ("vpsde", True, True, False, "vp", "eps"),
    "vp_discrete": ("vpsde", False, True, False, "vp-discrete", "eps"),
    "subvp_cont": ("subvpsde", True, True, False, "subvp", "eps"),
    "ve_cont": ("vesde", True, False, True, "ve", "score"),
    "ve_discrete": ("vesde", False, False, True, "ve", "score"),
}


@pytest.fixture
def score_sde_code(tmp_path, monkeypatch):
    """A stand-in score_sde_pytorch checkout (sde_lib.py, models/, configs/) on sys.path."""
    root = tmp_path / "score_sde_pytorch"
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "sde_lib.py").write_text("")
    (root / "models" / "utils.py").write_text(SCORE_SDE_UTILS)
    (root / "models" / "ddpm.py").write_text(SCORE_SDE_NET)
    for name, (sde, continuous, centered, by_sigma, _, _) in VARIANTS.items():
        (root / "configs" / f"{name}.py").write_text(textwrap.dedent(SCORE_SDE_CONFIG).format(
            sde=sde, continuous=continuous, centered=centered, scale_by_sigma=by_sigma))
    monkeypatch.syspath_prepend(str(root))
    yield root
    forget("score_sde_models", "sde_lib")
    forget(*[m for m in sys.modules if m.startswith("score_sde_config_")])


def save_score_sde(root, variant: str, path):
    """A checkpoint as score_sde_pytorch's save_checkpoint writes it: the DataParallel state dict ('module.' keys)
    and the EMA's shadow parameters, here the weights plus 0.05 so that sampling tells them apart."""
    spec = importlib.util.spec_from_file_location("cfg", root / "configs" / f"{variant}.py")
    cfg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg)
    config = cfg.get_config()
    utils = score_sde_module(root, "utils")
    score_sde_module(root, "ddpm")
    torch.manual_seed(0)
    net = utils.get_model("ddpm")(config)
    shadow = [p.detach() + 0.05 for p in net.parameters()]
    torch.save({"optimizer": {}, "model": {f"module.{k}": v for k, v in net.state_dict().items()},
                "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": shadow}, "step": 10}, path)
    with torch.no_grad():
        for p, s in zip(net.parameters(), shadow):
            p.copy_(s)
    return net.eval(), config


def score_sde_entry(tmp_path, variant: str, **fields):
    kernel, prediction = VARIANTS[variant][4:]
    return ZooEntry(**{"name": f"sde-{variant}", "source": str(tmp_path / "sde.pth"), "format": "score-sde",
                       "config": f"configs/{variant}.py", "kernel": kernel, "prediction": prediction,
                       "image_size": 8} | fields)


def score_fn(net, config, x_hat: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x_hat; sigma) in the suite's [-1, 1] sigma-space, computed the way score_sde_pytorch's get_score_fn reads
    its network, in its own time t and data range, then Tweedie's formula x0 = (x_t + std^2 score) / mean."""
    m, sde = config.model, config.training.sde
    b0, b1 = m.beta_min, m.beta_max
    if sde in ("vpsde", "subvpsde"):
        # u(t) = b0 t + (b1 - b0) t^2 / 2; VP: sigma^2 = e^u - 1; sub-VP: sigma = 2 sinh(u / 2)
        u = math.log1p(sigma**2) if sde == "vpsde" else 2 * math.asinh(sigma / 2)
        t = (-b0 + math.sqrt(b0**2 + 2 * (b1 - b0) * u)) / (b1 - b0)
        mean = math.exp(-u / 2)
        std = math.sqrt(1 - math.exp(-u)) if sde == "vpsde" else 1 - math.exp(-u)
        if config.training.continuous or sde == "subvpsde":
            labels = t * 999
        else:  # the fractional step whose log sigma (interpolated in log sigma) is this one, on DDPM's chain: the
            # suite's convention between steps (models/kernels.py, VPDiscrete); the authors' sampler moves in the
            # continuous SDE's t instead, and the two agree on the chain's steps (tests/test_published_code.py)
            ab = np.cumprod(1 - np.linspace(b0 / m.num_scales, b1 / m.num_scales, m.num_scales))
            labels = float(np.interp(math.log(sigma), 0.5 * np.log((1 - ab) / ab), np.arange(m.num_scales)))
        x_t = mean * x_hat
        with torch.no_grad():
            out = net(x_t.float(), torch.full((len(x_hat),), labels, dtype=torch.float32)).double()
        return (x_t - std * out) / mean  # score = -out / std
    # VE on [0, 1] data: sigma there is half the suite's; the network sees its input mapped in float32
    s, x = sigma / 2, (x_hat.float() + 1) / 2
    if config.training.continuous:
        labels = torch.full((len(x_hat),), s, dtype=torch.float32)
    else:
        t = math.log(s / m.sigma_min) / math.log(m.sigma_max / m.sigma_min)
        labels = torch.full((len(x_hat),), round((1 - t) * (m.num_scales - 1)), dtype=torch.long)
    with torch.no_grad():
        score = net(x, labels).double()
    return 2 * ((x_hat + 1) / 2 + s**2 * score) - 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_score_sde_checkpoint_samples_like_its_score_function(tmp_path, score_sde_code, variant):
    net, config = save_score_sde(score_sde_code, variant, tmp_path / "sde.pth")
    D = load_denoiser(score_sde_entry(tmp_path, variant))
    eps = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(2)).double()
    x = D.kernel.initial_state(eps)
    sigmas = make_grid("edm", D.kernel, 6)
    with torch.no_grad():
        ours = sample_euler(D, x, sigmas).x
    ref = sample_euler(lambda x_, s_, label=None: score_fn(net, config, x_, float(s_)), x, sigmas).x
    assert (ours - ref).abs().max() < PARITY
    if config.training.sde == "vesde":  # the [0, 1] data's sigma range, doubled into [-1, 1]
        assert math.isclose(D.kernel.sigma_min, 0.02) and math.isclose(D.kernel.sigma_max, 100.0)


def test_a_score_sde_entrys_fingerprint_names_the_checkouts_network_code(tmp_path, score_sde_code):
    """The network is built by the checkout's models/ (and its op/ kernels): an edit there makes the sets again, as
    an edit of its configs does."""
    from fixtures.zoo import entry_fingerprint

    variant = next(iter(VARIANTS))
    save_score_sde(score_sde_code, variant, tmp_path / "sde.pth")
    entry = score_sde_entry(tmp_path, variant)
    first = entry_fingerprint(entry)
    (score_sde_code / "models" / "ddpm.py").write_text(SCORE_SDE_NET + "\n\nEDITED = True\n")
    assert entry_fingerprint(entry) != first


def test_score_sde_entry_that_disagrees_with_its_config_is_refused(tmp_path, score_sde_code):
    save_score_sde(score_sde_code, "subvp_cont", tmp_path / "sde.pth")
    with pytest.raises(ZooError, match=r"kernel is 'vp' in the entry but 'subvp \(training.sde = subvpsde, "
                                       r"continuous = True\)'"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", kernel="vp"))
    with pytest.raises(ZooError, match=r"prediction is 'score' in the entry but 'eps'"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", prediction="score"))
    with pytest.raises(ZooError, match=r"sigma_min \(from kernel_options\) is .* in the entry"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", kernel_options={"beta_max": 10.0}))
    with pytest.raises(ZooError, match=r"image_size is 32 in the entry but 8"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", image_size=32))
    with pytest.raises(ZooError, match=r"needs `config`"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", config=""))
    with pytest.raises(ZooError, match=r"time_scale is 1000.0 in the entry but 999.0"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", time_scale=1000.0))
    with pytest.raises(ZooError, match=r"time_input is 'sigma' in the entry but 't'"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont", time_input="sigma"))
    assert load_denoiser(score_sde_entry(tmp_path, "subvp_cont", kernel_options={"beta_max": 20.0})).kernel
    cfg = score_sde_code / "configs" / "subvp_cont.py"
    cfg.write_text(cfg.read_text().replace('name="ddpm"', 'name="ncsnv2_64"'))
    with pytest.raises(ZooError, match=r"model.name = 'ncsnv2_64', which score_sde_pytorch's models/ does not "
                                       r"define"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont"))


def test_a_score_sde_network_that_builds_cuda_kernels_at_import_is_unavailable_without_them(tmp_path,
                                                                                           score_sde_code):
    """DDPM++ (ncsnpp.py) compiles score_sde's op/ kernels when imported; where that fails (no CUDA), its cases are
    skipped saying what they need, not errors."""
    from models.zoo import Unavailable

    save_score_sde(score_sde_code, "subvp_cont", tmp_path / "sde.pth")
    (score_sde_code / "models" / "ncsnpp.py").write_text(
        "raise OSError('CUDA_HOME environment variable is not set')  # as torch.utils.cpp_extension.load says\n")
    cfg = score_sde_code / "configs" / "subvp_cont.py"
    cfg.write_text(cfg.read_text().replace('name="ddpm"', 'name="ncsnpp"'))
    with pytest.raises(Unavailable, match=r"models/ncsnpp.py failed \(OSError: CUDA_HOME .*\); its networks build "
                                          r"CUDA kernels at import"):
        load_denoiser(score_sde_entry(tmp_path, "subvp_cont"))


def test_score_sde_checkpoint_that_does_not_fit_is_refused(tmp_path, score_sde_code):
    save_score_sde(score_sde_code, "vp_cont", tmp_path / "sde.pth")
    state = torch.load(tmp_path / "sde.pth", weights_only=True)
    state["ema"]["shadow_params"] = state["ema"]["shadow_params"][:1]
    torch.save(state, tmp_path / "sde.pth")
    with pytest.raises(ZooError, match=r"EMA holds 1 tensors, the network has 4 trainable parameters"):
        load_denoiser(score_sde_entry(tmp_path, "vp_cont"))
    del state["model"]["module.conv.bias"]
    torch.save(state, tmp_path / "sde.pth")
    with pytest.raises(ZooError, match=r"missing keys \['conv.bias'\]"):
        load_denoiser(score_sde_entry(tmp_path, "vp_cont"))
    torch.save({"state_dict": {}}, tmp_path / "sde.pth")
    with pytest.raises(ZooError, match=r"is not a score_sde_pytorch checkpoint"):
        load_denoiser(score_sde_entry(tmp_path, "vp_cont"))


def test_score_sde_without_its_checkout_says_what_to_provide(tmp_path, monkeypatch):
    with pytest.raises(Unavailable, match=r"no score_sde_pytorch checkout found.*"
                                          r"github.com/yang-song/score_sde_pytorch, set SAMENOISE_SCORE_SDE"):
        check_available(score_sde_entry(tmp_path, "vp_cont"))
    monkeypatch.setenv("SAMENOISE_SCORE_SDE", str(tmp_path))
    with pytest.raises(Unavailable, match=r"SAMENOISE_SCORE_SDE=.* is not a score_sde_pytorch checkout"):
        check_available(score_sde_entry(tmp_path, "vp_cont"))


def test_a_score_sde_checkout_named_later_is_the_code_that_runs_sde_lib_included(tmp_path, score_sde_code, monkeypatch):
    """The network package was swapped for a second checkout's, but its sde_lib (and op/, configs/) stayed the first
    one's, imported before, while the fingerprint hashed the second's."""
    import shutil

    save_score_sde(score_sde_code, "vp_cont", tmp_path / "sde.pth")
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    first = load_denoiser(score_sde_entry(tmp_path, "vp_cont"))(x, 2.0)
    other = Path(shutil.copytree(score_sde_code, tmp_path / "other"))
    (other / "sde_lib.py").write_text("SCALE = 2.0\n")
    (other / "models" / "ddpm.py").write_text(SCORE_SDE_NET.replace(
        "from . import utils", "import sde_lib\n\nfrom . import utils").replace(
        "        return h\n", "        return h * getattr(sde_lib, 'SCALE', 1.0)\n"))
    monkeypatch.setenv("SAMENOISE_SCORE_SDE", str(other))
    second = load_denoiser(score_sde_entry(tmp_path, "vp_cont"))(x, 2.0)
    torch.testing.assert_close(x - second, 2 * (x - first))  # D = x - sigma eps: the second checkout's eps doubled
    assert str(score_sde_code) not in sys.path and sys.path[-1] == str(other)


def test_score_sde_checkout_named_by_the_environment_is_found_and_kept_behind_installed_packages(
        tmp_path, score_sde_code, monkeypatch):
    """$SAMENOISE_SCORE_SDE names the checkout without PYTHONPATH; it is appended to sys.path, after site-packages,
    so that its top-level modules (datasets.py, utils.py, ...) shadow nothing."""
    save_score_sde(score_sde_code, "vp_cont", tmp_path / "sde.pth")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(score_sde_code)])
    monkeypatch.setenv("SAMENOISE_SCORE_SDE", str(score_sde_code))
    assert load_denoiser(score_sde_entry(tmp_path, "vp_cont")).kernel.name == "vp"
    assert sys.path[-1] == str(score_sde_code)


# --- U-ViT ----------------------------------------------------------------------------------------------------------

UVIT_TIMM = '''
from torch import nn


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(in_features, hidden_features), nn.GELU(), nn.Linear(hidden_features,
                                                                                                     in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
'''

UVIT_NET = '''
import math

import torch
from torch import nn

from .timm import Mlp  # as libs/uvit.py imports its copy of timm: a relative import inside libs/


class Block(nn.Module):
    def __init__(self, dim, mlp_ratio, skip):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        return x + self.mlp(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class UViT(nn.Module):
    """U-ViT's constructor and key names (patch_embed, pos_embed, in_blocks, mid_block, out_blocks, decoder_pred,
    final_layer) around a network without attention; the time enters as a sinusoid of timesteps, as U-ViT's does."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.,
                 qkv_bias=False, qk_scale=None, norm_layer=nn.LayerNorm, mlp_time_embed=False, num_classes=-1,
                 use_checkpoint=False, conv=True, skip=True):
        super().__init__()
        self.in_chans, self.patch_size, self.embed_dim = in_chans, patch_size, embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.num_patches = (img_size // patch_size) ** 2
        if num_classes > 0:
            self.label_emb = nn.Embedding(num_classes, embed_dim)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + self.num_patches, embed_dim))
        self.in_blocks = nn.ModuleList(Block(embed_dim, mlp_ratio, False) for _ in range(depth // 2))
        self.mid_block = Block(embed_dim, mlp_ratio, False)
        self.out_blocks = nn.ModuleList(Block(embed_dim, mlp_ratio, skip) for _ in range(depth // 2))
        self.norm = norm_layer(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()

    def forward(self, x, timesteps, y=None):
        tokens = self.patch_embed(x)
        half = self.embed_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = timesteps[:, None].float() * freqs[None]
        time = torch.cat([torch.cos(args), torch.sin(args)], dim=1)[:, None]
        h = torch.cat([time, tokens + time], dim=1) + self.pos_embed  # no attention here: each token sees the time
        skips = []
        for blk in self.in_blocks:
            skips.append(h := blk(h))
        h = self.mid_block(h)
        for blk, skip in zip(self.out_blocks, reversed(skips)):  # the deepest in-block meets the first out-block
            h = blk(h, skip)
        h = self.decoder_pred(self.norm(h))[:, 1:]
        n, p, c = int(self.num_patches ** 0.5), self.patch_size, self.in_chans
        h = h.reshape(len(x), n, n, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(len(x), c, n * p, n * p)
        return self.final_layer(h)
'''

UVIT_FLAGS = {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 3, "num_heads": 2, "mlp_ratio": 2,
              "qkv_bias": False, "mlp_time_embed": False, "num_classes": -1}


@pytest.fixture
def uvit_code(tmp_path, monkeypatch):
    """A stand-in U-ViT checkout (libs/uvit.py, libs/timm.py, no libs/__init__.py) on sys.path."""
    root = tmp_path / "U-ViT"
    (root / "libs").mkdir(parents=True)
    (root / "libs" / "timm.py").write_text(UVIT_TIMM)
    (root / "libs" / "uvit.py").write_text(UVIT_NET)
    monkeypatch.syspath_prepend(str(root))
    yield root
    forget("uvit_libs")


def save_uvit(root, path, **flags):
    """A plain UViT state dict, as U-ViT's eval.py loads its released cifar10_uvit_small.pth."""
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("libs.uvit")
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    net = module.UViT(**(UVIT_FLAGS | flags))
    torch.save(net.state_dict(), path)
    forget("libs")
    return net.eval()


def uvit_entry(tmp_path, **fields):
    return ZooEntry(**{"name": "uvit-tiny", "source": str(tmp_path / "uvit.pth"), "format": "uvit", "kernel": "vp",
                       "prediction": "eps", "time_input": "t", "image_size": 8, "sampler": "euler", "nfe": 6,
                       "flags": UVIT_FLAGS} | fields)


def test_uvit_checkpoint_samples_like_its_noise_prediction(tmp_path, uvit_code):
    """Bao et al.'s score model: x_t = mean x0 + std eps on VPSDE(0.1, 20), the network called with 999 t predicting
    eps; in sigma-space D(x_hat; sigma) = x_hat - sigma eps(x_t, 999 t(sigma))."""
    net = save_uvit(uvit_code, tmp_path / "uvit.pth")
    D = load_denoiser(uvit_entry(tmp_path))
    assert D.kernel.name == "vp" and (D.kernel.beta.beta_min, D.kernel.beta.beta_d) == (0.1, 19.9)

    def direct(x_hat, sigma, label=None, scale=999):
        sigma = float(sigma)
        u = math.log1p(sigma**2)  # VP: sigma^2 = e^u - 1, u(t) = 0.1 t + 19.9 t^2 / 2
        t = (-0.1 + math.sqrt(0.01 + 2 * 19.9 * u)) / 19.9
        with torch.no_grad():
            eps = net((x_hat / math.sqrt(1 + sigma**2)).float(), torch.full((len(x_hat),), scale * t)).double()
        return x_hat - sigma * eps

    eps = torch.randn((3, 3, 8, 8), generator=torch.Generator().manual_seed(3)).double()
    x = D.kernel.initial_state(eps)
    sigmas = make_grid("edm", D.kernel, 6)
    with torch.no_grad():
        ours = sample_euler(D, x, sigmas).x
    ref = sample_euler(direct, x, sigmas).x
    assert (ours - ref).abs().max() < PARITY
    # the network given 1000 t instead of 999 t makes another sample: the parity above can fail
    wrong = sample_euler(lambda x_, s_, label=None: direct(x_, s_, scale=1000), x, sigmas).x
    assert (ours - wrong).abs().max() > 100 * PARITY


def test_uvit_entry_that_disagrees_with_its_checkpoint_is_refused(tmp_path, uvit_code):
    save_uvit(uvit_code, tmp_path / "uvit.pth")
    with pytest.raises(ZooError, match=r"flags \['embed_dims'\] are not arguments of U-ViT's UViT that an entry can "
                                       r"set; valid flags: img_size, patch_size, in_chans, embed_dim"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"embed_dims": 16}))
    with pytest.raises(ZooError, match=r"flag img_size is 224 \(the class default\) but the entry's image_size is 8"):
        load_denoiser(uvit_entry(tmp_path, flags={k: v for k, v in UVIT_FLAGS.items() if k != "img_size"}))
    with pytest.raises(ZooError, match=r"flag img_size is 8 but the entry's image_size is 16"):
        load_denoiser(uvit_entry(tmp_path, image_size=16))
    with pytest.raises(ZooError, match=r"size mismatch for pos_embed"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"embed_dim": 32}))
    with pytest.raises(ZooError, match=r"unexpected keys \['in_blocks.0"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"depth": 1}))
    with pytest.raises(ZooError, match=r"prediction is 'x0' in the entry but 'eps'"):
        load_denoiser(uvit_entry(tmp_path, prediction="x0"))
    with pytest.raises(ZooError, match=r"kernel is 'subvp' in the entry but 'vp'"):
        load_denoiser(uvit_entry(tmp_path, kernel="subvp"))
    with pytest.raises(ZooError, match=r"time_scale is 1000.0 in the entry but 999.0"):
        load_denoiser(uvit_entry(tmp_path, time_scale=1000.0))
    with pytest.raises(ZooError, match=r"\(beta_min, beta_max\) \(from kernel_options\) is \(0.1, 10.0\) in the entry"):
        load_denoiser(uvit_entry(tmp_path, kernel_options={"beta_max": 10.0}))
    assert load_denoiser(uvit_entry(tmp_path, kernel_options={"t_min": 1e-4})).kernel.t_min == 1e-4
    with pytest.raises(ZooError, match=r"flag num_classes is 10; only unconditional U-ViTs"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"num_classes": 10}))
    save_uvit(uvit_code, tmp_path / "uvit.pth", num_classes=10)
    with pytest.raises(ZooError, match=r"uvit.pth is a class-conditional U-ViT \(it has label_emb\)"):
        load_denoiser(uvit_entry(tmp_path))
    torch.save(torch.zeros(3), tmp_path / "uvit.pth")
    with pytest.raises(ZooError, match=r"uvit.pth holds a Tensor, not a dict of named weights"):
        load_denoiser(uvit_entry(tmp_path))


@pytest.mark.parametrize("flag, value, valid", [("patch_size", "2", "an int, as its default 16"),
                                                ("qkv_bias", 1, "a bool, as its default False"),
                                                ("num_classes", None, "an int, as its default -1"),
                                                ("mlp_ratio", True, "a number, as its default 4.0"),
                                                ("qk_scale", "abc", "a number, as its default None")])
def test_uvit_flag_of_another_type_is_refused_by_name(tmp_path, uvit_code, flag, value, valid):
    """A TOML value of another type reached UViT's constructor and failed inside it without naming the flag."""
    save_uvit(uvit_code, tmp_path / "uvit.pth")
    with pytest.raises(ZooError, match=rf"flag {flag} is {value!r}; valid: {valid}"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {flag: value}))
    # a class (norm_layer) is no value an entry can give
    with pytest.raises(ZooError, match=r"flags \['norm_layer'\] are not arguments of U-ViT's UViT that an entry can set"):
        load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"norm_layer": "LayerNorm"}))
    assert load_denoiser(uvit_entry(tmp_path, flags=UVIT_FLAGS | {"mlp_ratio": 2.0})).num_classes is None


def test_a_uvit_checkout_named_later_is_the_one_that_runs(tmp_path, uvit_code, monkeypatch):
    """The checkout's libs/ is imported once as uvit_libs: a second checkout named in the same process (its code
    hashed into the fingerprint) must also be the code that builds the network, not the first one's."""
    save_uvit(uvit_code, tmp_path / "uvit.pth")
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    first = load_denoiser(uvit_entry(tmp_path))(x, 2.0)
    other = tmp_path / "other"
    (other / "libs").mkdir(parents=True)
    (other / "libs" / "timm.py").write_text(UVIT_TIMM)
    (other / "libs" / "uvit.py").write_text(UVIT_NET.replace("return self.final_layer(h)",
                                                             "return 2 * self.final_layer(h)"))
    monkeypatch.setenv("SAMENOISE_UVIT", str(other))
    second = load_denoiser(uvit_entry(tmp_path))(x, 2.0)
    torch.testing.assert_close(x - second, 2 * (x - first))  # D = x - sigma eps: the second checkout's eps is doubled


@pytest.mark.parametrize("fmt", ["guided-diffusion", "score-sde", "uvit"])
def test_a_published_checkpoint_named_by_its_folder_is_an_error_not_a_skip(tmp_path, fmt, adm_code, score_sde_code,
                                                                          uvit_code):
    """A training folder (U-ViT's <step>.ckpt/, holding nnet_ema.pth) given as the source was reported as absent, so
    its cases were skipped; it is an error that says to name the file."""
    folder = tmp_path / "500000.ckpt"
    folder.mkdir()
    if fmt == "guided-diffusion":
        adm_code("guided_diffusion")
    entry = {"guided-diffusion": adm_entry, "uvit": uvit_entry}.get(fmt, lambda p, **f: score_sde_entry(p, "vp_cont",
                                                                                                          **f))
    with pytest.raises(ZooError, match=rf"{fmt} checkpoint .*500000.ckpt is a folder; name the checkpoint file in it"):
        check_available(entry(tmp_path, source=str(folder)))


def test_uvit_entry_from_a_zoo_file_loads_and_its_fingerprint_names_the_checkouts_code(tmp_path, uvit_code):
    """models/real.toml's layout (the flags as a table); an edit of the checkout's libs/ makes the sets again."""
    from fixtures.zoo import entry_fingerprint

    save_uvit(uvit_code, tmp_path / "uvit.pth")
    flags = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in UVIT_FLAGS.items())
    (tmp_path / "zoo.toml").write_text(textwrap.dedent("""
        [models.uvit-tiny]
        source = "uvit.pth"
        format = "uvit"
        kernel = "vp"
        time_input = "t"
        time_scale = 999.0
        image_size = 8

        [models.uvit-tiny.flags]
    """) + flags + "\n")
    entry = read_zoo(tmp_path / "zoo.toml")["uvit-tiny"]
    assert entry.flags == UVIT_FLAGS and load_denoiser(entry).num_classes is None
    first = entry_fingerprint(entry)
    (uvit_code / "libs" / "uvit.py").write_text(UVIT_NET + "\n\nEDITED = True\n")
    assert entry_fingerprint(entry) != first


def test_uvit_without_its_checkout_or_einops_says_what_to_provide(tmp_path, monkeypatch):
    with pytest.raises(Unavailable, match=r"no U-ViT checkout \(a folder with libs/uvit.py\) found.*"
                                          r"github.com/baofff/U-ViT, set SAMENOISE_UVIT"):
        check_available(uvit_entry(tmp_path))
    monkeypatch.setenv("SAMENOISE_UVIT", str(tmp_path))
    with pytest.raises(Unavailable, match=r"SAMENOISE_UVIT=.* is not a U-ViT checkout \(a folder with libs/uvit.py\)"):
        check_available(uvit_entry(tmp_path))
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "uvit.py").write_text("import einops_not_installed\n")
    torch.save({}, tmp_path / "uvit.pth")
    try:
        with pytest.raises(Unavailable, match=r"libs/uvit.py needs `einops_not_installed`.*pip install einops"):
            load_denoiser(uvit_entry(tmp_path))
    finally:
        forget("uvit_libs")


# --- EDM's baseline pickles -----------------------------------------------------------------------------------------

@pytest.fixture
def edm_code(tmp_path, monkeypatch):
    """write(nets_py): stand-ins of NVlabs' packages on sys.path, forgotten afterwards."""
    def write(nets_py: str):
        edm_stand_in(tmp_path, textwrap.dedent(nets_py))
        monkeypatch.syspath_prepend(str(tmp_path))

    yield write
    forget("torch_utils", "dnnlib")


def test_edm_baseline_pickle_keeps_to_its_sigma_levels_and_takes_class_indices(tmp_path, edm_code):
    """EDM's converted ADM baseline (iDDPMPrecond) declares sigma_min/sigma_max, rounds sigma to the levels it was
    trained on and, with classes, takes one-hot labels: the step grid keeps within the range and on those levels, as
    EDM's sampler does, and class indices reach the network one-hot."""
    edm_code("""
        import torch
        class Precond(torch.nn.Module):
            img_resolution, img_channels, label_dim = 8, 3, 4
            sigma_min, sigma_max = 0.0064, 157.0
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.tensor(0.5))
                self.register_buffer("u", torch.tensor([157.0, 20.0, 3.0, 0.5, 0.0064, 0.0]))
            def round_sigma(self, sigma):
                sigma = torch.as_tensor(sigma)
                index = (sigma.reshape(-1, 1).float() - self.u.reshape(1, -1)).abs().argmin(1)
                return self.u[index].reshape(sigma.shape).to(sigma.dtype)
            def forward(self, x, sigma, class_labels=None):
                assert class_labels.shape == (len(x), self.label_dim)
                return x * self.w + (class_labels.argmax(1) + 1).reshape(-1, 1, 1, 1).to(x.dtype)
    """)
    from torch_utils.nets import Precond  # noqa: E402

    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": Precond()}, f)
    entry = ZooEntry(name="adm-baseline", source=str(tmp_path / "edm.pkl"), format="edm-pickle", kernel="edm",
                     prediction="x0", time_input="sigma", image_size=8, conditional=True)
    D = load_denoiser(entry)
    assert (D.kernel.sigma_min, D.kernel.sigma_max) == (0.0064, 80.0)
    grid = make_grid("edm", D.kernel, 6)
    levels = set(torch.tensor([20.0, 3.0, 0.5, 0.0064]).double().tolist())  # the network's float32 levels
    assert grid[-1] == 0 and set(grid[:-1].tolist()) <= levels and grid[0] == 20.0
    assert D.kernel.prior_scale == 20.0  # sampling starts on the first rounded level, as EDM's sampler does
    x = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert D(x, 1.0, torch.tensor([0, 3]))[:, 0, 0, 0].tolist() == [1.0, 4.0]


def test_an_edm_pickle_trained_in_float16_samples_in_float32_on_every_device(tmp_path, edm_code):
    """EDM's forward switches to float16 on CUDA when its `use_fp16` is set (the ImageNet-64 model, --fp16=1): the
    suite turns it off, so that the nightly GPU run samples in the precision a CPU run does."""
    edm_code("""
        import torch
        class Precond(torch.nn.Module):
            img_resolution, img_channels, label_dim = 8, 3, 0
            use_fp16 = True
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.tensor(0.5))
            def forward(self, x, sigma, class_labels=None):
                dtype = torch.float16 if self.use_fp16 else torch.float32  # as EDM does on CUDA
                return x.to(dtype) * self.w.to(dtype)
    """)
    from torch_utils.nets import Precond  # noqa: E402

    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": Precond()}, f)
    entry = ZooEntry(name="edm-fp16", source=str(tmp_path / "edm.pkl"), format="edm-pickle", kernel="edm",
                     prediction="x0", time_input="sigma", image_size=8)
    D = load_denoiser(entry)
    assert D.net.use_fp16 is False
    x = torch.full((1, 3, 8, 8), 1 / 3, dtype=torch.float64)
    with torch.no_grad():
        assert D.net(x.float(), torch.ones(1)).dtype == torch.float32

"""The registry and the checkpoint loaders, on tiny models saved by the tests in the real formats."""
import importlib.util
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from models.kernels import make_kernel
from models.samplers import sample_euler
from models.generate import solve
from models.training import TrainConfig, Trainer
from models.checkpoints import save_checkpoint
from models.unet import build_unet
from models.zoo import ZooEntry, ZooError, load_denoiser, read_zoo
from tests.helpers import edm_stand_in


def write_zoo(tmp_path, body: str):
    path = tmp_path / "zoo.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_unknown_keys_are_refused_with_the_valid_ones(tmp_path):
    path = write_zoo(tmp_path, """
        [models.unet-vp-eps]
        source = "x"
        kernal = "vp"
    """)
    expected = r"entry 'unet-vp-eps' has unknown keys \['kernal'\]; valid keys: source, format"
    with pytest.raises(ZooError, match=expected):
        read_zoo(path)
    with pytest.raises(ZooError, match="valid kernels: edm, subvp, ve, vp, vp-discrete"):
        read_zoo(write_zoo(tmp_path, '[models.a]\nsource = "x"\nkernel = "vpp"\n'))


@pytest.mark.parametrize("body, message", [
    ("models = 3\n", r"`models` is 3; a zoo file holds \[models.<name>\] tables"),
    ("[models]\na = 3\n", r"entry 'a' is 3; an entry is a table, \[models.a\]"),
    ('[models.a]\nsource = 5\n', r"entry 'a' has source = 5; valid: a string"),
    ('[models.a]\nsource = "x"\nnfe = "twenty"\n', r"has nfe = 'twenty'; valid: a whole number, at least 1"),
    ('[models.a]\nsource = "x"\nnfe = -5\n', r"has nfe = -5; valid: a whole number, at least 1"),
    ('[models.a]\nsource = "x"\nimage_size = "big"\n', r"has image_size = 'big'; valid: a whole number"),
    ('[models.a]\nsource = "x"\nconditional = "no"\n', r"has conditional = 'no'; valid: true or false"),
    ('[models.a]\nsource = "x"\ntime_scale = 0\n', r"has time_scale = 0; valid: a positive number"),
    ('[models.a]\nsource = "x"\nkernel_options = 1\n', r"has kernel_options = 1; valid: a table"),
    ('[models.a]\nsource = "x"\nkernel = "edm"\nkernel_options = { foo = 1 }\n',
     r"kernel_options \{'foo': 1\}, which the 'edm' kernel refuses .*; its options: sigma_min, sigma_max"),
    ('[models.a]\nsource = "x"\nsampler = "dpm3"\nnfe = 3\n',
     r"entry 'a': sampler 'dpm3' needs at least 4 denoiser evaluations, got NFE=3"),
])
def test_ill_typed_zoo_files_and_values_are_refused_at_reading(tmp_path, body, message):
    """A value of the wrong type or range is named when the zoo is read, not deep inside a case."""
    with pytest.raises(ZooError, match=message):
        read_zoo(write_zoo(tmp_path, body))


def test_a_zoo_file_that_is_not_text_is_refused_by_name(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ZooError, match=r"bin.toml: cannot read the zoo file \(UnicodeDecodeError"):
        read_zoo(path)


def test_keys_of_another_format_are_refused(tmp_path):
    path = write_zoo(tmp_path, '[models.a]\nsource = "x"\nformat = "diffusers"\n[models.a.flags]\nlearn_sigma = true\n')
    with pytest.raises(ZooError, match=r"entry 'a' has `flags`, which only formats guided-diffusion, "
                                       r"improved-diffusion, uvit read; its format is 'diffusers'"):
        read_zoo(path)
    with pytest.raises(ZooError, match=r"has `config`, which only formats score-sde read"):
        read_zoo(write_zoo(tmp_path, '[models.a]\nsource = "x"\nconfig = "configs/vp.py"\n'))
    # a prompt on a pixel model entered its fingerprint and golden files, and nothing read it
    for key in ("prompt", "prompt_embeddings"):
        with pytest.raises(ZooError, match=rf"has `{key}`, which only formats diffusers-latent read; its format is "
                                           rf"'samenoise'"):
            read_zoo(write_zoo(tmp_path, f'[models.a]\nsource = "x"\n{key} = "a cat"\n'))
    # a class count on an unconditional entry was compared with nothing
    with pytest.raises(ZooError, match=r"entry 'a' has num_classes 10 but is not conditional; set conditional = true, "
                                       r"or leave num_classes out"):
        read_zoo(write_zoo(tmp_path, '[models.a]\nsource = "x"\nnum_classes = 10\n'))


def test_entry_tags_come_from_its_name():
    assert ZooEntry(name="uvit-subvp-eps-m64", source="x").tags == ("uvit", "subvp", "eps", "m64")


@pytest.fixture
def saved_unet(tmp_path):
    cfg = TrainConfig(arch_options={"base_channels": 8}, image_size=8)
    trainer = Trainer(cfg, tmp_path / "run")
    folder = save_checkpoint(tmp_path / "ck", trainer.net, {"kernel": "vp", "prediction": "eps", "time_input": "t",
                                                            "time_scale": 999.0, "image_size": 8})
    return folder


def entry_for(folder, **kw):
    base = dict(name="unet-vp-eps", source=str(folder), kernel="vp", prediction="eps", time_input="t",
                time_scale=999.0, image_size=8)
    return ZooEntry(**(base | kw))


def test_samenoise_checkpoint_loads_and_samples(saved_unet):
    D = load_denoiser(entry_for(saved_unet))
    with torch.no_grad():
        out = D(torch.randn(2, 3, 8, 8, dtype=torch.float64), 2.0)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("change, message", [
    (dict(kernel="ve"), r"kernel is 've' in the entry but 'vp' in its checkpoint"),
    (dict(image_size=16), r"image_size is 16 in the entry but 8"),
    (dict(prediction="v"), r"prediction is 'v' in the entry but 'eps'"),
    (dict(time_input="log-sigma"), r"time_input is 'log-sigma' in the entry but 't'"),
    (dict(time_scale=1.0), r"time_scale is 1.0 in the entry but 999.0"),
    (dict(channels=1), r"channels is 1 in the entry but 3"),
    (dict(conditional=True), "marked conditional but its network takes no label"),
    (dict(source="/nonexistent/ck"), "checkpoint folder /nonexistent/ck does not exist"),
])
def test_mismatches_are_refused_at_load_time(saved_unet, change, message):
    with pytest.raises(ZooError, match=message):
        load_denoiser(entry_for(saved_unet, **change))


def test_a_checkpoints_sigma_data_is_the_one_it_samples_with(tmp_path):
    """EDM preconditioning with the sigma_data the model was trained under (recorded in samenoise.json), not 0.5."""
    from models.training import train

    cfg = TrainConfig(arch_options={"base_channels": 8}, image_size=8, dataset_size=8, batch_size=8, steps=2,
                      kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0,
                      sigma_data=1.0)
    folder = train(cfg, tmp_path / "run")
    D = load_denoiser(ZooEntry(name="unet-edm", source=str(folder), kernel="edm", prediction="edm",
                               time_input="log-sigma", time_scale=1.0, image_size=8))
    x, sigma, sd = torch.randn(2, 3, 8, 8, dtype=torch.float64), 2.0, 1.0
    with torch.no_grad():  # EDM's preconditioning written out (Karras et al. 2022, Table 1), c_noise = ln(sigma) / 4
        F = D.net((x / (sigma**2 + sd**2) ** 0.5).float(), torch.full((2,), math.log(sigma) / 4)).sample.double()
        expected = sd**2 / (sigma**2 + sd**2) * x + sigma * sd / (sigma**2 + sd**2) ** 0.5 * F
        torch.testing.assert_close(D(x, sigma), expected, rtol=1e-6, atol=1e-6)  # float32 network, float64 wrap


def test_an_entrys_settings_and_weights_are_in_its_fingerprint(saved_unet):
    """The store keys samples by this fingerprint: an entry edited (its kernel options, prompt, flags, ...) or its
    weights changed must not get the old samples; its description is not part of what it samples."""
    import dataclasses

    from fixtures.zoo import entry_fingerprint

    entry = entry_for(saved_unet)
    fp = entry_fingerprint(entry)
    assert entry_fingerprint(dataclasses.replace(entry, description="another text")) == fp
    # nor its name and labels, which no loader reads: a renamed entry keeps its sets
    for label in (dict(name="renamed"), dict(family="uvit"), dict(dataset="another")):
        assert entry_fingerprint(dataclasses.replace(entry, **label)) == fp, label
    # nor the rows per call: the store key records those, and the field's absence kept the fingerprints it had
    assert entry_fingerprint(dataclasses.replace(entry, micro_batch=8)) == fp
    for change in (dict(kernel_options={"t_max": 0.9}), dict(time_scale=1000.0), dict(prompt="a photo"),
                   dict(flags={"noise_schedule": "cosine"}), dict(grid="logsnr")):
        assert entry_fingerprint(dataclasses.replace(entry, **change)) != fp, change
    weights = saved_unet / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert entry_fingerprint(entry) != fp


def test_label_to_an_unconditional_entry_is_refused(saved_unet):
    D = load_denoiser(entry_for(saved_unet))
    with pytest.raises(ValueError, match="label was given to an unconditional denoiser"):
        D(torch.randn(1, 3, 8, 8, dtype=torch.float64), 1.0, torch.tensor([1]))


def test_diffusers_format_matches_ddim_pipeline(tmp_path):
    """The suite's Euler in sigma-space on a saved diffusers UNet equals diffusers' DDIMPipeline (eta = 0)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    unet = build_unet(image_size=8, base_channels=8).eval()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon",
                          clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe")
    pipe = DDIMPipeline.from_pretrained(tmp_path / "pipe")
    ref = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), eta=0.0, num_inference_steps=10,
               output_type="np").images  # NHWC in [0, 1]
    entry = ZooEntry(name="ddpm-tiny", source=str(tmp_path / "pipe"), format="diffusers", kernel="vp-discrete",
                     prediction="eps", time_input="discrete", image_size=8)
    D = load_denoiser(entry)
    kernel = D.kernel
    timesteps = pipe.scheduler.timesteps.double()
    sigmas = torch.cat([kernel.sigma(timesteps), torch.zeros(1, dtype=torch.float64)])
    eps = torch.randn((3, 3, 8, 8), generator=torch.Generator().manual_seed(7)).double()
    x = sample_euler(D, eps / kernel.s(timesteps[0]), sigmas).x
    ours = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() < 1e-4  # float32 network, float64 vs float32 step arithmetic


def _tiny_ddpm(tmp_path) -> ZooEntry:
    """A diffusers DDPM-style checkpoint of a tiny UNet: another format than the suite's own."""
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon",
                          clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    DDIMPipeline(unet=build_unet(image_size=8, base_channels=8).eval(), scheduler=sched).save_pretrained(
        tmp_path / "pipe")
    return ZooEntry(name="ddpm-tiny", source=str(tmp_path / "pipe"), format="diffusers", kernel="vp-discrete",
                    prediction="eps", time_input="discrete", image_size=8)


def test_a_checkpoint_built_before_is_loaded_only_when_a_set_is_to_be_made(tmp_path, monkeypatch):
    """Another format's checkpoint is loaded on its first run, which records what the built denoiser reports under
    its fingerprint (fixtures/zoo.py, LoadedLater); a later run reads a stored set without loading it, with the same
    key, and loads it when a set is to be made, giving the same images."""
    from cases import Run
    from fixtures import zoo as fixtures_zoo
    from fixtures.samples import SampleSource
    from fixtures.zoo import LoadedLater, ModelLoader, facts_path
    from models.noise import NoiseBank
    from models.store import SampleStore

    entry = _tiny_ddpm(tmp_path)
    zoo, cpu, cache = {entry.name: entry}, torch.device("cpu"), tmp_path / "cache"
    bank, run = NoiseBank.draw(0, entry.sample_shape, n=4), Run(entry.name, "dpm3", 4)
    first = ModelLoader(zoo, cpu, cache, runner="eager")
    made = SampleSource(first, SampleStore(tmp_path / "store"), cpu)(run, bank)
    assert type(first(entry.name)) is fixtures_zoo.Model
    facts = facts_path(cache, first(entry.name).fingerprint, "eager", cpu)
    assert facts.is_file()
    os.utime(facts, (1e9, 1e9))

    loads = []
    load = fixtures_zoo.load_denoiser
    monkeypatch.setattr(fixtures_zoo, "load_denoiser", lambda *a, **k: loads.append(a[0].name) or load(*a, **k))
    later = ModelLoader(zoo, cpu, cache, runner="eager")
    again = SampleSource(later, SampleStore(tmp_path / "store"), cpu)(run, bank)
    m = later(entry.name)
    assert isinstance(m, LoadedLater) and loads == [] and m.fingerprint == first(entry.name).fingerprint
    assert facts.stat().st_mtime > 1e9  # used: marked as a store hit is (models.store prune)
    assert again.key == made.key and np.array_equal(again.images, made.images)
    fresh = SampleSource(later, SampleStore(tmp_path / "other-store"), cpu)(run, bank)  # not stored: loaded now
    assert loads == [entry.name] and fresh.key == made.key and np.array_equal(fresh.images, made.images)
    assert type(m.kernel).__name__ == type(first(entry.name).kernel).__name__


def test_recorded_facts_are_used_only_in_their_context_and_checked_when_built(tmp_path):
    """Facts recorded under another runner, sampling code or unreadable are not used (the checkpoint is loaded);
    facts the built denoiser contradicts are named, with the file to remove."""
    import json

    from fixtures.zoo import LoadedLater, ModelLoader, facts_path

    entry = _tiny_ddpm(tmp_path)
    zoo, cpu, cache = {entry.name: entry}, torch.device("cpu"), tmp_path / "cache"
    path = facts_path(cache, ModelLoader(zoo, cpu, cache, runner="eager")(entry.name).fingerprint, "eager", cpu)
    facts = json.loads(path.read_text())
    assert facts["num_classes"] is None and facts["decodes"] is False and facts["runner"] == "eager"
    path.write_text(json.dumps(facts | {"num_classes": 7}))
    m = ModelLoader(zoo, cpu, cache, runner="eager")(entry.name)
    assert isinstance(m, LoadedLater) and m.num_classes == 7
    with pytest.raises(ZooError, match=r"zoo entry 'ddpm-tiny': its checkpoint builds a denoiser with .*"
                                       r"'num_classes': None.*not .*'num_classes': 7.*remove that file"):
        m.D
    for other in (facts | {"runner": "traced"}, facts | {"device": "cuda"},
                  facts | {"code": {"digest": "0", "versions": {}}}, {k: v for k, v in facts.items() if k != "decodes"},
                  facts | {"compiled": "false"}, facts | {"num_classes": "7"}, facts | {"num_classes": 0},
                  facts | {"kernel": ["VPDiscrete", 1]}):
        path.write_text(json.dumps(other))
        assert not isinstance(ModelLoader(zoo, cpu, cache, runner="eager")(entry.name), LoadedLater), other
        assert json.loads(path.read_text()) == facts  # recorded again by the load
    path.write_text("{not json")
    assert not isinstance(ModelLoader(zoo, cpu, cache, runner="eager")(entry.name), LoadedLater)
    assert isinstance(ModelLoader(zoo, cpu, cache, runner="eager")(entry.name), LoadedLater)


def test_a_checkpoint_built_before_keys_its_sets_as_its_first_run_did_under_every_runner(tmp_path):
    """The store key a LoadedLater makes equals the one the run that loaded it made, under the traced and the
    compiled runner (only `compiled` is keyed); the facts of one runner are not read under another."""
    from cases import Run
    from fixtures.samples import SampleSource
    from fixtures.zoo import LoadedLater, ModelLoader
    from models.noise import NoiseBank
    from models.store import SampleSet

    entry = _tiny_ddpm(tmp_path)
    zoo, cpu, cache = {entry.name: entry}, torch.device("cpu"), tmp_path / "cache"
    bank = NoiseBank.draw(0, entry.sample_shape, n=4)
    keys = []

    class Store:  # records the keys, makes nothing
        def get_or_make(self, key, make):
            keys.append(key)
            return SampleSet(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1), 4, key)

        def prefix(self, key, n, make, align):
            return self.get_or_make(key, make)

    kinds = []
    for runner in ("traced", "compiled", "traced", "compiled"):
        loader = ModelLoader(zoo, cpu, cache, runner=runner)
        SampleSource(loader, Store(), cpu)(Run(entry.name, "dpm3", 4), bank)
        kinds.append(isinstance(loader(entry.name), LoadedLater))
    assert kinds == [False, False, True, True]
    assert keys[0] == keys[2] and keys[1] == keys[3] and "runner" not in keys[0] and keys[1]["runner"] == "compiled"


def test_diffusers_kernel_mismatch_is_refused(tmp_path):
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(unet=build_unet(image_size=8, base_channels=8), scheduler=DDIMScheduler())
    pipe.save_pretrained(tmp_path / "p")
    with pytest.raises(ZooError, match=r"kernel is 'vp' in the entry but 'vp-discrete \(scheduler DDIMScheduler\)'"):
        load_denoiser(ZooEntry(name="x", source=str(tmp_path / "p"), format="diffusers", kernel="vp", image_size=8))


def test_hub_id_offline_names_the_checkpoint_and_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = ZooEntry(name="ddpm-cifar10", source="google/ddpm-cifar10-32", format="diffusers",
                     kernel="vp-discrete", image_size=32)
    with pytest.raises(ZooError, match=r"'google/ddpm-cifar10-32' is not available offline.*huggingface-cli download"):
        load_denoiser(entry)


def test_a_missing_local_folder_of_a_hub_format_is_not_called_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo = read_zoo(write_zoo(tmp_path, '[models.a]\nsource = "./weights/my-ddpm"\nformat = "diffusers"\n'
                                       'kernel = "vp-discrete"\n'))
    assert zoo["a"].source == str(tmp_path / "weights" / "my-ddpm")  # relative to the zoo file, as local sources are
    with pytest.raises(ZooError, match=r"checkpoint folder .*weights/my-ddpm does not exist \(a local path, not a "
                                       r"hub id\)"):
        load_denoiser(zoo["a"])


def test_edm_pickle_without_nvlabs_packages_says_so(tmp_path):
    entry = ZooEntry(name="edm-cifar10-uncond-vp", source=str(tmp_path / "edm.pkl"), format="edm-pickle",
                     kernel="edm", prediction="x0", time_input="sigma")
    with pytest.raises(ZooError, match=r"dnnlib, torch_utils not importable.*github.com/NVlabs/edm"):
        load_denoiser(entry)


def test_edm_pickle_loads_with_the_packages(tmp_path, monkeypatch):
    """A stand-in for NVlabs' packages and an EDMPrecond-like network pickled as EDM does ({'ema': net})."""
    edm_stand_in(tmp_path, textwrap.dedent("""
        import torch
        class Precond(torch.nn.Module):
            img_resolution, img_channels, label_dim = 8, 3, 0
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.tensor(0.5))
            def forward(self, x, sigma, class_labels=None):
                return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) * self.w
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from torch_utils.nets import Precond  # noqa: E402

    import pickle
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": Precond()}, f)
    entry = ZooEntry(name="edm-tiny", source=str(tmp_path / "edm.pkl"), format="edm-pickle", kernel="edm",
                     prediction="x0", time_input="sigma", image_size=8)
    D = load_denoiser(entry)
    x = torch.ones(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(D(x, 1.0), x / 2 * 0.5)
    bad = ZooEntry(name="edm-tiny", source=str(tmp_path / "edm.pkl"), format="edm-pickle", kernel="edm",
                   prediction="x0", time_input="sigma", image_size=8, kernel_options={"t_max": 0.9})
    with pytest.raises(ZooError, match=r"kernel_options t_max do not apply to an EDM pickle; valid: sigma_max, "):
        load_denoiser(bad)
    # a pickle of another layout gave KeyError 'ema' (before the entry's own fields were checked), a cut one
    # pickle's own words without the file, and any module under 'ema' loaded
    for held, says in [({"net": 1}, r"holds no EDM network under 'ema' .*; it holds \['net'\]"),
                       ({"ema": torch.nn.Linear(2, 2)}, r"holds no EDM network under 'ema' \(one with img_resolution"),
                       ("cut", r"edm.pkl is not a readable EDM pickle \(UnpicklingError")]:
        with open(tmp_path / "edm.pkl", "wb") as f:
            f.write(pickle.dumps({"ema": Precond()})[:40] if held == "cut" else pickle.dumps(held))
        with pytest.raises(ZooError, match=says):
            load_denoiser(entry)
    with pytest.raises(ZooError, match=r"the entry must say kernel = 'edm'"):  # the entry first, whatever the file
        load_denoiser(ZooEntry(**{**entry.__dict__, "kernel": "vp"}))
    for m in ("torch_utils.nets", "torch_utils", "dnnlib"):
        sys.modules.pop(m, None)


def test_diffusers_bare_model_layout_reads_the_root_scheduler_config(tmp_path):
    """Hub repos such as google/ddpm-cifar10-32 keep config.json and scheduler_config.json at the root."""
    from diffusers import DDPMScheduler

    build_unet(image_size=8, base_channels=8).save_pretrained(tmp_path / "m")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "m")
    entry = ZooEntry(name="x", source=str(tmp_path / "m"), format="diffusers", kernel="vp-discrete",
                     time_input="discrete", image_size=8)
    with pytest.raises(ZooError, match=r"prediction is 'eps' in the entry but 'v'"):
        load_denoiser(entry)
    assert load_denoiser(ZooEntry(**{**entry.__dict__, "prediction": "v"})).prediction == "v"


def test_consistency_model_matches_diffusers_one_step_pipeline(tmp_path):
    """A saved UNet with CMStochasticIterativeScheduler: the suite's one-step consistency sample equals diffusers'
    ConsistencyModelPipeline with one step on the same noise (sigma_max-scaled)."""
    from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline

    torch.manual_seed(0)
    unet = build_unet(image_size=8, base_channels=8, num_classes=4).eval()
    ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler()).save_pretrained(tmp_path / "cm")
    pipe = ConsistencyModelPipeline.from_pretrained(tmp_path / "cm")
    eps = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([1, 2])
    # the latents are scaled by sigma_max inside the pipeline
    ref = pipe(batch_size=2, class_labels=labels, num_inference_steps=1, latents=eps.clone(),
               output_type="np").images
    entry = ZooEntry(name="cd-tiny", source=str(tmp_path / "cm"), format="diffusers", kernel="edm", prediction="cm",
                     time_input="log-sigma", time_scale=1000.0, sampler="consistency", nfe=1, image_size=8,
                     conditional=True)
    D = load_denoiser(entry)
    x = solve(D, D.kernel.initial_state(eps.double()), D.kernel, "consistency", 1, label=labels).x
    ours = (x.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() < 1e-4
    with pytest.raises(ZooError, match="prediction is 'eps' in the entry but 'cm'"):
        load_denoiser(ZooEntry(**{**entry.__dict__, "prediction": "eps"}))


def save_tiny_latent_pipeline(folder):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16).eval()
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=True, timestep_spacing="leading")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    sched.save_pretrained(folder / "scheduler")
    emb = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1))
    np.save(folder / "prompt.npy", emb.numpy())
    return unet, vae, sched, emb


def test_latent_text_to_image_matches_a_diffusers_ddim_loop(tmp_path):
    """Stable-Diffusion-style folder (unet/, vae/, scheduler/ with scaled_linear betas) and precomputed prompt
    embeddings: the suite's Euler over latents + VAE decode equals diffusers' DDIMScheduler loop (eta = 0)."""
    unet, vae, sched, emb = save_tiny_latent_pipeline(tmp_path)
    sched.set_timesteps(10)
    eps = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    latents = eps.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(latents, t, encoder_hidden_states=emb.expand(2, -1, -1)).sample
            latents = sched.step(out, t, latents, eta=0.0).prev_sample
        ref = vae.decode(latents / vae.config.scaling_factor).sample
    zoo = tmp_path / "zoo.toml"
    zoo.write_text(textwrap.dedent(f'''
        [models.sd-tiny]
        source = "{tmp_path}"
        format = "diffusers-latent"
        kernel = "vp-discrete"
        time_input = "discrete"
        image_size = 8
        channels = 4
        prompt_embeddings = "prompt.npy"
        '''))
    D = load_denoiser(read_zoo(zoo)["sd-tiny"])
    timesteps = sched.timesteps.double()
    sigmas = torch.cat([D.kernel.sigma(timesteps), torch.zeros(1, dtype=torch.float64)])
    x = sample_euler(D, eps.double() / D.kernel.s(timesteps[0]), sigmas).x
    assert (D.decode(x) - ref.double()).abs().max() < 1e-4


def test_latent_entry_without_a_prompt_says_what_to_give(tmp_path):
    save_tiny_latent_pipeline(tmp_path)
    entry = ZooEntry(name="sd-tiny", source=str(tmp_path), format="diffusers-latent", kernel="vp-discrete",
                     time_input="discrete", image_size=8, channels=4)
    with pytest.raises(ZooError, match="needs `prompt` or `prompt_embeddings`"):
        load_denoiser(entry)
    entry = ZooEntry(**{**entry.__dict__, "prompt": "a photograph of an astronaut riding a horse"})
    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(ZooError, match="needs the `transformers` package"):
            load_denoiser(entry)


def test_loading_an_embedded_checkpoint_logs_no_float32_warning():
    """diffusers logs 'modules ... should be kept in float32' on every .to(dtype), even a no-op one; the suite's
    loaders cast only where a parameter differs, so a run is not filled with it."""
    import io
    import logging

    from diffusers.utils import logging as diffusers_logging

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    diffusers_logging.get_logger("diffusers").addHandler(handler)
    try:
        entry = read_zoo(Path(__file__).resolve().parents[1] / "models" / "embedded" / "zoo.toml")["unet16-edm-m64"]
        load_denoiser(entry)
    finally:
        diffusers_logging.get_logger("diffusers").removeHandler(handler)
    assert "kept in float32" not in buf.getvalue()


def test_a_new_checkpoint_format_is_one_registry_entry(tmp_path, monkeypatch):
    """Reading, the availability check and loading all go through models.zoo.FORMATS."""
    import models.zoo as zoo
    from models.registry import Registry
    from tests.helpers import TinyEpsNet

    def available(entry):
        if not Path(entry.source).is_file():
            raise zoo.Unavailable(f"zoo entry {entry.name!r}: {entry.source} is missing")

    def load(entry, device, dtype):
        return zoo.NetworkDenoiser(TinyEpsNet(), make_kernel("vp"), "eps", time_input="t", time_scale=999.0,
                                   sample_shape=entry.sample_shape)

    monkeypatch.setattr(zoo, "FORMATS", Registry("format", dict(zoo.FORMATS) | {"toy": zoo.Format(available, load)}))
    (tmp_path / "w.bin").write_bytes(b"")
    entries = read_zoo(write_zoo(tmp_path, '[models.t]\nsource = "w.bin"\nformat = "toy"\nimage_size = 8\n'))
    zoo.check_available(entries["t"])
    D = load_denoiser(entries["t"])
    assert D(torch.zeros(2, 3, 8, 8), torch.tensor(1.0)).shape == (2, 3, 8, 8)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(zoo.Unavailable, match="w.bin is missing"):
        zoo.check_available(entries["t"])


def test_a_latent_models_decode_does_not_depend_on_the_cores():
    """The decode ran on torch's default thread count after sampling on one thread a call: this decoder gave images
    that differ by 1 uint8 pixel between 1 and 2 threads (measured), under one store key."""
    import types

    from diffusers import AutoencoderKL

    from models.datasets import to_uint8
    from models.fast import intra_op_threads
    from models.zoo import LatentDenoiser

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(64, 128), latent_channels=4,
                        sample_size=32, norm_num_groups=32).eval()
    holder = types.SimpleNamespace(vae=vae)
    latents = torch.randn(16, 4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.55
    outs = []
    for threads in (1, 2):
        with intra_op_threads(threads):
            outs.append(to_uint8(LatentDenoiser.decode(holder, latents)))
    assert all((o == outs[0]).all() for o in outs[1:])


def test_images_with_nan_or_infinite_values_are_refused_not_clipped():
    from models.datasets import to_uint8

    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="2 image values are NaN or infinite"):
        to_uint8(x)


def test_a_fingerprint_follows_a_symlinked_weights_folder(tmp_path):
    """rglob does not enter a linked folder: a diffusers checkpoint whose unet/ links to retrained weights kept its
    fingerprint, and the store served the old weights' samples."""
    import os

    from fixtures.zoo import fingerprint_path

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(b"A")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model_index.json").write_text("{}")
    os.symlink(tmp_path / "weights", ck / "unet")
    os.symlink(ck, ck / "loop")  # a link back up the tree is walked once
    before = fingerprint_path(ck)
    (tmp_path / "weights" / "w.bin").write_bytes(b"B")
    assert fingerprint_path(ck) != before


def test_a_score_sde_entrys_fingerprint_follows_its_config_files(tmp_path, monkeypatch):
    """The config sets the SDE (beta or sigma range, discrete or continuous, centring); it entered the key by name."""
    from fixtures.zoo import entry_fingerprint
    from models.published import SCORE_SDE_ENV

    root = tmp_path / "score_sde_pytorch"
    (root / "models").mkdir(parents=True)
    (root / "sde_lib.py").write_text("")
    (root / "models" / "utils.py").write_text("")
    (root / "configs" / "vp").mkdir(parents=True)
    (root / "configs" / "default_cifar10_configs.py").write_text("BETA_MAX = 20.0\n")
    (root / "configs" / "vp" / "cifar10.py").write_text("from configs.default_cifar10_configs import *\n")
    (tmp_path / "ckpt.pth").write_bytes(b"weights")
    monkeypatch.setenv(SCORE_SDE_ENV, str(root))
    entry = ZooEntry(name="ddpm", source=str(tmp_path / "ckpt.pth"), format="score-sde", config="configs/vp/cifar10.py")
    before = entry_fingerprint(entry)
    (root / "configs" / "default_cifar10_configs.py").write_text("BETA_MAX = 10.0\n")
    assert entry_fingerprint(entry) != before


def test_a_fingerprint_does_not_depend_on_the_order_folders_are_listed(tmp_path):
    """A link to a sibling folder (unet_ema -> unet) is walked under both names: skipping a real folder seen once
    hashed the files under whichever name the file system listed first."""
    import os

    from fixtures.zoo import _files_under

    (tmp_path / "ck" / "unet").mkdir(parents=True)
    (tmp_path / "ck" / "unet" / "w.bin").write_bytes(b"A")
    os.symlink(tmp_path / "ck" / "unet", tmp_path / "ck" / "unet_ema")
    assert [str(p.relative_to(tmp_path / "ck")) for p in _files_under(tmp_path / "ck")] == ["unet/w.bin",
                                                                                            "unet_ema/w.bin"]


def test_a_score_sde_key_ignores_bytecode_and_hashes_no_folder_above_the_checkout(tmp_path, monkeypatch):
    from fixtures.zoo import _score_sde_config_digest
    from models.published import SCORE_SDE_ENV

    root = tmp_path / "score_sde_pytorch"
    (root / "models").mkdir(parents=True)
    (root / "sde_lib.py").write_text("")
    (root / "models" / "utils.py").write_text("")
    (root / "configs").mkdir()
    (root / "configs" / "a.py").write_text("X = 1\n")
    monkeypatch.setenv(SCORE_SDE_ENV, str(root))
    before = _score_sde_config_digest("configs/a.py")
    (root / "configs" / "__pycache__").mkdir()
    (root / "configs" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"bytecode")  # written by loading it
    assert _score_sde_config_digest("configs/a.py") == before
    (tmp_path / "elsewhere.py").write_text("Y = 2\n")  # a config outside the checkout: that file, not its folder
    outside = _score_sde_config_digest("../elsewhere.py")
    assert outside is not None
    (tmp_path / "beside.py").write_text("Z = 3\n")  # another file of its folder: no part of the digest
    assert _score_sde_config_digest("../elsewhere.py") == outside
    (tmp_path / "elsewhere.py").write_text("Y = 3\n")
    assert _score_sde_config_digest("../elsewhere.py") != outside


def test_a_latent_models_uint8_decode_equals_the_float_decode_made_uint8():
    """decode_uint8 turns each batch into uint8 as it goes (10,000 Stable Diffusion images in float64 would take about
    63 GB): the same images as the float decode of the whole set."""
    import types

    from diffusers import AutoencoderKL

    from models.datasets import to_uint8
    from models.zoo import LatentDenoiser

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), latent_channels=4,
                        sample_size=8, norm_num_groups=4).eval()
    holder = types.SimpleNamespace(vae=vae)
    holder.decode = types.MethodType(LatentDenoiser.decode, holder)
    latents = torch.randn(11, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = LatentDenoiser.decode_uint8(holder, latents, batch=4)
    assert got.dtype == np.uint8 and got.shape == (11, 8, 8, 3)
    assert np.array_equal(got, to_uint8(LatentDenoiser.decode(holder, latents, batch=4)))


def test_a_checkpoint_whose_files_disagree_is_refused_naming_the_file_and_what_differs(tmp_path):
    """A config.json the network class refuses, and weights of another size, each name the file and the cause."""
    import json
    import shutil

    from models.checkpoints import WEIGHTS, CheckpointError, load_checkpoint

    embedded = Path(__file__).resolve().parents[1] / "models" / "embedded"

    def unsealed(folder):  # the files' digests left out: the checks behind them are under test
        meta = json.loads((folder / "samenoise.json").read_text())
        meta.pop("written_with")
        (folder / "samenoise.json").write_text(json.dumps(meta))
        return folder

    uvit = unsealed(shutil.copytree(embedded / "uvit-edm-m64", tmp_path / "uvit"))
    config = json.loads((uvit / "config.json").read_text())
    (uvit / "config.json").write_text(json.dumps({**config, "depthx": 3}))
    with pytest.raises(CheckpointError, match=r"uvit/config.json does not build its network \(TypeError: .*depthx"):
        load_checkpoint(uvit)
    unet = unsealed(shutil.copytree(embedded / "unet16-edm-m64", tmp_path / "unet"))
    shutil.copyfile(embedded / "unet32-edm-m64" / WEIGHTS, unet / WEIGHTS)  # UNet-32's weights, UNet-16's config
    with pytest.raises(CheckpointError, match=r"do not fit its config.json: size mismatch for conv_in.weight: .*"
                                              r"torch.Size\(\[32, 3, 3, 3\]\).*torch.Size\(\[16, 3, 3, 3\]\)"):
        load_checkpoint(unet)


def test_a_fingerprint_leaves_out_hidden_files_a_download_rewrites(tmp_path):
    """huggingface-cli download --local-dir keeps .cache/huggingface/ metadata that it rewrites with the time of each
    download, weights unchanged; a fingerprint over it made every set of the model afresh."""
    from fixtures.zoo import fingerprint_path

    ck = tmp_path / "ck"
    (ck / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (ck / "w.bin").write_bytes(b"A")
    (ck / ".cache" / "huggingface" / "download" / "w.bin.metadata").write_text("1700000000.0")
    before = fingerprint_path(ck)
    (ck / ".cache" / "huggingface" / "download" / "w.bin.metadata").write_text("1800000000.0")
    (ck / ".gitattributes").write_text("*.bin filter=lfs")
    assert fingerprint_path(ck) == before
    (ck / "w.bin").write_bytes(b"B")
    assert fingerprint_path(ck) != before


def test_a_checkpoint_rewritten_after_its_key_was_made_is_refused_when_its_network_is_built(tmp_path):
    """The store keys hash a suite checkpoint's files when the run begins and the network is built later: weights
    saved into the folder in between would be stored under the old weights' key."""
    import shutil

    from fixtures.zoo import CheckpointModel
    from models.checkpoints import WEIGHTS

    embedded = Path(__file__).resolve().parents[1] / "models" / "embedded"
    folder = shutil.copytree(embedded / "unet16-edm-m64", tmp_path / "cand")
    entry = ZooEntry(**{**read_zoo(embedded / "zoo.toml")["unet16-edm-m64"].__dict__, "source": str(folder)})
    m = CheckpointModel("cand", entry, torch.device("cpu"), "eager")
    for name in (WEIGHTS, "config.json", "samenoise.json"):  # a trainer saves a new checkpoint there
        shutil.copyfile(embedded / "unet16-edm-m4" / name, folder / name)
    with pytest.raises(ZooError, match=r"its checkpoint .*cand changed during the run \(files hashed [0-9a-f]{12} "
                                       r"when the run began, [0-9a-f]{12} now\)"):
        m.D
    assert CheckpointModel("cand", entry, torch.device("cpu"), "eager").D is not None  # a new run takes the new files


def test_a_sweep_models_key_names_its_weights_its_whole_config_and_the_wrapper_code(tmp_path, monkeypatch):
    """A slow-sweep model (`<family>-n<N>`) is sampled through `wrap_for` of models/training.py, which is not sampling
    code: its fingerprint holds the weights, the config with its defaults filled in and training.py's code, so an
    edit of the wrapper or of a default makes its sets again."""
    from dataclasses import asdict
    from types import SimpleNamespace

    import fixtures.zoo as fixtures_zoo
    from fixtures.zoo import ModelLoader
    from tests.test_training import tiny

    raw = {k: v for k, v in asdict(tiny(steps=2)).items() if v is not None and k != "dataset_size"}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "unet16-edm-m64.toml").write_text("")  # the family's recipe: `raw`, read below
    monkeypatch.setattr(fixtures_zoo, "EMBEDDED_CONFIGS", tmp_path / "configs")
    monkeypatch.setattr(fixtures_zoo, "tomllib", SimpleNamespace(loads=lambda text: dict(raw)))
    loader = lambda: ModelLoader({}, torch.device("cpu"), tmp_path / "cache", runner="eager")
    first = loader()("unet16-edm-n8")
    assert loader()("unet16-edm-n8").fingerprint == first.fingerprint  # trained once, found again
    import models.training

    real_digest, training_py = fixtures_zoo.source_digest, Path(models.training.__file__)
    monkeypatch.setattr(fixtures_zoo, "source_digest",  # training.py edited: only its digest changes
                        lambda paths: "0" * 64 if training_py in map(Path, paths) else real_digest(paths))
    assert loader()("unet16-edm-n8").fingerprint != first.fingerprint


def test_a_checkpoint_folder_named_by_path_gives_its_zoo_entry():
    """`--candidate PATH` builds the entry from samenoise.json: the kernel options (VP and sub-VP at t_max 0.8818),
    the VAEs' format and a one-step model's sampler were left out, so these checkpoints could not be checked by
    path. Every embedded checkpoint's entry from its folder equals its zoo entry in all that samples it."""
    from fixtures.zoo import EMBEDDED_ZOO, entry_from_checkpoint

    zoo = read_zoo(EMBEDDED_ZOO)
    fields = ("format", "family", "kernel", "kernel_options", "prediction", "time_input", "time_scale", "sampler",
              "nfe", "grid", "image_size", "conditional")
    for name, entry in zoo.items():
        derived = entry_from_checkpoint(Path(entry.source))
        assert {f: getattr(derived, f) for f in fields} == {f: getattr(entry, f) for f in fields}, name
    for name in ("unet32-vp-eps-l2048", "vae-conv-l2048"):
        assert load_denoiser(entry_from_checkpoint(Path(zoo[name].source))).kernel is not None


def test_a_progressively_distilled_folder_is_sampled_on_the_grid_it_was_distilled_on(tmp_path):
    """A student distilled on the log-SNR grid was sampled on EDM's, levels it was never trained for."""
    import shutil

    from fixtures.zoo import EMBEDDED_ZOO, entry_from_checkpoint

    folder = Path(shutil.copytree(read_zoo(EMBEDDED_ZOO)["unet16-edm-distill-l2048"].source, tmp_path / "student"))
    meta = json.loads((folder / "samenoise.json").read_text())
    meta["config"]["distill_grid"] = "logsnr"
    (folder / "samenoise.json").write_text(json.dumps(meta))
    derived = entry_from_checkpoint(folder)
    assert (derived.sampler, derived.nfe, derived.grid) == ("ddim", 4, "logsnr")


def test_a_checkpoint_save_writes_all_or_nothing_and_a_mixed_folder_is_refused(tmp_path):
    """A meta JSON cannot hold wrote config.json and the weights, then failed; a save cut short between the files
    left new weights under the previous checkpoint's samenoise.json, which loaded without a word."""
    from models.checkpoints import CheckpointError, WEIGHTS, load_checkpoint

    meta = {"kernel": "edm", "prediction": "edm", "time_input": "log-sigma", "time_scale": 1.0, "image_size": 8}
    with pytest.raises(ValueError, match=r"cannot be written as JSON .*nothing was written"):
        save_checkpoint(tmp_path / "a", build_unet(image_size=8, base_channels=8), {**meta, "path": Path("x")})
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    save_checkpoint(tmp_path / "b", build_unet(image_size=8, base_channels=8), meta)
    load_checkpoint(tmp_path / "b")
    torch.manual_seed(1)
    other = tmp_path / "c"
    save_checkpoint(other, build_unet(image_size=8, base_channels=8), meta)
    (tmp_path / "b" / WEIGHTS).write_bytes((other / WEIGHTS).read_bytes())  # as if cut short after the weights
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS} is not the file samenoise.json was written with"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"is a file; give the folder"):
        load_checkpoint(other / "config.json")


def test_a_config_that_does_not_build_or_has_unknown_keys_is_named(tmp_path):
    """A negative width (RuntimeError) or no blocks (IndexError) escaped unnamed; a typo (act_fun) was dropped by
    diffusers with a log line, and the network built with the default activation."""
    import json

    from models.checkpoints import CheckpointError, load_checkpoint

    meta = {"kernel": "edm", "prediction": "edm", "time_input": "log-sigma", "time_scale": 1.0, "image_size": 8}
    folder = save_checkpoint(tmp_path / "m", build_unet(image_size=8, base_channels=8), meta)
    config = json.loads((folder / "config.json").read_text())
    for edit, says in (({"act_fun": "gelu"}, r"keys UNet2DModel does not take: act_fun"),
                       ({"block_out_channels": [-8, 16]}, r"does not build its network \(RuntimeError"),
                       ({"down_block_types": [], "up_block_types": [], "block_out_channels": []},
                        r"does not build its network \(")):
        (folder / "config.json").write_text(json.dumps({**config, **edit}))
        meta_doc = json.loads((folder / "samenoise.json").read_text())
        meta_doc.pop("written_with", None)  # the edit alone is under test, not the digest
        (folder / "samenoise.json").write_text(json.dumps(meta_doc))
        with pytest.raises(CheckpointError, match=r"config.json.*" + says):
            load_checkpoint(folder)


def test_a_diffusers_scheduler_the_suite_does_not_read_is_refused_by_name(tmp_path):
    """Any scheduler config was read as DDPM betas: a ScoreSdeVeScheduler became vp-discrete at sigma_max 24777, an
    EDMEulerScheduler vp-discrete at 157; a folder without a scheduler config took DDPM's defaults."""
    from diffusers import DDPMScheduler, EDMEulerScheduler, ScoreSdeVeScheduler

    from models.zoo import kernel_from_scheduler

    for sched in (ScoreSdeVeScheduler(), EDMEulerScheduler()):
        with pytest.raises(ZooError, match=rf"scheduler '{type(sched).__name__}' is not supported; supported: "
                                           r"DDPMScheduler, DDIMScheduler"):
            kernel_from_scheduler({**sched.config, "_class_name": type(sched).__name__})
    with pytest.raises(ZooError, match=r"rescale_betas_zero_snr = true is not supported"):
        kernel_from_scheduler({**DDPMScheduler(rescale_betas_zero_snr=True).config, "_class_name": "DDPMScheduler"})
    build_unet(image_size=8, base_channels=8).save_pretrained(tmp_path / "m")
    entry = ZooEntry(name="x", source=str(tmp_path / "m"), format="diffusers", kernel="vp-discrete",
                     time_input="discrete", image_size=8)
    with pytest.raises(ZooError, match=r"has no scheduler_config.json"):
        load_denoiser(entry)
    ScoreSdeVeScheduler().save_pretrained(tmp_path / "m")
    with pytest.raises(ZooError, match=r"scheduler_config.json: scheduler 'ScoreSdeVeScheduler' is not supported"):
        load_denoiser(entry)
    DDPMScheduler().save_pretrained(tmp_path / "m")
    with pytest.raises(ZooError, match=r"time_input, time_scale is \('t', 1.0\) in the entry but \('discrete', 1.0\)"):
        load_denoiser(ZooEntry(**{**entry.__dict__, "time_input": "t"}))
    assert load_denoiser(entry).prediction == "eps"


def test_zoo_sources_and_names_are_read_against_the_zoo_file_not_the_working_folder(tmp_path, monkeypatch):
    """A bare relative hub-format source that was no folder beside the zoo file was found in the working folder;
    a file given as a source was "a folder that does not exist" (skipped); prompt_embeddings kept a literal '~';
    an unknown prediction or time input was only refused mid-run, without the valid names."""
    from models.zoo import check_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoos, cwd = tmp_path / "zoos", tmp_path / "cwd"
    zoos.mkdir()
    (cwd / "myddpm").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    entry = read_zoo(write_zoo(zoos, '[models.a]\nsource = "myddpm"\nformat = "diffusers"\n'))["a"]
    with pytest.raises(ZooError, match=r"'myddpm' is not available offline"):  # a hub id, not ./myddpm
        check_available(entry)
    (zoos / "ckpt.json").write_text("{}")
    for fmt in ("samenoise", "diffusers"):
        entry = read_zoo(write_zoo(zoos, f'[models.a]\nsource = "ckpt.json"\nformat = "{fmt}"\n'))["a"]
        with pytest.raises(ZooError, match=r"ckpt.json is a file; give the checkpoint folder"):
            check_available(entry)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    entry = read_zoo(write_zoo(zoos, '[models.a]\nsource = "x"\nformat = "diffusers-latent"\n'
                                     'prompt_embeddings = "~/emb.npy"\n'))["a"]
    assert entry.prompt_embeddings == str(tmp_path / "home" / "emb.npy")
    for key, value, says in (("prediction", "epsilon", "valid predictions: eps, x0, v"),
                             ("time_input", "logsigma", "valid time inputs: t, discrete, log-sigma")):
        with pytest.raises(ZooError, match=rf"entry 'a' has {key} '{value}'; {says}"):
            read_zoo(write_zoo(zoos, f'[models.a]\nsource = "x"\n{key} = "{value}"\n'))


@pytest.mark.parametrize("name", ["HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "DDPMScheduler"])
def test_a_scheduler_config_that_leaves_its_betas_out_is_read_with_its_classs_defaults(name):
    """Every class's missing beta keys were read as DDPM's 1e-4 / 0.02: a Heun config without them spanned sigma
    0.0100-157 where diffusers' own Heun scheduler spans 0.0292-25.1."""
    import diffusers

    from models.zoo import kernel_from_scheduler

    sched = getattr(diffusers, name)()
    _, kernel, _ = kernel_from_scheduler({"_class_name": name})  # the config as saved, but for its betas
    alphas = sched.alphas_cumprod.double()
    sigmas = ((1 - alphas) / alphas).sqrt()
    torch.testing.assert_close(torch.tensor([kernel.sigma_min, kernel.sigma_max], dtype=torch.float64),
                               torch.stack([sigmas[0], sigmas[-1]]), rtol=1e-4, atol=0)  # diffusers: float32 betas


def test_a_hub_ids_fingerprint_follows_the_snapshot_the_loader_reads_not_a_folder_of_that_name_here(tmp_path,
                                                                                                      monkeypatch):
    """A folder `owner/name` in the working folder was hashed for the hub id owner/name, while the loader read the
    hub's snapshot: a new snapshot kept the old key, and its samples were the old ones."""
    import huggingface_hub

    from fixtures.zoo import entry_fingerprint

    (tmp_path / "owner" / "name").mkdir(parents=True)
    (tmp_path / "owner" / "name" / "weights.bin").write_bytes(b"here")
    monkeypatch.chdir(tmp_path)
    snapshot = [tmp_path / "hub" / "snapshots" / "commit1"]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: snapshot[0])
    entry = ZooEntry(name="a", source="owner/name", format="diffusers")
    first = entry_fingerprint(entry)
    (tmp_path / "owner" / "name" / "weights.bin").write_bytes(b"edited")  # not what the loader reads
    assert entry_fingerprint(entry) == first
    snapshot[0] = tmp_path / "hub" / "snapshots" / "commit2"  # a new snapshot: new samples
    assert entry_fingerprint(entry) != first

"""Loaders for published checkpoints that only their authors' code can build: OpenAI's ADM (guided-diffusion and
improved-diffusion state dicts, Dhariwal & Nichol 2021; Nichol & Dhariwal 2021), Song et al.'s score-SDE
(score_sde_pytorch checkpoints: DDPM, DDPM++, DDPM++ deep, NCSN++ under VP, sub-VP and VE, Song et al. 2021) and Bao
et al.'s U-ViT (baofff/U-ViT state dicts, Bao et al. 2023).

Their code comes from a local checkout on PYTHONPATH (or named by an environment variable), as EDM pickles need
NVlabs' packages; nothing is downloaded. Every format here runs that code and unpickles the checkpoint (tensors only,
torch's weights_only): load them only from paths you name. Each loader maps the
checkpoint onto the denoiser contract (models/denoisers.py): a kernel, what the network predicts and what it takes as
its time input, and refuses, before any sampling, an entry that disagrees with what the checkpoint shows.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import math
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from models.kernels import VE, VP, Kernel, SubVP, VPDiscrete, make_kernel
from models.zoo import ENTRY_DEFAULTS, Unavailable, ZooEntry, ZooError, _mismatch

# --- ADM: guided-diffusion / improved-diffusion -------------------------------------------------------------------

ADM_CODE = {"guided-diffusion": ("guided_diffusion", "https://github.com/openai/guided-diffusion"),
            "improved-diffusion": ("improved_diffusion", "https://github.com/openai/improved-diffusion")}


def _checkout_package(name: str, folder: Path) -> None:
    """Register `folder` as the package `name` (its modules import from it, its own __init__ is not run). A package
    of that name from another folder (another checkout named since) goes with its modules: the code run must be the
    code the entry's fingerprint hashed (fixtures/zoo.py)."""
    held = sys.modules.get(name)
    if held is not None and list(getattr(held, "__path__", [])) == [str(folder)]:
        return
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    sys.modules[name] = importlib.util.module_from_spec(spec)


def _checkout_root(env: str, is_checkout) -> Optional[Path]:
    """A checkout of authors' code: the folder $env names (None if it is no checkout), else the first sys.path entry
    that is one."""
    named = os.environ.get(env)
    if named:
        return Path(named) if is_checkout(Path(named)) else None
    return next((Path(p or ".") for p in sys.path if is_checkout(Path(p or "."))), None)


def _no_checkout(entry: ZooEntry, env: str, what: str, help_: str) -> Unavailable:
    named = os.environ.get(env)
    where = f"{env}={named} is not a {what}" if named else f"no {what} found"
    return Unavailable(f"zoo entry {entry.name!r}: {where}. " + help_)


def _checkpoint_file(entry: ZooEntry) -> None:
    """The entry's source must be a checkpoint file: absent, the case is skipped saying so; a folder is an error."""
    path = Path(entry.source)
    if path.is_dir():
        raise ZooError(f"zoo entry {entry.name!r}: {entry.format} checkpoint {entry.source} is a folder; name the "
                       f"checkpoint file in it")
    if not path.is_file():
        raise Unavailable(f"zoo entry {entry.name!r}: {entry.format} checkpoint {entry.source} does not exist")


def _expect(entry: ZooEntry, always: dict[str, Any], stated: dict[str, Any]) -> None:
    """Refuse an entry whose fields in `always` differ from what the checkpoint is, or whose fields in `stated`
    differ where the entry states them (a value other than the field's default)."""
    for field_, want in always.items():
        if getattr(entry, field_) != want:
            raise _mismatch(entry, field_, getattr(entry, field_), want)
    for field_, want in stated.items():
        value = getattr(entry, field_)
        if value != ENTRY_DEFAULTS[field_] and value != want:
            raise _mismatch(entry, field_, value, want)


def _entry_flags(entry: ZooEntry, defaults: dict[str, Any], valid: list[str], what: str) -> dict[str, Any]:
    """The authors' defaults updated with the entry's `flags`. Each flag must be one of `valid` (`what` names them)
    and a TOML value of its default's type (an int where a float is; a number where the default is None, as U-ViT's
    qk_scale): a string "64" for an int flag, or 1 for a bool, would otherwise reach the authors' constructor, which
    builds another network or fails deep inside."""
    unknown = sorted(set(entry.flags) - set(valid))
    if unknown:
        raise ZooError(f"zoo entry {entry.name!r}: flags {unknown} are not {what}; valid flags: {', '.join(valid)}")
    for flag, value in entry.flags.items():
        kind = float if defaults[flag] is None else type(defaults[flag])
        if not (type(value) is kind or (kind is float and type(value) is int)):
            kind_text = {bool: "a bool", int: "an int", float: "a number", str: "a string"}.get(kind, kind.__name__)
            raise ZooError(f"zoo entry {entry.name!r}: flag {flag} is {value!r}; valid: {kind_text}, as its default "
                           f"{defaults[flag]!r}")
    return defaults | entry.flags


def adm_available(entry: ZooEntry) -> None:
    package, repo = ADM_CODE[entry.format]
    if importlib.util.find_spec(package) is None:
        raise Unavailable(f"zoo entry {entry.name!r}: {entry.format} checkpoints need OpenAI's `{package}` package "
                          f"importable: clone {repo} and add its root to PYTHONPATH")
    _checkpoint_file(entry)


def adm_betas(schedule: str, steps: int) -> torch.Tensor:
    """ADM's named beta schedules (Nichol & Dhariwal 2021, Sec. 3.2): 'linear' is DDPM's 1e-4..0.02 for 1000 steps,
    rescaled by 1000 / steps; 'cosine' is alpha_bar(t) = cos^2((t + 0.008) / 1.008 * pi / 2) (their Eq. 17), each beta
    capped at 0.999."""
    if schedule == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    if schedule == "cosine":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                            dtype=torch.float64)
    raise ZooError(f"ADM noise_schedule {schedule!r} is not supported; supported: linear, cosine")


class ADMNetwork(torch.nn.Module):
    """ADM's UNetModel called as net(x_t, n[, y]) with the integer timestep n. With `rescale_timesteps` the network
    was trained on n * 1000 / steps; with `learn_sigma` it outputs 2C channels, of which the first C are the eps (or
    x0) prediction and the rest the variance interpolation, which a deterministic sampler does not use."""

    def __init__(self, unet: torch.nn.Module, channels: int, learn_sigma: bool, time_factor: float,
                 config: dict[str, Any]):
        super().__init__()
        self.unet, self.channels, self.learn_sigma, self.time_factor = unet, channels, learn_sigma, time_factor
        self.config = config  # image size, channels and classes for the zoo's checks

    def forward(self, x, t, y=None):
        if self.time_factor != 1:
            t = t.float() * self.time_factor  # float32 keeps every step (bfloat16 would round 999 to 1000)
        out = self.unet(x, t, y)
        return out[:, :self.channels] if self.learn_sigma else out


def _read_state(entry: ZooEntry) -> dict[str, Any]:
    """A checkpoint of tensors, dicts, lists and numbers, read without running pickled code."""
    try:
        state = torch.load(entry.source, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ZooError(f"zoo entry {entry.name!r}: cannot read the {entry.format} checkpoint {entry.source} "
                       f"({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(state, dict):  # a bare tensor or list: no named weights to load
        raise ZooError(f"zoo entry {entry.name!r}: the {entry.format} checkpoint {entry.source} holds a "
                       f"{type(state).__name__}, not a dict of named weights")
    return state


def _load_weights(entry: ZooEntry, net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `state` into `net`, refusing missing or extra keys and shape mismatches by name."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatches
        raise ZooError(f"zoo entry {entry.name!r}: the checkpoint {entry.source} does not fit the network its "
                       f"entry describes: {str(e)[:600]}") from e
    if missing or unexpected:
        raise ZooError(f"zoo entry {entry.name!r}: the checkpoint {entry.source} does not fit the network its entry "
                       f"describes: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def _adm_shown(entry: ZooEntry, state: dict[str, torch.Tensor], channels: int) -> dict[str, Any]:
    """The flags a UNetModel state dict shows by itself."""
    for key in ("input_blocks.0.0.weight", "out.2.weight"):
        if key not in state:
            raise ZooError(f"zoo entry {entry.name!r}: {entry.source} is not an ADM UNetModel state dict (no key "
                           f"{key!r})")
    return {"learn_sigma": state["out.2.weight"].shape[0] == 2 * channels,
            "class_cond": "label_emb.weight" in state,
            "num_channels": state["input_blocks.0.0.weight"].shape[0]}


def load_adm(entry: ZooEntry):
    """An ADM state dict (e.g. guided-diffusion's 64x64_diffusion.pt) built with the entry's `flags`, the
    model_and_diffusion flags it was trained with; unset flags take the package's own defaults, and flags that only
    shape the authors' own sampler (timestep_respacing, use_kl, ...) are accepted and unused. The noise levels are
    the discrete chain of its noise_schedule and diffusion_steps; the network takes the integer timestep."""
    adm_available(entry)
    package = ADM_CODE[entry.format][0]
    script_util = importlib.import_module(f"{package}.script_util")
    defaults = script_util.model_and_diffusion_defaults()
    flags = _entry_flags(entry, defaults, sorted(defaults), f"{package} flags")
    steps = flags["diffusion_steps"]
    if type(steps) is not int or steps < 2:  # 0 divided by zero, 1000.5 was cut to 1000 beside a 1000 / 1000.5 rescale
        raise ZooError(f"zoo entry {entry.name!r}: flag diffusion_steps must be a whole number >= 2, got {steps!r}")
    if flags["image_size"] != entry.image_size:  # before building: a wrong size shows up as shape errors otherwise
        raise ZooError(f"zoo entry {entry.name!r}: flag image_size is {flags['image_size']!r}"
                       f"{'' if 'image_size' in entry.flags else ' (the package default)'} but the entry's image_size "
                       f"is {entry.image_size}")
    state = _read_state(entry)
    for flag, shown in _adm_shown(entry, state, entry.channels).items():
        if flags[flag] != shown:
            raise ZooError(f"zoo entry {entry.name!r}: flag {flag} is {flags[flag]!r} in the entry but the checkpoint "
                           f"{entry.source} was built with {flag} = {shown!r}")
    prediction = "x0" if flags.get("predict_xstart") else "eps"
    _expect(entry, {"kernel": "vp-discrete", "prediction": prediction, "time_input": "discrete"},
            {"time_scale": 1.0, "kernel_options": {}})
    params = inspect.signature(script_util.create_model).parameters
    args = {k: flags[k] for k in params if k in flags}
    if "use_fp16" in args:
        args["use_fp16"] = False  # the stored weights are float32; the suite casts the network to its own dtype
    unet = script_util.create_model(**args)
    _load_weights(entry, unet, state)
    classes = state["label_emb.weight"].shape[0] if "label_emb.weight" in state else None
    config = {"image_size": flags["image_size"], "in_channels": entry.channels, "num_classes": classes}
    net = ADMNetwork(unet, entry.channels, bool(flags["learn_sigma"]),
                     1000 / steps if flags.get("rescale_timesteps") else 1.0, config)
    return net, VPDiscrete(betas=adm_betas(flags["noise_schedule"], steps)), prediction, "discrete", 1.0


# --- score-SDE: score_sde_pytorch ---------------------------------------------------------------------------------

SCORE_SDE_ENV = "SAMENOISE_SCORE_SDE"
SCORE_SDE_HELP = ("score-SDE checkpoints need Song et al.'s code: clone "
                  f"https://github.com/yang-song/score_sde_pytorch, set {SCORE_SDE_ENV} to its folder (or put it on "
                  "PYTHONPATH), and pip install ml_collections (its configs use it)")
# score_sde_pytorch's network package is also called `models`; it is imported under this name instead
SCORE_SDE_PACKAGE = "score_sde_models"


def _is_score_sde(root: Path) -> bool:
    return (root / "sde_lib.py").is_file() and (root / "models" / "utils.py").is_file()


def _score_sde_root() -> Optional[Path]:
    """The score_sde_pytorch checkout: $SAMENOISE_SCORE_SDE, else the sys.path entry that holds sde_lib.py and
    models/utils.py. The first is put at the end of sys.path when a checkpoint loads (its configs import `configs`,
    its networks `sde_lib`), so that its top-level datasets.py, utils.py, ... never shadow installed packages."""
    return _checkout_root(SCORE_SDE_ENV, _is_score_sde)


def score_sde_available(entry: ZooEntry) -> Path:
    """The checkout, when it, the entry's config and its checkpoint are all here."""
    root = _score_sde_root()
    if root is None:
        raise _no_checkout(entry, SCORE_SDE_ENV, "score_sde_pytorch checkout", SCORE_SDE_HELP)
    if not entry.config:
        raise ZooError(f"zoo entry {entry.name!r}: a score-sde entry needs `config`, its checkpoint's config file "
                       f"relative to the score_sde_pytorch checkout (e.g. configs/vp/cifar10_ddpmpp_continuous.py)")
    if not (root / entry.config).is_file():
        raise Unavailable(f"zoo entry {entry.name!r}: config {entry.config} is not in the checkout {root}")
    _checkpoint_file(entry)
    return root


_score_sde_in_use: list[Path] = []  # the checkout whose top-level modules this process has put on sys.path


def _use_score_sde(root: Path) -> None:
    """Put the checkout at the end of sys.path (its configs import `configs`, its networks `sde_lib` and `op`). A
    checkout named before it in this process leaves sys.path, and every module imported from it (sde_lib, op,
    configs, the network package) leaves sys.modules: the code that runs is the code the fingerprint hashed."""
    for old in [p for p in _score_sde_in_use if p != root]:
        if str(old) in sys.path:
            sys.path.remove(str(old))
        for name, mod in list(sys.modules.items()):
            file = getattr(mod, "__file__", None)
            if file and Path(file).resolve().is_relative_to(old.resolve()):
                del sys.modules[name]
        _score_sde_in_use.remove(old)
    if root not in _score_sde_in_use:
        _score_sde_in_use.append(root)
    if str(root) not in sys.path:
        sys.path.append(str(root))


def score_sde_module(root: Path, module: str):
    """`module` of score_sde_pytorch's `models` package, imported as score_sde_models.<module>."""
    _use_score_sde(root)
    _checkout_package(SCORE_SDE_PACKAGE, root / "models")
    return importlib.import_module(f"{SCORE_SDE_PACKAGE}.{module}")


def _score_sde_config(entry: ZooEntry, root: Path):
    _use_score_sde(root)
    path = root / entry.config
    spec = importlib.util.spec_from_file_location("score_sde_config_" + re.sub(r"\W", "_", entry.config), path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        raise Unavailable(f"zoo entry {entry.name!r}: config {entry.config} needs `{e.name}`. " + SCORE_SDE_HELP) from e
    if not hasattr(module, "get_config"):
        raise ZooError(f"zoo entry {entry.name!r}: config {entry.config} has no get_config(); it is not a "
                       f"score_sde_pytorch config file")
    return module.get_config()


def _score_sde_network(entry: ZooEntry, root: Path, config) -> torch.nn.Module:
    """The network class its config names (model.name), registered by importing its module of models/."""
    name = config.model.name
    module = "ncsnv2" if name == "ncsn" or name.startswith("ncsnv2") else name  # ncsnv2.py holds NCSN and NCSNv2
    utils = score_sde_module(root, "utils")
    undefined = (f"zoo entry {entry.name!r}: config {entry.config} names model.name = {name!r}, which "
                 f"score_sde_pytorch's models/ does not define")
    try:
        score_sde_module(root, module)
    except ModuleNotFoundError as e:
        if e.name != f"{SCORE_SDE_PACKAGE}.{module}":
            raise
        raise ZooError(undefined) from e
    except (OSError, RuntimeError) as e:  # DDPM++ / NCSN++ (ncsnpp.py) build CUDA kernels (op/) at import
        raise Unavailable(f"zoo entry {entry.name!r}: importing score_sde's models/{module}.py failed "
                          f"({type(e).__name__}: {e}); its networks build CUDA kernels at import: run it where "
                          f"torch has CUDA, with the CUDA toolkit and ninja (the nightly GPU job)") from e
    try:
        return utils.get_model(name)(config)
    except KeyError as e:
        raise ZooError(undefined) from e


def score_sde_kernel(config) -> tuple[str, Kernel, str, str, float]:
    """(kernel name, kernel, prediction, time input, time scale) of a score-SDE config, in the suite's [-1, 1] data.

    As score_sde_pytorch's get_score_fn (models/utils.py) reads its networks: a VP or sub-VP network outputs eps
    (score = -output / std) and takes 999 t (continuous) or the fractional step index t (N - 1) of DDPM's chain
    (discrete); a VE network outputs the score and takes sigma (continuous) or NCSN's index round((1 - t)(N - 1)),
    0 at sigma_max (discrete). A VE model trained on [0, 1] data (data.centered = False) is the same model in [-1, 1]
    with every sigma doubled (ScoreSDENetwork maps the data)."""
    sde, continuous, m = config.training.sde.lower(), bool(config.training.continuous), config.model
    n = int(m.num_scales)
    if sde in ("vpsde", "subvpsde") and not config.data.centered:
        raise ZooError(f"score-SDE config: data.centered = False under {sde} is not supported (the suite's data lie in "
                       f"[-1, 1]; VP and sub-VP noise does not rescale with the data)")
    if sde == "vpsde" and continuous:
        return "vp", VP(m.beta_min, m.beta_max), "eps", "t", 999.0
    if sde == "vpsde":  # the VP SDE's discretisation: DDPM's betas beta_min / N .. beta_max / N
        return "vp-discrete", VPDiscrete(beta_start=m.beta_min / n, beta_end=m.beta_max / n,
                                         num_train_timesteps=n), "eps", "t", 1.0
    if sde == "subvpsde":  # always 999 t, continuous or not (get_score_fn)
        return "subvp", SubVP(m.beta_min, m.beta_max), "eps", "t", 999.0
    if sde == "vesde":
        scale = 1.0 if config.data.centered else 2.0
        kernel = VE(scale * m.sigma_min, scale * m.sigma_max)
        return ("ve", kernel, "score", "sigma", 1 / scale) if continuous else \
            ("ve", kernel, "score", "reversed-discrete", float(n - 1))
    raise ZooError(f"score-SDE config: training.sde {config.training.sde!r} is not supported; supported: vpsde, "
                   f"subvpsde, vesde")


class ScoreSDENetwork(torch.nn.Module):
    """A score_sde_pytorch network called as net(x_t, label) on the suite's [-1, 1] data. A network trained on [0, 1]
    data (data.centered = False, VE only) sees (x_t + 1) / 2, and its score, a gradient in [0, 1] coordinates, is
    halved into [-1, 1] coordinates."""

    def __init__(self, model: torch.nn.Module, centered: bool, config: dict[str, Any]):
        super().__init__()
        self.model, self.centered, self.config = model, centered, config

    def forward(self, x, label):
        if self.centered:
            return self.model(x, label)
        return self.model((x + 1) / 2, label) / 2


def _ema_weights(entry: ZooEntry, net: torch.nn.Module, ema: dict[str, Any]) -> None:
    """Copy the checkpoint's EMA weights (its ExponentialMovingAverage's shadow_params, one per trainable parameter
    in order) into `net`, as score_sde_pytorch samples with them."""
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    params = [p for p in net.parameters() if p.requires_grad]
    if shadow is None or len(shadow) != len(params):
        raise ZooError(f"zoo entry {entry.name!r}: the checkpoint's EMA holds "
                       f"{'no shadow_params' if shadow is None else f'{len(shadow)} tensors'}, the network has "
                       f"{len(params)} trainable parameters")
    with torch.no_grad():
        for i, (s, p) in enumerate(zip(shadow, params)):
            if s.shape != p.shape:
                raise ZooError(f"zoo entry {entry.name!r}: EMA tensor {i} has shape {tuple(s.shape)}, its parameter "
                               f"{tuple(p.shape)}")
            p.copy_(s)


def load_score_sde(entry: ZooEntry):
    """A score_sde_pytorch checkpoint ({'model', 'ema', 'optimizer', 'step'}, as its save_checkpoint writes) with its
    config file: the network its config names, with the EMA weights, mapped by `score_sde_kernel`."""
    root = score_sde_available(entry)
    config = _score_sde_config(entry, root)
    name, kernel, prediction, time_input, time_scale = score_sde_kernel(config)
    if entry.kernel != name:
        raise _mismatch(entry, "kernel", entry.kernel, f"{name} (training.sde = {config.training.sde}, continuous = "
                                                       f"{bool(config.training.continuous)})")
    _expect(entry, {"prediction": prediction}, {"time_input": time_input, "time_scale": time_scale})
    if entry.kernel_options:  # stated options must give the checkpoint's own noise levels
        try:
            stated = make_kernel(name, **entry.kernel_options)
        except (TypeError, ValueError) as e:
            raise ZooError(f"zoo entry {entry.name!r}: kernel_options {entry.kernel_options} ({e})") from e
        doubled = "" if config.data.centered else ", twice the config's: its data lie in [0, 1], the suite's in [-1, 1]"
        for end in ("sigma_min", "sigma_max"):
            if not math.isclose(getattr(stated, end), getattr(kernel, end), rel_tol=1e-9):
                raise _mismatch(entry, f"the kernel's {end} (from kernel_options{doubled})", getattr(stated, end),
                                getattr(kernel, end))
    model = _score_sde_network(entry, root, config)
    state = _read_state(entry)
    if not {"model", "ema"} <= set(state):
        raise ZooError(f"zoo entry {entry.name!r}: {entry.source} is not a score_sde_pytorch checkpoint (keys "
                       f"{sorted(state)[:6]}; expected model, ema, optimizer, step)")
    _load_weights(entry, model, {k.removeprefix("module."): v for k, v in state["model"].items()})
    _ema_weights(entry, model, state["ema"])
    data = {"image_size": config.data.image_size, "in_channels": config.data.num_channels}
    return ScoreSDENetwork(model, bool(config.data.centered), data), kernel, prediction, time_input, time_scale


# --- U-ViT: baofff/U-ViT ------------------------------------------------------------------------------------------

UVIT_ENV = "SAMENOISE_UVIT"
UVIT_HELP = ("U-ViT checkpoints need Bao et al.'s code: clone https://github.com/baofff/U-ViT, set "
             f"{UVIT_ENV} to its folder (or put it on PYTHONPATH), and pip install einops (its libs/uvit.py imports it)")
# the checkout's libs/ package is imported under this name: `libs` is too common a top-level name to claim
UVIT_PACKAGE = "uvit_libs"
# Bao et al.'s continuous VP SDE (their sde.py: VPSDE() at its defaults, beta(t) linear on t in [0, 1]); the network
# is called with 999 t and predicts eps (their ScoreModel.noise_pred), on data in [-1, 1]
UVIT_BETA = (0.1, 20.0)
UVIT_TIME_SCALE = 999.0


def _is_uvit(root: Path) -> bool:
    return (root / "libs" / "uvit.py").is_file()


def _uvit_root() -> Optional[Path]:
    """The U-ViT checkout: $SAMENOISE_UVIT, else the sys.path entry that holds libs/uvit.py."""
    return _checkout_root(UVIT_ENV, _is_uvit)


def uvit_available(entry: ZooEntry) -> Path:
    """The checkout, when it and the entry's checkpoint are here."""
    root = _uvit_root()
    if root is None:
        raise _no_checkout(entry, UVIT_ENV, "U-ViT checkout (a folder with libs/uvit.py)", UVIT_HELP)
    _checkpoint_file(entry)
    return root


def uvit_module(entry: ZooEntry, root: Path):
    """The checkout's libs/uvit.py, imported as uvit_libs.uvit (its relative imports resolve inside libs/)."""
    _checkout_package(UVIT_PACKAGE, root / "libs")
    try:
        return importlib.import_module(f"{UVIT_PACKAGE}.uvit")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(UVIT_PACKAGE):
            raise
        raise Unavailable(f"zoo entry {entry.name!r}: U-ViT's libs/uvit.py needs `{e.name}`. " + UVIT_HELP) from e


class UViTNetwork(torch.nn.Module):
    """Bao et al.'s UViT called as net(x_t, 999 t): their forward(x, timesteps) outputs eps for the whole image."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any]):
        super().__init__()
        self.model, self.config = model, config  # image size, channels and classes for the zoo's checks

    def forward(self, x, t):
        return self.model(x, t)


def load_uvit(entry: ZooEntry):
    """A U-ViT state dict (e.g. the README's cifar10_uvit_small.pth, loaded by their eval.py into UViT) built with
    the entry's `flags`, the UViT constructor's arguments its config gives (configs/cifar10_uvit_small.py: img_size 32,
    patch_size 2, embed_dim 512, depth 12, num_heads 8, mlp_ratio 4, qkv_bias false, mlp_time_embed false); unset
    ones take the class's own defaults (ImageNet's 224-px U-ViT). Unconditional only: a class-conditional U-ViT adds
    a null class for guidance, which no case here samples."""
    root = uvit_available(entry)
    module = uvit_module(entry, root)
    params = inspect.signature(module.UViT).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    settable = [k for k, v in defaults.items() if v is None or type(v) in (bool, int, float)]  # not norm_layer
    flags = _entry_flags(entry, defaults, settable, "arguments of U-ViT's UViT that an entry can set")
    for flag, field_ in (("img_size", "image_size"), ("in_chans", "channels")):
        if flags.get(flag) != getattr(entry, field_):  # before building: a wrong size shows up as shape errors
            raise ZooError(f"zoo entry {entry.name!r}: flag {flag} is {flags.get(flag)!r}"
                           f"{'' if flag in entry.flags else ' (the class default)'} but the entry's {field_} is "
                           f"{getattr(entry, field_)}")
    if flags.get("num_classes", -1) not in (-1, 0):
        raise ZooError(f"zoo entry {entry.name!r}: flag num_classes is {flags['num_classes']!r}; only unconditional "
                       f"U-ViTs (num_classes -1) are supported")
    _expect(entry, {"kernel": "vp", "prediction": "eps", "time_input": "t"}, {"time_scale": UVIT_TIME_SCALE})
    try:
        kernel = make_kernel("vp", **entry.kernel_options)
    except (TypeError, ValueError) as e:
        raise ZooError(f"zoo entry {entry.name!r}: kernel_options {entry.kernel_options} ({e})") from e
    beta = (kernel.beta.beta_min, kernel.beta.beta_min + kernel.beta.beta_d)
    if not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(beta, UVIT_BETA)):
        raise _mismatch(entry, "the kernel's (beta_min, beta_max) (from kernel_options)", beta,
                        f"{UVIT_BETA} (U-ViT's sde.VPSDE)")
    state = _read_state(entry)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "label_emb.weight" in state:
        raise ZooError(f"zoo entry {entry.name!r}: {entry.source} is a class-conditional U-ViT (it has label_emb); "
                       f"only unconditional U-ViTs are supported")
    model = module.UViT(**flags)
    _load_weights(entry, model, state)
    config = {"image_size": flags["img_size"], "in_channels": flags["in_chans"], "num_classes": None}
    return UViTNetwork(model, config), kernel, "eps", "t", UVIT_TIME_SCALE

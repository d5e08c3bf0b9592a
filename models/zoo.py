"""The model registry: named zoo entries in TOML, and the loaders that turn an entry into a denoiser.

An entry names its source (a local folder, a hub id, or an EDM pickle), its format, family, kernel,
prediction type, default sampler and NFE, image size, dataset and whether it is conditional. Entry
names carry the tags users select with `-k` (`unet-vp-eps-m64` matches `-k vp`). Every mismatch
between an entry and its checkpoint is refused at load time, before any sampling.
"""
from __future__ import annotations

import importlib.util
import json
import pickle
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from models.checkpoints import load_checkpoint
from models.denoisers import NetworkDenoiser
from models.kernels import KERNELS, VPDiscrete, make_kernel

FORMATS = ("samenoise", "diffusers", "edm-pickle")


class ZooError(ValueError):
    """A zoo file or entry that cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    source: str
    format: str = "samenoise"
    family: str = "unet"
    kernel: str = "vp"
    prediction: str = "eps"
    time_input: str = "t"
    time_scale: float = 1.0
    sampler: str = "dpm3"
    nfe: int = 20
    grid: str = "edm"
    image_size: int = 32
    channels: int = 3
    dataset: str = ""
    conditional: bool = False
    num_classes: Optional[int] = None
    description: str = ""
    kernel_options: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.name.split("-"))

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


ENTRY_KEYS = tuple(f.name for f in fields(ZooEntry) if f.name != "name")


def read_zoo(path: str | Path, base: Optional[Path] = None) -> dict[str, ZooEntry]:
    """Entries of a TOML file `[models.<name>]`; a relative local source is relative to the file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ZooError(f"{path}: cannot read the zoo file ({e})") from e
    unknown_top = set(doc) - {"models"}
    if unknown_top:
        raise ZooError(f"{path}: unknown top-level keys {sorted(unknown_top)}; a zoo file holds [models.<name>] tables")
    entries = {}
    for name, table in doc.get("models", {}).items():
        unknown = set(table) - set(ENTRY_KEYS)
        if unknown:
            raise ZooError(f"{path}: entry {name!r} has unknown keys {sorted(unknown)}; valid keys: {', '.join(ENTRY_KEYS)}")
        if "source" not in table:
            raise ZooError(f"{path}: entry {name!r} has no source")
        entry = ZooEntry(name=name, **table)
        if entry.format not in FORMATS:
            raise ZooError(f"{path}: entry {name!r} has format {entry.format!r}; valid formats: {', '.join(FORMATS)}")
        if entry.kernel not in KERNELS:
            raise ZooError(f"{path}: entry {name!r} has kernel {entry.kernel!r}; valid kernels: {', '.join(sorted(KERNELS))}")
        local = (base or path.parent) / entry.source
        if entry.format != "diffusers" or local.exists():
            entry = ZooEntry(**{**entry.__dict__, "source": str(local)})
        entries[name] = entry
    return entries


def load_denoiser(entry: ZooEntry, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                  ) -> NetworkDenoiser:
    """The entry's network under the denoiser contract, checked against the entry."""
    loader = {"samenoise": _load_samenoise, "diffusers": _load_diffusers, "edm-pickle": _load_edm_pickle}[entry.format]
    net, kernel, prediction, time_input, time_scale = loader(entry)
    classes = _check_network(entry, net)
    return NetworkDenoiser(net.to(device=device, dtype=dtype).eval(), kernel, prediction, time_input=time_input,
                           time_scale=time_scale, sample_shape=entry.sample_shape, num_classes=classes)


def _mismatch(entry: ZooEntry, what: str, entry_value, checkpoint_value) -> ZooError:
    return ZooError(f"zoo entry {entry.name!r}: {what} is {entry_value!r} in the entry but {checkpoint_value!r} in "
                    f"its checkpoint {entry.source}")


def _load_samenoise(entry: ZooEntry):
    if not Path(entry.source).is_dir():
        raise ZooError(f"zoo entry {entry.name!r}: checkpoint folder {entry.source} does not exist")
    try:
        net, meta = load_checkpoint(entry.source)
    except FileNotFoundError as e:
        raise ZooError(f"zoo entry {entry.name!r}: {e}") from e
    for key in ("kernel", "prediction", "time_input", "time_scale", "image_size"):
        if key in meta and meta[key] != getattr(entry, key):
            raise _mismatch(entry, key, getattr(entry, key), meta[key])
    return net, make_kernel(entry.kernel, **entry.kernel_options), entry.prediction, entry.time_input, entry.time_scale


DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


CONSISTENCY_SCHEDULER = "CMStochasticIterativeScheduler"


def kernel_from_scheduler(config: dict[str, Any]) -> tuple[str, Any, str]:
    """A scheduler config mapped to (kernel name, kernel, prediction type): DDPM/DDIM-style configs give the
    discrete VP chain; CMStochasticIterativeScheduler gives the EDM kernel with consistency scalings."""
    if config.get("_class_name") == CONSISTENCY_SCHEDULER:
        kernel = make_kernel("edm", sigma_min=config.get("sigma_min", 0.002), sigma_max=config.get("sigma_max", 80.0))
        return "edm", kernel, "cm"
    schedule = config.get("beta_schedule", "linear")
    if schedule != "linear" or config.get("trained_betas"):
        raise ZooError(f"scheduler beta_schedule {schedule!r} is not supported; supported: linear")
    kernel = VPDiscrete(beta_start=config.get("beta_start", 1e-4), beta_end=config.get("beta_end", 0.02),
                        num_train_timesteps=config.get("num_train_timesteps", 1000))
    prediction = DIFFUSERS_PREDICTIONS.get(config.get("prediction_type", "epsilon"))
    if prediction is None:
        raise ZooError(f"scheduler prediction_type {config.get('prediction_type')!r}; supported: "
                       f"{', '.join(DIFFUSERS_PREDICTIONS)}")
    return "vp-discrete", kernel, prediction


def _load_diffusers(entry: ZooEntry):
    """A diffusers UNet2DModel with its DDPM/DDIM scheduler config: a local folder or a hub id (read from the
    local hub cache), laid out as a pipeline (unet/, scheduler/) or as a bare model (both configs at the root)."""
    from diffusers import UNet2DModel

    try:
        local = Path(entry.source)
        if not local.is_dir():
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(entry.source))
        net = UNet2DModel.from_pretrained(str(local), subfolder="unet" if (local / "unet").is_dir() else None)
    except (OSError, ValueError) as e:
        raise ZooError(f"zoo entry {entry.name!r}: checkpoint {entry.source!r} is not available offline ({type(e).__name__}). "
                       f"Download it once where the hub is reachable (huggingface-cli download {entry.source} "
                       f"--local-dir DIR) and set the entry's source to DIR.") from e
    sched_path = next((p for p in (local / "scheduler" / "scheduler_config.json", local / "scheduler_config.json")
                       if p.is_file()), None)
    sched = json.loads(sched_path.read_text()) if sched_path else {}
    name, kernel, prediction = kernel_from_scheduler(sched)
    if entry.kernel != name:
        raise _mismatch(entry, "kernel", entry.kernel, f"{name} (scheduler {sched.get('_class_name', '?')})")
    if entry.prediction != prediction:
        raise _mismatch(entry, "prediction", entry.prediction, prediction)
    if prediction == "cm":  # diffusers' sigma_to_t: t = 1000 * 0.25 * ln(sigma)
        if sched.get("sigma_data", 0.5) != 0.5:
            raise ZooError(f"zoo entry {entry.name!r}: consistency scheduler sigma_data {sched['sigma_data']} is not "
                           f"supported; supported: 0.5")
        return net, kernel, prediction, "log-sigma", 1000.0
    return net, kernel, prediction, "discrete", 1.0


EDM_HELP = ("EDM pickles need NVlabs' `dnnlib` and `torch_utils` packages importable: clone "
            "https://github.com/NVlabs/edm and add its root to PYTHONPATH (e.g. PYTHONPATH=/path/to/edm pytest ...)")


def _load_edm_pickle(entry: ZooEntry):
    """EDM's pickles hold {'ema': EDMPrecond}, whose forward(x, sigma, class_labels) returns D directly."""
    missing = [m for m in ("dnnlib", "torch_utils") if importlib.util.find_spec(m) is None]
    if missing:
        raise ZooError(f"zoo entry {entry.name!r}: cannot unpickle {entry.source}: {', '.join(missing)} not importable. "
                       + EDM_HELP)
    if not Path(entry.source).is_file():
        raise ZooError(f"zoo entry {entry.name!r}: EDM pickle {entry.source} does not exist")
    with open(entry.source, "rb") as f:
        net = pickle.load(f)["ema"]
    if entry.kernel != "edm" or entry.prediction != "x0" or entry.time_input != "sigma":
        raise ZooError(f"zoo entry {entry.name!r}: EDM pickles are denoisers in sigma-space; the entry must say "
                       f"kernel = 'edm', prediction = 'x0', time_input = 'sigma'")
    return net, make_kernel("edm", **entry.kernel_options), "x0", "sigma", 1.0


def _check_network(entry: ZooEntry, net: torch.nn.Module) -> Optional[int]:
    """Refuse a network whose size, channels or conditioning differ from the entry; return its class count."""
    cfg = dict(getattr(net, "config", {}) or {})
    # diffusers' config keys, U-ViT's config keys, or EDMPrecond's attributes
    size = cfg.get("sample_size", cfg.get("image_size", getattr(net, "img_resolution", None)))
    channels = cfg.get("in_channels", cfg.get("channels", getattr(net, "img_channels", None)))
    if size is not None and int(size) != entry.image_size:
        raise _mismatch(entry, "image_size", entry.image_size, size)
    if channels is not None and int(channels) != entry.channels:
        raise _mismatch(entry, "channels", entry.channels, channels)
    classes = cfg.get("num_class_embeds", cfg.get("num_classes", getattr(net, "label_dim", None) or None))
    if entry.conditional and not classes:
        raise ZooError(f"zoo entry {entry.name!r} is marked conditional but its network takes no label")
    if not entry.conditional and classes:
        raise ZooError(f"zoo entry {entry.name!r} is marked unconditional but its network takes {classes} classes")
    if entry.conditional and entry.num_classes not in (None, classes):
        raise _mismatch(entry, "num_classes", entry.num_classes, classes)
    return int(classes) if classes else None

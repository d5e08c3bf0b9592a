"""The model registry: named zoo entries in TOML, and the loaders that turn an entry into a denoiser.

An entry names its source (a local folder, a hub id, or an EDM pickle), its format, family, kernel,
prediction type, default sampler and NFE, image size, dataset and whether it is conditional. Entry
names carry the tags users select with `-k` (`unet-vp-eps-m64` matches `-k vp`). Every mismatch
between an entry and its checkpoint is refused at load time, before any sampling.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import pickle
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from models.checkpoints import CheckpointError, cast, load_checkpoint
from models.denoisers import PREDICTIONS, TIME_INPUTS, NetworkDenoiser
from models.grids import GRIDS
from models.kernels import KERNELS, VPDiscrete, make_kernel
from models.registry import Registry
from models.samplers import SAMPLERS

class ZooError(ValueError):
    """A zoo file or entry that cannot be used; the message names the entry and the problem."""


class Unavailable(ZooError):
    """An entry whose checkpoint or code is not on this machine; the message says what to provide."""


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
    # the most rows per network call for this model (the run's --micro-batch, 16 on a CPU and 256 on a GPU, capped by
    # it): for networks whose activations at the run's micro-batch may not fit on the device (Stable Diffusion)
    micro_batch: Optional[int] = None
    # latent text-to-image models (format "diffusers-latent"): image_size and channels describe the latents
    prompt: str = ""  # encoded with the checkpoint's text_encoder/ and tokenizer/ (needs `transformers`)
    prompt_embeddings: str = ""  # or a .npy/.pt file of precomputed (1, tokens, dim) text embeddings
    # checkpoints built by their authors' code (models/published.py)
    # ADM: the model_and_diffusion flags it was trained with; U-ViT: the arguments of its UViT class
    flags: dict[str, Any] = field(default_factory=dict)
    config: str = ""  # score-SDE: its config file, relative to the score_sde_pytorch checkout

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.name.split("-"))

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


ENTRY_KEYS = tuple(f.name for f in fields(ZooEntry) if f.name != "name")
ENTRY_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ZooEntry)
                  if f.default is not MISSING or f.default_factory is not MISSING}
# keys that only these formats read (models/published.py)
FORMAT_KEYS = {"flags": ("guided-diffusion", "improved-diffusion", "uvit"), "config": ("score-sde",),
               "prompt": ("diffusers-latent",), "prompt_embeddings": ("diffusers-latent",)}


# What each key of an entry holds (micro_batch has its own check below); every other key is text.
_KINDS = {"time_scale": "number", "nfe": "count", "image_size": "count", "channels": "count", "num_classes": "count",
          "conditional": "bool", "kernel_options": "table", "flags": "table", "micro_batch": "any"}
_KIND_TEXT = {"text": "a string", "number": "a positive number", "count": "a whole number, at least 1",
              "bool": "true or false", "table": "a table"}


def _fits(kind: str, value: Any) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0
    return {"text": isinstance(value, str), "count": type(value) is int and value >= 1,
            "bool": isinstance(value, bool), "table": isinstance(value, dict), "any": True}[kind]


def _check_kernel_options(path: Path, name: str, kernel: str, options: dict[str, Any]) -> None:
    """The entry's kernel_options must build its kernel: an unknown or ill-typed option is named at start-up."""
    try:
        make_kernel(kernel, **options)
    except (TypeError, ValueError) as e:
        valid = [p for p in inspect.signature(KERNELS[kernel]).parameters if p != "self"]
        raise ZooError(f"{path}: entry {name!r} has kernel_options {options!r}, which the {kernel!r} kernel refuses "
                       f"({e}); its options: {', '.join(valid) or 'none'}") from e


def read_zoo(path: str | Path, base: Optional[Path] = None) -> dict[str, ZooEntry]:
    """Entries of a TOML file `[models.<name>]`; a relative local source is relative to the file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: TOML syntax, or bytes that are not UTF-8 text
        raise ZooError(f"{path}: cannot read the zoo file ({type(e).__name__}: {e})") from e
    unknown_top = set(doc) - {"models"}
    if unknown_top:
        raise ZooError(f"{path}: unknown top-level keys {sorted(unknown_top)}; a zoo file holds [models.<name>] tables")
    models = doc.get("models", {})
    if not isinstance(models, dict):
        raise ZooError(f"{path}: `models` is {models!r}; a zoo file holds [models.<name>] tables")
    entries = {}
    for name, table in models.items():
        if not isinstance(table, dict):
            raise ZooError(f"{path}: entry {name!r} is {table!r}; an entry is a table, [models.{name}]")
        unknown = set(table) - set(ENTRY_KEYS)
        if unknown:
            raise ZooError(f"{path}: entry {name!r} has unknown keys {sorted(unknown)}; "
                           f"valid keys: {', '.join(ENTRY_KEYS)}")
        if "source" not in table:
            raise ZooError(f"{path}: entry {name!r} has no source")
        for key, value in table.items():
            kind = _KINDS.get(key, "text")
            if not _fits(kind, value):
                raise ZooError(f"{path}: entry {name!r} has {key} = {value!r}; valid: {_KIND_TEXT[kind]}")
        entry = ZooEntry(name=name, **table)
        if entry.format not in FORMATS:
            raise ZooError(f"{path}: entry {name!r} has format {entry.format!r}; valid formats: "
                           f"{', '.join(FORMATS)}")
        for key, formats in FORMAT_KEYS.items():
            if key in table and entry.format not in formats:
                raise ZooError(f"{path}: entry {name!r} has `{key}`, which only formats {', '.join(formats)} read; "
                               f"its format is {entry.format!r}")
        if "num_classes" in table and not entry.conditional:  # nothing compares it: a class count of an entry
            # marked unconditional is a mistake in one of the two keys
            raise ZooError(f"{path}: entry {name!r} has num_classes {entry.num_classes} but is not conditional; set "
                           f"conditional = true, or leave num_classes out")
        for key, registry in (("grid", GRIDS), ("sampler", SAMPLERS)):
            if getattr(entry, key) not in registry:
                raise ZooError(f"{path}: entry {name!r} has {key} {getattr(entry, key)!r}; valid {key}s: "
                               f"{', '.join(registry)}")
        if entry.micro_batch is not None and (type(entry.micro_batch) is not int or entry.micro_batch < 1):
            raise ZooError(f"{path}: entry {name!r} has micro_batch {entry.micro_batch!r}; valid: a whole number of "
                           f"rows, at least 1 (leave it out for the run's --micro-batch)")
        valid_predictions = ("generator",) if entry.format == "samenoise-generator" else tuple(PREDICTIONS)
        if entry.prediction not in valid_predictions:
            raise ZooError(f"{path}: entry {name!r} has prediction {entry.prediction!r}; valid predictions: "
                           f"{', '.join(valid_predictions)}")
        if entry.time_input not in TIME_INPUTS:
            raise ZooError(f"{path}: entry {name!r} has time_input {entry.time_input!r}; valid time inputs: "
                           f"{', '.join(TIME_INPUTS)}")
        if entry.kernel not in KERNELS:
            raise ZooError(f"{path}: entry {name!r} has kernel {entry.kernel!r}; "
                           f"valid kernels: {', '.join(sorted(KERNELS))}")
        _check_kernel_options(path, name, entry.kernel, entry.kernel_options)
        if entry.format == "samenoise-generator" and (entry.sampler, entry.nfe) != ("consistency", 1):
            raise ZooError(f"{path}: entry {name!r} is a generator sampled at {entry.sampler}@{entry.nfe}; a generator "
                           f"decodes its noise in one step: valid sampler consistency, nfe 1")
        try:
            SAMPLERS[entry.sampler].steps(entry.sampler, entry.nfe)
        except ValueError as e:
            raise ZooError(f"{path}: entry {name!r}: {e}") from e
        local = (base or path.parent) / Path(entry.source).expanduser()
        if not FORMATS[entry.format].hub or local.exists() or _path_like(entry.source):  # a hub id stays as it is
            entry = ZooEntry(**{**entry.__dict__, "source": str(local)})
        if entry.prompt and entry.prompt_embeddings:  # the embeddings win when loading: the prompt would mislead
            raise ZooError(f"{path}: entry {name!r} has both prompt and prompt_embeddings; give one (the embeddings "
                           f"are sampled when both are set)")
        if entry.prompt_embeddings:
            prompts = str((base or path.parent) / Path(entry.prompt_embeddings).expanduser())
            entry = ZooEntry(**{**entry.__dict__, "prompt_embeddings": prompts})
        entries[name] = entry
    return entries


def load_denoiser(entry: ZooEntry, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                  ) -> NetworkDenoiser:
    """The entry's network under the denoiser contract, checked against the entry."""
    return FORMATS[entry.format].load(entry, device, dtype)


def _network(load_network: Callable[[ZooEntry], tuple]) -> Callable[..., NetworkDenoiser]:
    """A format's loader from a function returning (network, kernel, prediction, time input, time scale[, options of
    the wrap, e.g. sigma_data])."""

    def load(entry: ZooEntry, device, dtype) -> NetworkDenoiser:
        net, kernel, prediction, time_input, time_scale, *rest = load_network(entry)
        wrap_options = rest[0] if rest else {}
        classes = _check_network(entry, net)
        return NetworkDenoiser(cast(net, device, dtype).eval(), kernel, prediction, time_input=time_input,
                               time_scale=time_scale, sample_shape=entry.sample_shape, num_classes=classes,
                               **wrap_options)

    return load


def _mismatch(entry: ZooEntry, what: str, entry_value, checkpoint_value) -> ZooError:
    return ZooError(f"zoo entry {entry.name!r}: {what} is {entry_value!r} in the entry but {checkpoint_value!r} in "
                    f"its checkpoint {entry.source}")


def check_available(entry: ZooEntry) -> None:
    """Raise Unavailable, saying what to provide, when the entry's checkpoint or the code it needs is not here.
    Cheap: nothing is loaded (hub ids are looked up in the local cache only)."""
    FORMATS[entry.format].available(entry)


def _folder_available(entry: ZooEntry) -> None:
    """The suite's checkpoint folder with the three files `load_checkpoint` reads (checked here, before any case
    runs, so that a named model with a file missing stops the run instead of being skipped later)."""
    from models.checkpoints import FILES

    folder = Path(entry.source)
    if folder.is_file():  # a mistake in the entry, not a checkpoint still to fetch: it stops the run
        raise ZooError(f"zoo entry {entry.name!r}: source {entry.source} is a file; give the checkpoint folder that "
                       f"holds it")
    if not folder.is_dir():
        raise Unavailable(f"zoo entry {entry.name!r}: checkpoint folder {entry.source} does not exist")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise Unavailable(f"zoo entry {entry.name!r}: checkpoint folder {entry.source} has no {', '.join(missing)}")


def _edm_pickle_available(entry: ZooEntry) -> None:
    missing = [m for m in ("dnnlib", "torch_utils") if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"zoo entry {entry.name!r}: cannot unpickle {entry.source}: {', '.join(missing)} not "
                          f"importable. " + EDM_HELP)
    if not Path(entry.source).is_file():
        raise Unavailable(f"zoo entry {entry.name!r}: EDM pickle {entry.source} does not exist")


def _load_samenoise(entry: ZooEntry):
    check_available(entry)
    try:
        net, meta = load_checkpoint(entry.source)
    except FileNotFoundError as e:
        raise Unavailable(f"zoo entry {entry.name!r}: {e}") from e
    except CheckpointError as e:
        raise ZooError(f"zoo entry {entry.name!r}: {e}") from e
    recorded = {"kernel_options": {}} | meta  # a checkpoint made before kernel options were recorded used the defaults
    for key in ("kernel", "kernel_options", "prediction", "time_input", "time_scale", "image_size"):
        if key in recorded and recorded[key] != getattr(entry, key):
            raise _mismatch(entry, key, getattr(entry, key), recorded[key])
    # sigma_data is the checkpoint's own (the EDM preconditioning it was trained under), not the entry's to state
    return (net, make_kernel(entry.kernel, **entry.kernel_options), entry.prediction, entry.time_input,
            entry.time_scale, {"sigma_data": float(meta.get("sigma_data", 0.5))})


DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


CONSISTENCY_SCHEDULER = "CMStochasticIterativeScheduler"
# diffusers' schedulers of one discrete DDPM beta chain (beta_start, beta_end, beta_schedule, num_train_timesteps):
# the training noise levels are theirs whichever of them a pipeline samples with
BETA_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
                   "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                   "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
                   "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler")


def _scheduler_defaults(name: str) -> dict[str, Any]:
    """The defaults of a diffusers scheduler class for the keys read here: they differ between classes (Heun and
    KDPM2 start their betas at 0.00085 and end at 0.012, the others at 1e-4 and 0.02), so a config that leaves one out
    is read as diffusers reads it."""
    import inspect

    import diffusers

    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    keys = ("beta_start", "beta_end", "num_train_timesteps", "beta_schedule", "prediction_type")
    return {k: params[k].default for k in keys if k in params and params[k].default is not inspect.Parameter.empty}


def kernel_from_scheduler(config: dict[str, Any]) -> tuple[str, Any, str]:
    """A scheduler config mapped to (kernel name, kernel, prediction type): DDPM/DDIM-style configs give the
    discrete VP chain; CMStochasticIterativeScheduler gives the EDM kernel with consistency scalings."""
    if config.get("_class_name") == CONSISTENCY_SCHEDULER:
        kernel = make_kernel("edm", sigma_min=config.get("sigma_min", 0.002), sigma_max=config.get("sigma_max", 80.0))
        return "edm", kernel, "cm"
    if config.get("_class_name") not in BETA_SCHEDULERS:  # another family reads none of the beta keys below
        raise ZooError(f"scheduler {config.get('_class_name')!r} is not supported; supported: "
                       f"{', '.join(BETA_SCHEDULERS + (CONSISTENCY_SCHEDULER,))} (their discrete beta chain)")
    if config.get("rescale_betas_zero_snr"):
        raise ZooError("scheduler rescale_betas_zero_snr = true is not supported (its last level has sigma = inf)")
    config = _scheduler_defaults(config["_class_name"]) | config  # a key the config leaves out: its class's default
    schedule = config.get("beta_schedule", "linear")
    if schedule not in ("linear", "scaled_linear") or config.get("trained_betas"):
        raise ZooError(f"scheduler beta_schedule {schedule!r} is not supported; supported: linear, scaled_linear")
    b0, b1, n = config.get("beta_start", 1e-4), config.get("beta_end", 0.02), config.get("num_train_timesteps", 1000)
    if schedule == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    else:  # Stable Diffusion: linear in sqrt(beta)
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    kernel = VPDiscrete(betas=betas)
    prediction = DIFFUSERS_PREDICTIONS.get(config.get("prediction_type", "epsilon"))
    if prediction is None:
        raise ZooError(f"scheduler prediction_type {config.get('prediction_type')!r}; supported: "
                       f"{', '.join(DIFFUSERS_PREDICTIONS)}")
    return "vp-discrete", kernel, prediction


def _path_like(source: str) -> bool:
    """A source that can only be a local path: absolute, relative to '.' or '~', or of more than two parts (a hub id
    is "name" or "owner/name")."""
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..") or source.count("/") > 1


def resolve_source(entry: ZooEntry) -> Path:
    """The entry's checkpoint folder: its source itself, or a hub id's snapshot in the local cache (a folder named by
    the snapshot's commit)."""
    local = Path(entry.source)
    if local.is_file():
        raise ZooError(f"zoo entry {entry.name!r}: source {entry.source} is a file; give the checkpoint folder that "
                       f"holds it")
    # a folder given by its path; a bare relative name ("myddpm") is a hub id, not looked up in the working folder
    # (read_zoo has made a source that exists beside the zoo file absolute): the zoo file would load other weights
    # from wherever pytest runs
    if local.is_dir() and (local.is_absolute() or _path_like(entry.source)):
        return local
    if _path_like(entry.source):
        raise Unavailable(f"zoo entry {entry.name!r}: checkpoint folder {entry.source} does not exist (a local path, "
                          f"not a hub id); put the checkpoint there or set the entry's source to where it is")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.source))
    except (OSError, ValueError) as e:
        raise Unavailable(f"zoo entry {entry.name!r}: checkpoint {entry.source!r} is not available offline "
                          f"({type(e).__name__}). "
                          f"Download it once where the hub is reachable (huggingface-cli download {entry.source} "
                          f"--local-dir DIR) and set the entry's source to DIR.") from e


class TextConditioned(torch.nn.Module):
    """A UNet2DConditionModel called as net(x, t) with one fixed text embedding (the entry's prompt)."""

    def __init__(self, unet: torch.nn.Module, embeddings: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("embeddings", embeddings)
        self.config = {"sample_size": unet.config.sample_size, "in_channels": unet.config.in_channels}

    def forward(self, x, t):
        emb = self.embeddings.to(x.dtype).expand(len(x), *self.embeddings.shape[1:])
        return self.unet(x, t, encoder_hidden_states=emb).sample


class LatentDenoiser(NetworkDenoiser):
    """D over latents, plus `decode(latents)` -> images in [-1, 1] through the checkpoint's VAE."""

    def __init__(self, net, vae, **options):
        super().__init__(net, **options)
        self.vae = vae

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
        """The VAE's images of `latents`, `batch` rows a call, one call at a time; on a CPU on one intra-op thread,
        as generate samples, so that the images do not depend on the machine's cores (the decoder's convolutions
        split their work by thread count: 1 and 2 threads differed by a uint8 pixel of a test decoder). One call at a
        time: a Stable-Diffusion-sized decode takes about 1 GiB a latent (measured), so calls on every core at once
        would multiply that by the cores."""
        from models.fast import intra_op_threads

        p = next(self.vae.parameters())
        scale = self.vae.config.get("scaling_factor", 0.18215)
        with intra_op_threads(1) if p.device.type == "cpu" else contextlib.nullcontext():
            return torch.cat([self.vae.decode((latents[i:i + batch] / scale).to(p.device, p.dtype)).sample.double()
                              .cpu() for i in range(0, len(latents), batch)])

    def decode_uint8(self, latents: torch.Tensor, batch: int = 8) -> np.ndarray:
        """`decode` turned into uint8 NHWC images batch by batch: at 10,000 Stable Diffusion noises the float64
        images of the whole set at once would take about 63 GB, their uint8 about 8 GB."""
        from models.datasets import to_uint8

        return np.concatenate([to_uint8(self.decode(latents[i:i + batch], batch))
                               for i in range(0, len(latents), batch)])


def _prompt_embeddings(entry: ZooEntry, local: Path) -> torch.Tensor:
    if entry.prompt_embeddings:
        path = Path(entry.prompt_embeddings)
        if not path.is_file():
            raise ZooError(f"zoo entry {entry.name!r}: prompt_embeddings file {path} does not exist")
        emb = torch.from_numpy(np.load(path)) if path.suffix == ".npy" else torch.load(
            path, weights_only=True)
        return emb.float().reshape((1,) + tuple(emb.shape[-2:]))
    if not entry.prompt:
        raise ZooError(f"zoo entry {entry.name!r}: a latent text-to-image entry needs `prompt` or `prompt_embeddings`")
    if importlib.util.find_spec("transformers") is None:
        raise ZooError(f"zoo entry {entry.name!r}: encoding the prompt needs the `transformers` package (pip install "
                       f"transformers), or give `prompt_embeddings` = a .npy/.pt file of the text embeddings")
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(local), subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(str(local), subfolder="text_encoder").eval()
    ids = tokenizer([entry.prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0].float()


def _load_latent(entry: ZooEntry, device, dtype) -> LatentDenoiser:
    """A latent text-to-image pipeline folder (unet/, vae/, scheduler/, and text_encoder/ + tokenizer/ for a text
    prompt), e.g. Stable Diffusion v1-1 ... v1-4 (paper Appendix A.2)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    local = resolve_source(entry)
    for sub in ("unet", "vae", "scheduler"):
        if not (local / sub).is_dir():
            raise ZooError(f"zoo entry {entry.name!r}: {local} has no {sub}/ folder; a latent entry needs unet/, vae/ "
                           f"and scheduler/")
    sched_path = local / "scheduler" / "scheduler_config.json"
    try:
        sched = json.loads(sched_path.read_text())
        name, kernel, prediction = kernel_from_scheduler(sched)
    except (OSError, ValueError) as e:  # a missing or unreadable file, or a scheduler the suite does not read
        raise ZooError(f"zoo entry {entry.name!r}: {sched_path}: {e}") from e
    if entry.kernel != name:
        raise _mismatch(entry, "kernel", entry.kernel, f"{name} (scheduler {sched.get('_class_name', '?')})")
    if entry.prediction != prediction:
        raise _mismatch(entry, "prediction", entry.prediction, prediction)
    if (entry.time_input, float(entry.time_scale)) != ("discrete", 1.0):
        raise _mismatch(entry, "time_input, time_scale", (entry.time_input, entry.time_scale), ("discrete", 1.0))
    unet = UNet2DConditionModel.from_pretrained(str(local), subfolder="unet")
    vae = cast(AutoencoderKL.from_pretrained(str(local), subfolder="vae"), device, dtype).eval()
    net = TextConditioned(unet, _prompt_embeddings(entry, local))
    _check_network(entry, net)
    return LatentDenoiser(cast(net, device, dtype).eval(), vae, kernel=kernel, prediction=prediction,
                          time_input="discrete", time_scale=1.0, sample_shape=entry.sample_shape)


def _load_diffusers(entry: ZooEntry):
    """A diffusers UNet2DModel with its DDPM/DDIM scheduler config: a local folder or a hub id (read from the
    local hub cache), laid out as a pipeline (unet/, scheduler/) or as a bare model (both configs at the root)."""
    from diffusers import UNet2DModel

    local = resolve_source(entry)
    try:
        net = UNet2DModel.from_pretrained(str(local), subfolder="unet" if (local / "unet").is_dir() else None)
    except (OSError, ValueError) as e:
        raise ZooError(f"zoo entry {entry.name!r}: cannot read a UNet2DModel from {local} "
                       f"({type(e).__name__}: {e})") from e
    sched_path = next((p for p in (local / "scheduler" / "scheduler_config.json", local / "scheduler_config.json")
                       if p.is_file()), None)
    if sched_path is None:  # its noise levels and prediction type are the scheduler's to say
        raise ZooError(f"zoo entry {entry.name!r}: {local} has no scheduler_config.json (in scheduler/ or beside "
                       f"config.json); the kernel and prediction type are read from it")
    try:
        sched = json.loads(sched_path.read_text())
        name, kernel, prediction = kernel_from_scheduler(sched)
    except (OSError, ValueError) as e:  # an unreadable file, or a scheduler the suite does not read (a ZooError)
        raise ZooError(f"zoo entry {entry.name!r}: {sched_path}: {e}") from e
    if entry.kernel != name:
        raise _mismatch(entry, "kernel", entry.kernel, f"{name} (scheduler {sched.get('_class_name', '?')})")
    if entry.prediction != prediction:
        raise _mismatch(entry, "prediction", entry.prediction, prediction)
    if prediction == "cm":  # diffusers' sigma_to_t: t = 1000 * 0.25 * ln(sigma)
        if sched.get("sigma_data", 0.5) != 0.5:
            raise ZooError(f"zoo entry {entry.name!r}: consistency scheduler sigma_data {sched['sigma_data']} is not "
                           f"supported; supported: 0.5")
        time = ("log-sigma", 1000.0)
    else:
        time = ("discrete", 1.0)
    if (entry.time_input, float(entry.time_scale)) != time:  # the scheduler fixes how the UNet reads its time
        raise _mismatch(entry, "time_input, time_scale", (entry.time_input, entry.time_scale), time)
    return (net, kernel, prediction) + time


EDM_HELP = ("EDM pickles need NVlabs' `dnnlib` and `torch_utils` packages importable: clone "
            "https://github.com/NVlabs/edm and add its root to PYTHONPATH (e.g. PYTHONPATH=/path/to/edm pytest ...)")


class OneHotLabels(torch.nn.Module):
    """An EDM network with classes called with class indices: EDM's preconditioners take one-hot label rows."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.img_resolution, self.img_channels, self.label_dim = net.img_resolution, net.img_channels, net.label_dim

    def forward(self, x, sigma, label=None):
        one_hot = None if label is None else torch.nn.functional.one_hot(label, self.label_dim).to(x.dtype)
        return self.net(x, sigma, one_hot)


def _load_edm_pickle(entry: ZooEntry):
    """EDM's pickles hold {'ema': EDMPrecond} (or VPPrecond, VEPrecond, iDDPMPrecond for its baselines: score-SDE's
    and ADM's networks converted), whose forward(x, sigma, class_labels) returns D directly. As EDM's own sampler
    does (generate.py in NVlabs/edm), the step grid keeps within the network's sigma_min..sigma_max."""
    check_available(entry)
    if entry.kernel != "edm" or entry.prediction != "x0" or entry.time_input != "sigma" or entry.time_scale != 1:
        raise ZooError(f"zoo entry {entry.name!r}: EDM pickles are denoisers in sigma-space; the entry must say "
                       f"kernel = 'edm', prediction = 'x0', time_input = 'sigma' (and no time_scale)")
    unknown = sorted(set(entry.kernel_options) - {"sigma_min", "sigma_max"})
    if unknown:
        raise ZooError(f"zoo entry {entry.name!r}: kernel_options {', '.join(unknown)} do not apply to an EDM pickle; "
                       f"valid: sigma_max, sigma_min")
    try:
        with open(entry.source, "rb") as f:
            data = pickle.load(f)
    except ModuleNotFoundError:  # EDM's dnnlib / torch_utils: the caller says which checkout to put on the path
        raise
    except Exception as e:  # truncated, not a pickle, unreadable
        raise ZooError(f"zoo entry {entry.name!r}: {entry.source} is not a readable EDM pickle "
                       f"({type(e).__name__}: {e})") from e
    net = data.get("ema") if isinstance(data, dict) else None
    missing = [a for a in ("img_resolution", "img_channels", "label_dim") if not hasattr(net, a)]
    if net is None or missing:
        held = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ZooError(f"zoo entry {entry.name!r}: {entry.source} holds no EDM network under 'ema' (one with "
                       f"img_resolution, img_channels and label_dim); it holds {held}")
    if getattr(net, "use_fp16", False):  # EDM's forward runs float16 on CUDA only (its ImageNet model, --fp16=1): the
        net.use_fp16 = False  # suite samples in the precision it asks for, the same on a GPU as on a CPU
    options = {"sigma_min": 0.002, "sigma_max": 80.0} | entry.kernel_options  # EDM's defaults (Karras et al. 2022)
    options["sigma_min"] = max(options["sigma_min"], float(getattr(net, "sigma_min", 0.0)))
    options["sigma_max"] = min(options["sigma_max"], float(getattr(net, "sigma_max", float("inf"))))
    if _rounds_sigma(net):
        levels = net.round_sigma
        options["round_sigma"] = lambda sigmas: levels(sigmas.float()).double().cpu()  # grids stay on the CPU
    if getattr(net, "label_dim", 0):
        net = OneHotLabels(net)
    return net, make_kernel("edm", **options), "x0", "sigma", 1.0


def _rounds_sigma(net) -> bool:
    """Whether an EDM network snaps sigma to discrete levels (iDDPMPrecond); for the others round_sigma is the
    identity."""
    if not hasattr(net, "round_sigma"):
        return False
    probe = torch.tensor([0.05, 0.7, 3.1, 29.0])
    with torch.no_grad():
        return not torch.allclose(torch.as_tensor(net.round_sigma(probe)).float().reshape(-1), probe)


def config_classes(config: dict[str, Any], fallback: Optional[int] = None) -> Optional[int]:
    """A network's class count as its config states it (diffusers' num_class_embeds, the U-ViT's num_classes, else
    `fallback`); None for an unconditional network."""
    classes = config.get("num_class_embeds", config.get("num_classes", fallback))
    return int(classes) if classes else None


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
    classes = config_classes(cfg, getattr(net, "label_dim", None) or None)
    if entry.conditional and not classes:
        raise ZooError(f"zoo entry {entry.name!r} is marked conditional but its network takes no label")
    if not entry.conditional and classes:
        raise ZooError(f"zoo entry {entry.name!r} is marked unconditional but its network takes {classes} classes")
    if entry.conditional and entry.num_classes not in (None, classes):
        raise _mismatch(entry, "num_classes", entry.num_classes, classes)
    return classes


@dataclass(frozen=True)
class Format:
    """A checkpoint format: whether an entry's files (and the code they need) are here, and how it loads."""

    available: Callable[[ZooEntry], Any]  # raises Unavailable, saying what to provide
    load: Callable[..., NetworkDenoiser]  # (entry, device, dtype) -> the checked denoiser
    hub: bool = False  # its source may be a hub id, read from the local hub cache


def _load_generator(entry: ZooEntry, device, dtype):
    """A suite-trained VAE (models/vae.py) as a one-step map from the bank's noise (sampler 'consistency', NFE 1)."""
    from models.vae import VAE, NoiseDecoder

    net, kernel = _load_samenoise(entry)[:2]
    if not isinstance(net, VAE):
        raise ZooError(f"zoo entry {entry.name!r}: format 'samenoise-generator' needs a VAE checkpoint, "
                       f"{entry.source} holds a {type(net).__name__}")
    return NoiseDecoder(cast(net, device, dtype).eval(), kernel, entry.sample_shape)


def _published(name: str) -> Callable:
    """A function of models/published.py (the loaders that need their authors' code), imported when first called:
    that module builds on this one."""

    def call(*args):
        from models import published

        return getattr(published, name)(*args)

    return call


# A new format is one entry here (plus its test).
FORMATS: Registry[Format] = Registry("format", {
    "samenoise": Format(_folder_available, _network(_load_samenoise)),
    "diffusers": Format(resolve_source, _network(_load_diffusers), hub=True),
    "diffusers-latent": Format(resolve_source, _load_latent, hub=True),
    "edm-pickle": Format(_edm_pickle_available, _network(_load_edm_pickle)),
    "guided-diffusion": Format(_published("adm_available"), _network(_published("load_adm"))),
    "improved-diffusion": Format(_published("adm_available"), _network(_published("load_adm"))),
    "score-sde": Format(_published("score_sde_available"), _network(_published("load_score_sde"))),
    "uvit": Format(_published("uvit_available"), _network(_published("load_uvit"))),
    "samenoise-generator": Format(_folder_available, _load_generator),
})

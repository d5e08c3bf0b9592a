"""One training loop for every zoo model: seeded, resumable, with EMA and a per-step loss log.

Every objective is the same weighted denoising loss in sigma-space (Karras et al. 2022, Eq. 2):
    weight(sigma) * ||D(y + sigma n; sigma) - y||^2,
and objectives differ only in how sigma is drawn and weighted:
  - 'eps':  t ~ U[t_min, t_max] of the kernel (integer t for discrete DDPM), weight 1 / sigma^2,
            which is exactly ||eps_hat - n||^2 (Ho et al. 2020; Song et al. 2021);
  - 'edm':  ln sigma ~ N(sigma_mean, sigma_std^2) (EDM's -1.2, 1.2) clipped to the kernel's range, weight
            (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1);
  - 've':   ln sigma ~ U[ln sigma_min, ln sigma_max] of the kernel, weight 1 / sigma^2: Song et al. (2021)'s
            sigma^2-weighted score matching, sigma^2 ||s_hat - grad log p||^2 with s = (D - x) / sigma^2.
With target 'optimal' the loss regresses on D*(y + sigma n; sigma) of the training set instead of y (the same
expected gradient, less variance; the log still records the loss against y).
Partial fine-tuning trains only attention parameters (paper Sec. 4, Appendix G). Progressive
distillation (Salimans & Ho 2022, Algorithm 2) trains a student whose one DDIM step matches two teacher steps,
over `distill_rounds` halvings, each round's student becoming the next round's teacher;
consistency distillation (Song et al. 2023, Algorithm 2) trains a one-step student f(x, sigma) to agree
with its slowly moving copy across one Heun step of the teacher's ODE.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from models.atomic import atomic_write, file_lock
from models.checkpoints import load_checkpoint, save_checkpoint
from models.datasets import embedded_photos
from models.denoisers import NetworkDenoiser
from models.grids import GRIDS, make_grid
from models.kernels import KERNELS, append_dims, make_kernel
from models.optimal import OptimalDenoiser
from models.registry import Registry
from models.samplers import euler_step, heun_step
from models.unet import build_unet
from models.uvit import UViT
from models.vae import ConvVAE, MLPVAE, NoiseDecoder

ARCHS = Registry("architecture", {"unet": build_unet, "uvit": UViT, "vae-conv": ConvVAE, "vae-mlp": MLPVAE})
VAE_ARCHS = ("vae-conv", "vae-mlp")  # trained with the 'elbo' objective, sampled as one-step maps from the noise
OBJECTIVES = ("eps", "edm", "ve", "elbo")
DISTILL_METHODS = ("progressive", "consistency")
LR_DECAYS = ("none", "cosine")
TARGETS = ("sample", "optimal")


@dataclass
class TrainConfig:
    arch: str = "unet"
    arch_options: dict[str, Any] = field(default_factory=dict)
    kernel: str = "vp"
    # the kernel's parameters (models.kernels), e.g. { t_max = 0.8818 } for a VP cut at sigma_max 50; the zoo entry
    # states the same options, and the sampler starts at that kernel's sigma_max
    kernel_options: dict[str, Any] = field(default_factory=dict)
    prediction: str = "eps"  # eps | x0 | v | edm
    time_input: str = "t"
    time_scale: float = 999.0
    objective: str = "eps"  # eps | edm
    image_size: int = 16
    dataset_size: int = 64
    dataset_seed: int = 0
    photos: str = "color"  # the photo pool of the thumbnails (models.datasets.PHOTO_SETS)
    photos_per_class: int = 1  # conditional models: consecutive photos grouped into one class
    conditional: bool = False
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 0  # linear learning-rate warm-up over the first steps (EDM's lr ramp-up)
    # 'cosine': after the warm-up, the learning rate falls as a half cosine towards 0, which it would reach one step
    # after the last (Loshchilov & Hutter 2017, SGDR without restarts); 'none': constant
    lr_decay: str = "none"
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    finetune_from: Optional[str] = None  # partial fine-tuning: train only attention layers of this checkpoint
    distill_from: Optional[str] = None  # progressive distillation from this teacher checkpoint
    # progressive distillation: the final student's DDIM steps (grid levels, the last one stepping to 0) and the
    # number of halvings; the first teacher takes 2^distill_rounds times the final student's steps between its
    # grid's first and last levels, and `steps` are shared evenly by the rounds
    distill_steps: int = 4
    distill_rounds: int = 1
    distill_grid: str = "edm"
    distill_method: str = "progressive"  # progressive | consistency
    cd_steps: int = 18  # consistency distillation: N noise levels of the Karras grid (Song et al. 2023, CIFAR-10: 18)
    cd_target_decay: float = 0.95  # consistency distillation: target network EMA mu (Song et al. 2023, CIFAR-10: 0.95)
    sigma_data: float = 0.5
    sigma_mean: float = -1.2  # 'edm' objective: ln sigma ~ N(sigma_mean, sigma_std^2) (EDM's P_mean, P_std, Table 1)
    sigma_std: float = 1.2
    # 'elbo' objective: the std of the VAE's Gaussian likelihood in [-1, 1] units; 0.1 is 12.75 on 0-255, inside the
    # paper's MAE threshold of 15 for "the same image" (Sec. 2.1)
    pixel_std: float = 0.1
    # the regression target of a diffusion objective's loss: 'sample', the training image y that the noisy x was made
    # from (denoising score matching); 'optimal', D*(x; sigma) of the whole training set, i.e. E[y | x] (Theorem 1;
    # Xu et al. 2023's stable target field with the training set as its reference batch): the same minimizer and the
    # same expected gradient, without the variance of which image x came from (largest where the posterior is split,
    # at the noise levels where a sample's training image is chosen). The loss log keeps the loss against y under
    # either target, so that logs compare across targets.
    target: str = "sample"

    def __post_init__(self):
        self._check_types_and_ranges()
        ARCHS[self.arch]
        try:
            make_kernel(self.kernel, **self.kernel_options)
        except (TypeError, ValueError) as e:
            valid = ", ".join(inspect.signature(KERNELS[self.kernel]).parameters)
            raise ValueError(f"kernel_options {self.kernel_options} do not fit kernel {self.kernel!r} ({e}); "
                             f"valid options: {valid}") from e
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; valid objectives: {', '.join(OBJECTIVES)}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"unknown lr_decay {self.lr_decay!r}; valid: {', '.join(LR_DECAYS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid targets: {', '.join(TARGETS)}")
        if self.target == "optimal" and (self.objective == "elbo" or self.distill_from):
            raise ValueError("target 'optimal' (D* of the training set) applies to the denoising objectives trained "
                             "from scratch or fine-tuned, not to the 'elbo' objective or distillation")
        if self.finetune_from and self.distill_from:
            raise ValueError("give at most one of finetune_from and distill_from")
        if self.arch in VAE_ARCHS and self.conditional:
            raise ValueError(f"the VAE architectures ({', '.join(VAE_ARCHS)}) are unconditional; "
                             f"got conditional = true")
        if (self.arch in VAE_ARCHS) != (self.objective == "elbo"):
            raise ValueError(f"the 'elbo' objective trains exactly the VAE architectures {', '.join(VAE_ARCHS)}; "
                             f"got arch {self.arch!r} with objective {self.objective!r}")
        if self.distill_method not in DISTILL_METHODS:
            raise ValueError(f"unknown distill_method {self.distill_method!r}; valid methods: "
                             f"{', '.join(DISTILL_METHODS)}")
        if self.distill_from and self.distill_method == "consistency" and self.prediction != "cm":
            raise ValueError(f"consistency distillation needs prediction 'cm' (f(x, sigma_min) = x), "
                             f"got {self.prediction!r}")
        # the student's last round takes distill_steps - 1 grid intervals before its step to 0: at 1 no round halves
        # anything (every round's student would copy the teacher's one step from sigma_max)
        low = 2 if self.distill_from and self.distill_method == "progressive" else 1
        if self.distill_steps < low or self.distill_rounds < 1 or self.steps % self.distill_rounds:
            raise ValueError(f"progressive distillation needs distill_steps >= {low} and distill_rounds >= 1 dividing "
                             f"steps, got distill_steps={self.distill_steps}, distill_rounds={self.distill_rounds}, "
                             f"steps={self.steps}")
        if self.distill_grid not in GRIDS:  # read at the first distillation step: checked before a step is taken
            raise ValueError(f"unknown distill_grid {self.distill_grid!r}; valid grids: {', '.join(GRIDS)}")
        if self.warmup_steps >= self.steps:  # the learning rate would never reach lr, nor its decay begin
            raise ValueError(f"warmup_steps must be below steps ({self.steps}), got {self.warmup_steps}")
        if self.distill_from and self.prediction == "eps":
            # D = x - sigma eps_hat must hit an x0 target at sigma_max: the gradient grows as sigma^2 and
            # training diverges; Salimans & Ho (2022, Sec. 4) distill x0- or v-parameterized students.
            raise ValueError("progressive distillation needs prediction 'edm', 'x0' or 'v', got 'eps'")


    # (field, test, what the valid values are): every count and rate a run reads, so that a bad value stops the run
    # before anything is written instead of training to a wrong model (steps 0, lr 0) or failing mid-way
    _RANGES = (("steps", lambda v: v >= 1, "an integer >= 1"), ("batch_size", lambda v: v >= 1, "an integer >= 1"),
               ("checkpoint_every", lambda v: v >= 1, "an integer >= 1"),
               ("dataset_size", lambda v: v >= 1, "an integer >= 1"), ("image_size", lambda v: v >= 1, "an integer >= 1"),
               ("photos_per_class", lambda v: v >= 1, "an integer >= 1"),
               ("warmup_steps", lambda v: v >= 0, "an integer >= 0"),
               ("cd_steps", lambda v: v >= 2, "an integer >= 2 (a consistency pair needs two noise levels)"),
               ("lr", lambda v: 0 < v < math.inf, "a finite number > 0"),
               ("time_scale", lambda v: 0 < v < math.inf, "a finite number > 0"),
               ("sigma_data", lambda v: 0 < v < math.inf, "a finite number > 0"),
               ("sigma_std", lambda v: 0 < v < math.inf, "a finite number > 0"),
               ("pixel_std", lambda v: 0 < v < math.inf, "a finite number > 0"),
               ("sigma_mean", lambda v: math.isfinite(v), "a finite number"),
               ("ema_decay", lambda v: 0 <= v < 1, "a number in [0, 1)"),
               ("cd_target_decay", lambda v: 0 <= v < 1, "a number in [0, 1)"))

    def _check_types_and_ranges(self) -> None:
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "Optional[str]": (str, type(None)),
                 "dict[str, Any]": (dict,)}
        for f in fields(self):
            value, want = getattr(self, f.name), kinds.get(f.type)
            if want is None:
                continue
            if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
                raise ValueError(f"{f.name} must be of type {f.type}, got {value!r} ({type(value).__name__})")
        for name, ok, valid in self._RANGES:
            if not ok(getattr(self, name)):
                raise ValueError(f"{name} must be {valid}, got {getattr(self, name)!r}")


LOSS_LOG = "loss.jsonl"  # one {"step", "loss"} line per step, as training writes it
# the same lines xz-compressed, as the embedded zoo ships its logs: 6.8x smaller (measured on the 10,000-step
# UNet-16 log: 357,695 bytes -> 52,668), which keeps the zoo's 23 logs at 1.4 MB instead of 9.3 MB
PACKED_LOSS_LOG = "loss.jsonl.xz"


def loss_log_path(folder: str | os.PathLike) -> Optional[Path]:
    """The folder's loss log, plain or packed; None when it has neither. Both at once is ambiguous and refused."""
    folder = Path(folder)
    found = [folder / name for name in (LOSS_LOG, PACKED_LOSS_LOG) if (folder / name).is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder} holds both {LOSS_LOG} and {PACKED_LOSS_LOG}; keep one of them")
    return found[0] if found else None


def read_losses(folder: str | os.PathLike) -> list[float]:
    """Every logged step's loss, in step order, from the folder's loss.jsonl or loss.jsonl.xz."""
    import lzma

    path = loss_log_path(folder)
    if path is None:
        raise FileNotFoundError(f"{folder} holds no {LOSS_LOG} or {PACKED_LOSS_LOG}")
    try:
        text = lzma.decompress(path.read_bytes()).decode() if path.name == PACKED_LOSS_LOG else path.read_text()
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e})") from e
    losses = []
    for i, line in enumerate(text.splitlines()):  # the analyses take a loss's position for its step
        try:
            r = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}: line {i + 1} is not a JSON record ({e}): {line[:60]!r}") from e
        if not isinstance(r, dict) or r.get("step") != i + 1:
            got = r.get("step") if isinstance(r, dict) else r
            raise ValueError(f"{path}: line {i + 1} logs step {got!r}, expected {i + 1}: a loss log holds "
                             f"steps 1, 2, ... once each, in order, one {{\"step\", \"loss\"}} record a line")
        loss = r.get("loss")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise ValueError(f"{path}: line {i + 1} logs loss {loss!r}, expected a number")
        losses.append(float(loss))
    if not losses:
        raise ValueError(f"{path} logs no step")
    return losses


WRAP_FIELDS = ("kernel", "kernel_options", "prediction", "time_input", "time_scale", "sigma_data")


def _check_same_wrap(meta: dict, cfg: "TrainConfig", source, fields: tuple[str, ...] = WRAP_FIELDS) -> None:
    """A fine-tune or progressive distillation trains the checkpoint's network on under `cfg`'s wrap (the student
    starts as the teacher): both must turn the network's output into D the same way, else training starts from a
    different denoiser than the checkpoint's and nothing says so. A consistency student checks every field but its
    prediction ('cm'): it starts from the teacher's weights, reads the noise level as the teacher does and is
    trained on the teacher's range of noise levels."""
    recorded = {"kernel_options": {}, "sigma_data": 0.5} | meta  # checkpoints from before these fields were recorded
    differ = [f"{k} {recorded[k]!r} in the checkpoint, {getattr(cfg, k)!r} in the config" for k in fields
              if k in recorded and recorded[k] != getattr(cfg, k)]
    if differ:
        raise ValueError(f"{source} was trained under another wrap than this config's: {'; '.join(differ)}; give "
                         f"the config the checkpoint's values")


NETWORK_FIELDS = ("arch", "arch_options", "image_size", "conditional")


def _check_same_network(meta: dict, cfg: "TrainConfig", source) -> None:
    """A fine-tune or distillation trains the checkpoint's own network; the config's architecture fields are recorded
    in the result's samenoise.json, so they must be the checkpoint's (a UNet checkpoint under arch 'uvit' gave a
    model whose config.json and samenoise.json disagreed)."""
    recorded = dict(meta.get("config", {}))
    if "image_size" in meta:
        recorded["image_size"] = meta["image_size"]
    differ = [f"{k} {recorded[k]!r} in the checkpoint, {getattr(cfg, k)!r} in the config" for k in NETWORK_FIELDS
              if k in recorded and recorded[k] != getattr(cfg, k)]
    if differ:
        raise ValueError(f"{source} holds another network than this config describes: {'; '.join(differ)}; give the "
                         f"config the checkpoint's values")


def _kept_log(path: Path, step: int) -> str:
    """The log's lines of steps 1..step (those the saved training state has taken); refused when it has fewer."""
    if not path.is_file():
        if step:
            raise ValueError(f"the saved training state is at step {step}, but {path} is missing: the log cannot be "
                             f"resumed (restore it, or remove the folder to start over)")
        return ""
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a killed run
            break
        if not isinstance(record, dict) or record.get("step") != len(kept) + 1 or len(kept) == step \
                or not line.endswith("\n"):
            break
        kept.append(line)
    if len(kept) != step:
        raise ValueError(f"{path} holds {len(kept)} whole steps in order, but the saved training state is at step "
                         f"{step}; the log cannot be resumed (remove the folder to start over)")
    return "".join(kept)


def _trim_log(path: Path, step: int) -> None:
    """Keep the log's lines of steps 1..step: lines a stopped run wrote past its last saved state would otherwise
    appear twice once the run resumes from that state."""
    kept = _kept_log(path, step)
    if path.is_file():
        atomic_write(path, lambda f: f.write(kept.encode()))


def pack_loss_log(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write src/loss.jsonl xz-compressed to dest/loss.jsonl.xz (atomically); the lines are kept byte for byte."""
    import lzma

    plain = Path(src) / LOSS_LOG
    if not plain.is_file():
        raise FileNotFoundError(f"{src} holds no {LOSS_LOG} to pack")
    data = lzma.compress(plain.read_bytes(), preset=9 | lzma.PRESET_EXTREME)
    return atomic_write(Path(dest) / PACKED_LOSS_LOG, lambda f: f.write(data))


def is_attention(name: str) -> bool:
    """Attention parameters of both architectures: diffusers' `attentions.*`, U-ViT's `*.attn.*`."""
    return "attentions." in name or ".attn." in name


def _build(cfg: TrainConfig, num_classes: Optional[int]) -> torch.nn.Module:
    builder = ARCHS[cfg.arch]
    valid = [p for p in inspect.signature(builder).parameters if p not in ("self", "image_size", "num_classes")]
    unknown = sorted(set(cfg.arch_options) - set(valid))
    if unknown:
        raise ValueError(f"arch_options {unknown} do not fit arch {cfg.arch!r}; valid options: {', '.join(valid)}")
    if cfg.arch in VAE_ARCHS:
        return ARCHS[cfg.arch](image_size=cfg.image_size, **cfg.arch_options)
    options = dict(image_size=cfg.image_size, num_classes=num_classes) | cfg.arch_options
    return ARCHS[cfg.arch](**options)


def network_classes(net: torch.nn.Module) -> Optional[int]:
    """The class count a network's config states (diffusers' num_class_embeds, the U-ViT's num_classes); None for an
    unconditional one."""
    return getattr(net, "config", {}).get("num_class_embeds") or getattr(net, "config", {}).get("num_classes")


def wrap_for(cfg: TrainConfig | dict, net: torch.nn.Module) -> NetworkDenoiser | NoiseDecoder:
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    if c.get("objective") == "elbo":
        return NoiseDecoder(net, c["kernel"])
    num_classes = network_classes(net)
    kernel = make_kernel(c["kernel"], **c.get("kernel_options", {}))
    return NetworkDenoiser(net, kernel, c["prediction"], time_input=c["time_input"],
                           time_scale=c["time_scale"], sigma_data=c["sigma_data"],
                           sample_shape=(3, c["image_size"], c["image_size"]), num_classes=num_classes)


def draw_sigma(cfg: TrainConfig, kernel, n: int, g: torch.Generator) -> torch.Tensor:
    if cfg.objective not in ("eps", "edm", "ve"):
        raise ValueError(f"objective {cfg.objective!r} draws no noise level; sigma draws exist for eps, edm and ve")
    if cfg.objective == "eps":
        if cfg.kernel == "vp-discrete":
            t = torch.randint(0, int(kernel.t_max) + 1, (n,), generator=g).double()
        else:
            t = kernel.t_min + (kernel.t_max - kernel.t_min) * torch.rand(n, generator=g, dtype=torch.float64)
        return kernel.sigma(t)
    if cfg.objective == "ve":
        lo, hi = math.log(kernel.sigma_min), math.log(kernel.sigma_max)
        return torch.exp(lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64))
    ln = cfg.sigma_mean + cfg.sigma_std * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.exp(ln).clamp(kernel.sigma_min, kernel.sigma_max)


def loss_weight(objective: str, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    if objective in ("eps", "ve"):
        return 1 / sigma**2
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class Trainer:
    """Owns the network, EMA, optimizer and data stream; `run()` trains to cfg.steps, resuming from
    `out/train_state.pt` when present, and writes `out/loss.jsonl`, checkpoints and the EMA model."""

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, device: str | torch.device = "cpu"):
        self.cfg, self.out, self.device = cfg, Path(out), torch.device(device)
        data = embedded_photos(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed, photos=cfg.photos,
                               per_class=cfg.photos_per_class)
        self.dataset_hash = data.hash
        self.images = data.as_tensor().to(self.device)
        self.labels = torch.from_numpy(data.labels).to(self.device) if cfg.conditional else None
        num_classes = len(data.classes) if cfg.conditional else None
        self.teacher = self.target = None
        self._progressive = bool(cfg.distill_from) and cfg.distill_method == "progressive"
        if cfg.finetune_from or cfg.distill_from:
            self.net, meta = load_checkpoint(cfg.finetune_from or cfg.distill_from)
            _check_same_network(meta, cfg, cfg.finetune_from or cfg.distill_from)
            have = network_classes(self.net)
            if cfg.conditional and have != num_classes:  # more classes failed at the first step inside the
                # embedding, fewer trained a network whose last classes see no image
                raise ValueError(f"{cfg.finetune_from or cfg.distill_from} is a network of {have} classes, and this "
                                 f"config's data make {num_classes} (its photos in classes of photos_per_class "
                                 f"{cfg.photos_per_class}); set photos_per_class so that the photos make "
                                 f"{have} classes")
            if cfg.finetune_from or self._progressive:  # the network goes on under this config's wrap
                _check_same_wrap(meta, cfg, cfg.finetune_from or cfg.distill_from)
            elif cfg.distill_from:  # consistency: the same wrap but for the prediction
                _check_same_wrap(meta, cfg, cfg.distill_from, tuple(f for f in WRAP_FIELDS if f != "prediction"))
                if not isinstance(meta.get("config"), dict):
                    raise ValueError(f"{cfg.distill_from} records no training config (its samenoise.json 'config'): "
                                     f"consistency distillation needs the teacher's own parameterization")
            if cfg.distill_from:
                # the teacher keeps its own parameterization; the student starts from its weights
                self.teacher = wrap_for(meta["config"] if cfg.distill_method == "consistency" else cfg,
                                        copy.deepcopy(self.net).to(self.device).eval())
        else:
            torch.manual_seed(cfg.seed)  # parameter initialization only; data and noise use self.gen
            self.net = _build(cfg, num_classes)
        self.net.to(self.device).train()
        if cfg.finetune_from:
            for name, p in self.net.named_parameters():
                p.requires_grad_(is_attention(name))
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("nothing to train: no parameter requires a gradient")
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        if cfg.distill_method == "consistency" and cfg.distill_from:
            self.target = wrap_for(cfg, copy.deepcopy(self.net).to(self.device).eval().requires_grad_(False))
            # the N noise levels of consistency distillation: the Karras grid (Song et al. 2023, Sec. 3)
            kernel = make_kernel(cfg.kernel, **cfg.kernel_options)
            self._cd_grid = make_grid("edm", kernel, cfg.cd_steps, append_zero=False).to(self.device)
        self.opt = torch.optim.Adam(self.trainable, lr=cfg.lr)
        self.D = wrap_for(cfg, self.net)
        self.kernel = self.D.kernel
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # float64, as the state x is: the target is the exact conditional mean the loss regresses on
        self.optimal = OptimalDenoiser(self.images, self.labels, dtype=torch.float64, device=self.device) \
            if cfg.target == "optimal" else None
        self.step = 0
        self._resume()

    # --- state ------------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / "train_state.pt"
        if not path.is_file():
            finished = [p.name for p in (self.out / "model", self.out / PACKED_LOSS_LOG) if p.exists()]
            if finished:  # e.g. a copy of a shipped zoo folder: training would overwrite its model and log
                raise ValueError(f"{self.out} holds {' and '.join(finished)} but no train_state.pt to resume from: "
                                 f"use a new output folder")
            return
        # on the CPU: the generator's state must stay a CPU tensor; load_state_dict copies the rest to the device
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated by a full disk, or not a training state at all
            raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); restore it, or remove the folder to "
                             f"start over") from e
        if not isinstance(state, dict) or not {"config", "net", "ema", "opt", "gen", "step"} <= set(state):
            raise ValueError(f"{path} is not a training state of this suite; remove the folder to start over")
        # a field added after the state was written reads as its default
        defaults = {f.name: f.default for f in fields(TrainConfig)}
        saved, now = {**defaults, **state["config"]}, asdict(self.cfg)
        if saved != now:
            changed = [f"{k} {saved.get(k, '(none)')!r} -> {now.get(k, '(none)')!r}" for k in {**saved, **now}
                       if saved.get(k) != now.get(k)]
            raise ValueError(f"{path} was written by another training config ({'; '.join(changed[:6])}); use a new "
                             f"output folder")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        if self.target is not None:
            self.target.net.load_state_dict(state["target"])
        if "teacher" in state:
            self.teacher.net.load_state_dict(state["teacher"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step = state["step"]
        _kept_log(self.out / LOSS_LOG, self.step)  # a log that cannot go on with this state stops the run here

    def _save_state(self) -> None:
        state = dict(config=asdict(self.cfg), net=self.net.state_dict(), ema=self.ema.state_dict(),
                     opt=self.opt.state_dict(), gen=self.gen.get_state(), step=self.step)
        if self.target is not None:
            state["target"] = self.target.net.state_dict()
        if self._progressive and self.cfg.distill_rounds > 1:  # the teacher changes from round to round
            state["teacher"] = self.teacher.net.state_dict()
        atomic_write(self.out / "train_state.pt", lambda f: torch.save(state, f))

    # --- one step ---------------------------------------------------------------------------------
    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        """`t`, drawn on the CPU generator (a run draws the same numbers on every device), on the training device. A
        blocking copy to a GPU makes the host wait for it, several times a step; a copy from pinned memory does not
        (torch's pinned-memory cache holds the block until the copy has run)."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    def _batch(self):
        idx = self._on_device(torch.randint(0, len(self.images), (self.cfg.batch_size,), generator=self.gen))
        y = self.images[idx]
        label = None if self.labels is None else self.labels[idx]
        return y, label

    def loss(self) -> torch.Tensor:
        """The loss a training step minimizes."""
        return self.losses()[0]

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss a step minimizes, the loss its log records): one loss but under target 'optimal', whose log
        records the loss against the training images y, as the other target's does."""
        y, label = self._batch()
        if self.cfg.objective == "elbo":
            noise = self._on_device(torch.randn((len(y), self.net.latent), generator=self.gen))
            loss = self.net.elbo_loss(y, noise, self.cfg.pixel_std)
        elif self.target is not None:
            loss = self._consistency_loss(y, label)
        elif self.teacher is not None:
            loss = self._distill_loss(y, label)
        else:
            return self._denoising_losses(y, label)
        return loss, loss

    def _denoising_losses(self, y, label) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = draw_sigma(self.cfg, self.kernel, len(y), self.gen)
        noise = self._on_device(torch.randn(y.shape, generator=self.gen))
        w = append_dims(self._on_device(loss_weight(self.cfg.objective, sigma, self.cfg.sigma_data)), y.ndim)
        sigma = self._on_device(sigma)
        x = (y.double() + append_dims(sigma, y.ndim) * noise.double())
        denoised = self.D(x, sigma, label)
        against_y = (w * (denoised - y.double()) ** 2).mean().float()
        if self.optimal is None:
            return against_y, against_y
        target = self.optimal(x, sigma, label)
        return (w * (denoised - target) ** 2).mean().float(), against_y.detach()

    def _distill_loss(self, y, label) -> torch.Tensor:
        """The student's one DDIM step sigma_a -> sigma_b must land where the teacher's two steps land; its target D
        is solved from x_b = D + (sigma_b / sigma_a)(x_a - D). The student of a round that has h halvings still to come
        steps through n = (distill_steps - 1) 2^h + 1 levels of its grid, then to 0; its teacher through the same grid
        with 2n - 1 levels, every other one the student's (each grid is uniform in a parameter of its own, so halving
        nests them), and takes one step, as the student does, from the last level to 0."""
        n = (self.cfg.distill_steps - 1) * 2 ** (self.cfg.distill_rounds - 1 - self._round(self.step)) + 1
        fine = make_grid(self.cfg.distill_grid, self.kernel, 2 * n - 1)
        fine = self._on_device(torch.cat([fine, fine.new_zeros(2)]))  # the last level's two "steps" both end at 0
        i = 2 * self._on_device(torch.randint(0, n, (len(y),), generator=self.gen))
        sa, sm, sb = fine[i], fine[i + 1], fine[i + 2]
        noise = self._on_device(torch.randn(y.shape, generator=self.gen)).double()
        xa = y.double() + append_dims(sa, y.ndim) * noise
        with torch.no_grad():
            xm = euler_step(xa, sa, sm, self.teacher(xa, sa, label))
            to_b = euler_step(xm, sm, sb, self.teacher(xm, sm.clamp_min(self.kernel.sigma_min), label))
            xb = torch.where(append_dims(sb > 0, y.ndim), to_b, xm)
            ratio = append_dims(sb / sa, y.ndim)
            target = (xb - ratio * xa) / (1 - ratio)
        w = append_dims(loss_weight("edm", sa, self.cfg.sigma_data), y.ndim)
        return (w * (self.D(xa, sa, label) - target) ** 2).mean().float()

    def _round(self, step: int) -> int:
        """The progressive-distillation round that 0-based `step` belongs to."""
        return step // (self.cfg.steps // self.cfg.distill_rounds)

    def _next_round(self) -> None:
        """Salimans & Ho (2022), Algorithm 2: the student becomes the teacher and the next student starts from it.
        The student handed on is its EMA, and the next one starts with a fresh optimizer (choices of this suite)."""
        self.teacher.net.load_state_dict(self.ema.state_dict())
        self.net.load_state_dict(self.ema.state_dict())
        self.opt = torch.optim.Adam(self.trainable, lr=self.cfg.lr)

    def _consistency_loss(self, y, label) -> torch.Tensor:
        """||f(x_hi, sigma_hi) - f_target(x_lo, sigma_lo)||^2, where x_hi = y + sigma_hi n and x_lo is one Heun step
        of the teacher's ODE from sigma_hi down to the next level of an N-level Karras grid (Song et al. 2023,
        Algorithm 2, with the squared L2 distance and lambda = 1)."""
        grid = self._cd_grid
        i = self._on_device(torch.randint(0, self.cfg.cd_steps - 1, (len(y),), generator=self.gen))
        hi, lo = grid[i], grid[i + 1]
        noise = self._on_device(torch.randn(y.shape, generator=self.gen)).double()
        x_hi = y.double() + append_dims(hi, y.ndim) * noise
        with torch.no_grad():
            x_lo = heun_step(self.teacher, x_hi, hi, lo, label)
            target = self.target(x_lo, lo, label)
        return ((self.D(x_hi, hi, label) - target) ** 2).mean().float()

    @torch.no_grad()
    def _update_target(self) -> None:
        for p_t, p in zip(self.target.net.parameters(), self.net.parameters()):
            p_t.lerp_(p.detach(), 1 - self.cfg.cd_target_decay)

    def lr(self, step: int) -> float:
        """The learning rate of 0-based `step`: linear warm-up, then constant or a half cosine to 0 (`lr_decay`)."""
        warmup = self.cfg.warmup_steps
        if warmup > 0 and step < warmup:
            return self.cfg.lr * (step + 1) / warmup
        if self.cfg.lr_decay == "cosine":
            span = max(1, self.cfg.steps - warmup)
            return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
        return self.cfg.lr

    @torch.no_grad()
    def _update_ema(self) -> None:
        for (name, p_ema), p in zip(self.ema.named_parameters(), self.net.parameters()):
            if p.requires_grad:  # frozen parameters stay bit-identical (no lerp rounding)
                p_ema.lerp_(p.detach(), 1 - self.cfg.ema_decay)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    def train_step(self) -> torch.Tensor:
        """One optimizer step at the schedule's learning rate, the EMA (and a consistency target's) update; returns
        the step's logged loss, left on the device."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr(self.step)
        loss, logged = self.losses()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._update_ema()
        if self.target is not None:
            self._update_target()
        self.step += 1
        return logged.detach()

    def run(self, dtype: Optional[torch.dtype] = None) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        _trim_log(self.out / LOSS_LOG, self.step)
        log = open(self.out / LOSS_LOG, "a")
        # each step's logged loss stays on the device until the next saved state: reading a GPU value back makes the
        # host wait for the device, and once a step that wait would stop it queueing the next step's work ahead
        pending: list[torch.Tensor] = []
        started = time.perf_counter()
        try:
            while self.step < self.cfg.steps:
                if self._progressive and self.step and self._round(self.step) != self._round(self.step - 1):
                    self._next_round()
                pending.append(self.train_step())
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    bad = _write_losses(log, pending, self.step)
                    log.flush()
                    if bad is not None:  # weights that gave a non-finite loss are not saved over the last state
                        raise FloatingPointError(
                            f"training diverged: the loss at step {bad[0]} is {bad[1]!r} ({self.out / LOSS_LOG}); "
                            f"the state saved before it is kept; a resume repeats the same steps, so train again "
                            f"into a new folder with a lower lr or more warmup_steps")
                    self._save_state()
        finally:  # a run stopped between saved states logs its steps so far; a resume drops them (_trim_log)
            try:
                _write_losses(log, pending, self.step)
            finally:
                log.close()
        meta = dict(config=asdict(self.cfg), kernel=self.cfg.kernel, kernel_options=self.cfg.kernel_options,
                    prediction=self.cfg.prediction,
                    time_input=self.cfg.time_input, time_scale=self.cfg.time_scale, sigma_data=self.cfg.sigma_data,
                    image_size=self.cfg.image_size, dataset_hash=self.dataset_hash, steps=self.step,
                    train_seconds_this_run=round(time.perf_counter() - started, 1),
                    threads=torch.get_num_threads())
        return save_checkpoint(self.out / "model", self.ema, meta, dtype)


def _write_losses(log, pending: list[torch.Tensor], step: int) -> Optional[tuple[int, float]]:
    """Log the losses of steps step - len(pending) + 1 .. step, read from the device at once, and empty `pending`;
    returns the first non-finite one's (step, loss), else None."""
    if not pending:
        return None
    values = torch.stack(pending).tolist()
    # nine significant digits give back the float32 loss exactly, in fewer bytes than its float64 repr
    log.writelines(json.dumps({"step": step - len(values) + 1 + i, "loss": float(f"{v:.9g}")}) + "\n"
                   for i, v in enumerate(values))
    pending.clear()
    return next(((step - len(values) + 1 + i, v) for i, v in enumerate(values) if not math.isfinite(v)), None)


def train(cfg: TrainConfig, out: str | os.PathLike, device: str = "cpu", dtype: Optional[torch.dtype] = None) -> Path:
    return Trainer(cfg, out, device).run(dtype)


# the modules a training run executes (importing models.training loads these and models.atomic / models.registry,
# which hold no training arithmetic; tests/test_training.py checks the list against a fresh import)
TRAINING_MODULES = ("checkpoints", "datasets", "denoisers", "fast", "grids", "kernels", "noise", "optimal", "samplers",
                    "training", "unet", "uvit", "vae")
TRAINING_PACKAGES = ("torch", "numpy", "diffusers")


def training_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What a trained model depends on: the config with its defaults filled in, the training code (without its
    documentation) and the packages it runs on. A raw TOML's digest kept a model trained by older code, or under an
    older default the TOML leaves out, for good."""
    from models.versions import package_versions, source_digest

    here = Path(__file__).resolve().parent
    return {"config": asdict(cfg), "code": source_digest([here / f"{m}.py" for m in TRAINING_MODULES]),
            "versions": package_versions(TRAINING_PACKAGES)}


def train_once(raw: dict[str, Any], root: str | os.PathLike, name: str, device: str = "cpu") -> Path:
    """Train the config `raw` (TrainConfig's fields) once into `root/<name>-<digest>/` and return its model folder;
    the digest is `training_identity`'s, so a later call finds the model there only if nothing it depends on changed,
    and processes asking at once wait on one lock while the first trains (so the slow sweep trains each model once,
    also under pytest-xdist)."""
    cfg = TrainConfig(**raw)
    digest = hashlib.sha256(json.dumps(training_identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = Path(root) / f"{name}-{digest}"
    with file_lock(Path(root) / "locks" / f"{name}-{digest}.lock"):
        if not (out / "model" / "samenoise.json").is_file():
            train(cfg, out, device)
    return out / "model"


def main(argv: Optional[list[str]] = None) -> None:
    """python -m models.training CONFIG.toml OUT_DIR [--device cpu] [--float16]: train one zoo model."""
    import argparse
    import tomllib

    parser = argparse.ArgumentParser(prog="python -m models.training", description=main.__doc__)
    parser.add_argument("config", help="TOML file whose keys are TrainConfig fields")
    parser.add_argument("out", help="run folder (resumed when it holds a train_state.pt)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--float16", action="store_true", help="store the final weights in float16")
    args = parser.parse_args(argv)
    try:
        with open(args.config, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        parser.error(f"config {args.config} cannot be read: {e.strerror or e}")
    except tomllib.TOMLDecodeError as e:
        parser.error(f"config {args.config} is not valid TOML: {e}")
    valid = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - valid)
    if unknown:
        parser.error(f"{args.config}: unknown keys {unknown}; valid keys: {', '.join(sorted(valid))}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"output folder {out} is a file")
    try:  # every check of the config, its checkpoints and a saved state runs here, before a step is taken
        trainer = Trainer(TrainConfig(**raw), out, args.device)
    except (ValueError, TypeError, LookupError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        parser.error(f"{args.config}: {message}")
    print(trainer.run(torch.float16 if args.float16 else None))


if __name__ == "__main__":
    main()

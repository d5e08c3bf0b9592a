"""From names to samples: resolve sampler and grid once, run a bank's noises in fixed micro-batches,
and invert the ODE (the paper's f^-1, Theorem 1).

Determinism across batch sizes: CPU matrix kernels give row results that depend on how many rows
a call has (measured here: a (64 x 3072) @ (3072 x 4096) product differs in its low bits from the
same rows multiplied one at a time), but not on a row's position among a fixed number of rows.
So noises always run in micro-batches of exactly `micro_batch` rows, the last one padded.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from models.denoisers import sigma_per_row
from models.fast import parallel_map
from models.grids import make_grid
from models.kernels import Kernel
from models.noise import NoiseBank
from models.samplers import SAMPLERS, Denoiser, Sampled


class NonFiniteError(FloatingPointError):
    """The denoiser returned NaN or Inf; the message names the noise ids affected."""


def solve(D: Denoiser, x: torch.Tensor, kernel: Kernel, sampler: str = "dpm3", nfe: int = 20,
          grid: str = "edm", label=None, **grid_range) -> Sampled:
    """Sample from the sigma-space state x at the grid's sigma_max with at most `nfe` evaluations. The grid stays on
    the CPU: its 0-d entries act as scalars on any device, and the samplers' tests on them (the last step, sigma = 0)
    never wait for a GPU."""
    spec = SAMPLERS[sampler]
    sigmas = make_grid(grid, kernel, spec.steps(sampler, nfe), append_zero=True, **grid_range)
    return spec.fn(D, x, sigmas, _state_labels(label, x, D))


def _prior_range(kernel: Kernel, grid_range: dict) -> None:
    """A sampler that starts from the kernel's prior (a bank noise through `Kernel.initial_state`) or ends on it
    (`noise_of_state`) must integrate from the kernel's own sigma_max: a grid from another level would start from a
    state scaled for the wrong one (a sample std 4.0 instead of 0.5 from sigma_max 10 on the EDM kernel)."""
    hi = grid_range.get("sigma_max")
    if hi is not None and float(hi) != kernel.sigma_max:
        raise ValueError(f"sigma_max={hi} differs from the kernel's sigma_max {kernel.sigma_max:.6g}, where the bank "
                         f"noise starts; set it in the kernel instead (sigma_max for ve and edm, t_max for vp and "
                         f"subvp: make_kernel's parameters, a zoo entry's kernel_options), or call solve() with a "
                         f"state at that level")


def invert(D: Denoiser, x0: torch.Tensor, kernel: Kernel, sampler: str = "euler", steps: int = 100,
           grid: str = "edm", label=None, **grid_range) -> Sampled:
    """f^-1: integrate the same ODE from sigma_min up to sigma_max and return the bank noise eps
    (Theorem 1; the image is taken as the state at sigma_min). `sampled.nfe` counts evaluations."""
    if sampler == "consistency":
        raise ValueError("the one-step consistency sampler has no inverse ODE; use euler, heun or dpm1-3")
    if steps < 1:
        raise ValueError(f"an inversion needs at least 1 step, got steps={steps}")
    _prior_range(kernel, grid_range)
    sigmas = make_grid(grid, kernel, steps + 1, append_zero=False, **grid_range).flip(0)
    out = SAMPLERS[sampler].fn(D, x0.to(torch.float64), sigmas, _state_labels(label, x0, D))
    return Sampled(kernel.noise_of_state(out.x), out.nfe)


def roundtrip(D: Denoiser, y: torch.Tensor, kernel: Kernel, sampler: str = "heun", nfe: int = 99, grid: str = "edm",
              label=None, micro_batch: Optional[int] = None, device: str | torch.device = "cpu",
              workers: int = 1) -> torch.Tensor:
    """f(f^-1(y)): invert the images y to their noises with Heun over as many steps as the sampler takes for `nfe`
    (for Heun itself: 2 steps - 1 evaluations), then sample them back (Theorem 1). With `micro_batch`, y runs in
    micro-batches of that many rows on `device` and `workers`, as `generate` runs noises; the result is on the CPU."""

    labels = _labels(label, len(y), getattr(D, "num_classes", None))

    def one(y: torch.Tensor, label) -> torch.Tensor:
        steps = SAMPLERS[sampler].steps(sampler, nfe)
        eps = invert(D, y, kernel, "heun", steps=steps, grid=grid, label=label).x
        return solve(D, kernel.initial_state(eps), kernel, sampler, nfe, grid=grid, label=label).x

    if micro_batch is None:  # the labels as `_labels` made them: a class given as an int is one per row
        return one(y, None if labels is None else labels.to(y.device))
    device = torch.device(device)
    return torch.cat(_in_micro_batches(
        lambda chunk, start: one(chunk.to(device), _chunk_labels(labels, start, micro_batch, device)).cpu(),
        y, micro_batch, device, workers))


def _labels(label, n: int, num_classes: Optional[int] = None) -> Optional[torch.Tensor]:
    """One class for every row, or one per row, as an int64 tensor of n; None stays None. Labels are classes:
    a float (1.7) is refused, not cut to 1, and so is a class outside [0, num_classes) of a conditional denoiser
    (an embedding lookup would fail with no number named, or on a GPU with a device-side assert)."""
    if label is None:
        return None
    try:
        given = torch.as_tensor(label)
    except (TypeError, ValueError, RuntimeError):  # a string ("random") or a ragged list: torch's words only
        raise ValueError(f"labels are integer classes (one int, or one per noise id), got {label!r}") from None
    if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
        raise ValueError(f"labels are integer classes, got {given.dtype} {given.reshape(-1)[:4].tolist()}")
    labels = given.to(torch.int64)
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise ValueError(f"label must be one class or one per noise id ({n}), got shape {tuple(labels.shape)}")
    if num_classes is not None and len(labels):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise ValueError(f"labels {bad.unique()[:8].tolist()} are outside this denoiser's classes: valid "
                             f"0..{num_classes - 1} (num_classes={num_classes})")
    return labels


def _state_labels(label, x: torch.Tensor, D: Denoiser) -> Optional[torch.Tensor]:
    """`_labels` for the rows of a state x, on x's device: a count other than x's rows was taken (one label for two
    rows), an int failed inside the network, a class out of range failed in the embedding without naming it."""
    labels = _labels(label, len(x), getattr(D, "num_classes", None))
    return None if labels is None else labels.to(x.device)


def _chunk_labels(labels: Optional[torch.Tensor], start: int, micro_batch: int, device: torch.device
                  ) -> Optional[torch.Tensor]:
    """A micro-batch's labels, from row `start`, on `device`; padding rows take the first row's class (a class the
    denoiser has: a conditional D* refuses a class without training images, and class 0 may be one)."""
    if labels is None:
        return None
    lab = labels[start:start + micro_batch].to(device)
    return torch.cat([lab, lab[:1].expand(micro_batch - len(lab))]) if len(lab) < micro_batch else lab


def _in_micro_batches(fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, micro_batch: int,
                      device: torch.device, workers: int) -> list[torch.Tensor]:
    """fn(chunk, start) on x's rows in micro-batches of exactly `micro_batch` rows (the last padded with zeros), on
    `workers` threads on a CPU (one intra-op thread each, models/fast.py) and one after the other on a GPU; each
    result is cut back to its chunk's real rows."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be at least 1, got {micro_batch}")

    def one(start: int) -> torch.Tensor:
        chunk = x[start:start + micro_batch]
        n = len(chunk)
        if n < micro_batch:
            chunk = torch.cat([chunk, chunk.new_zeros((micro_batch - n,) + chunk.shape[1:])])
        return fn(chunk, start)[:n]

    return parallel_map(one, range(0, len(x), micro_batch), workers if device.type == "cpu" else 1)


class _FiniteChecked:
    """Records the rows whose denoiser output is NaN/Inf, on the device (no host synchronisation per step);
    `check()` after the micro-batch raises naming their noise ids and, for each, the first sigma it went bad at."""

    def __init__(self, D: Denoiser, ids: Sequence[int]):
        self.D, self.ids = D, list(ids)
        self.first_bad: Optional[torch.Tensor] = None  # per row: the first sigma with a NaN/Inf output, else 0

    def __call__(self, x, sigma, label=None):
        out = self.D(x, sigma, label)
        bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1)
        sigma_rows = sigma_per_row(sigma, out)
        if self.first_bad is None:
            self.first_bad = torch.zeros(len(out), dtype=torch.float64, device=out.device)
        self.first_bad = torch.where(bad & (self.first_bad == 0), sigma_rows, self.first_bad)
        return out

    def check(self) -> None:
        if self.first_bad is None:
            return
        rows = (self.first_bad[:len(self.ids)] != 0).nonzero().reshape(-1).tolist()
        if rows:
            sigmas = [f"{v:.4g}" for v in self.first_bad[rows].tolist()]
            raise NonFiniteError(f"denoiser returned NaN/Inf for noise ids {[self.ids[i] for i in rows]} (first at "
                                 f"sigma {', '.join(sigmas)})")


def generate(D: Denoiser, kernel: Kernel, bank: NoiseBank, ids: Optional[Sequence[int]] = None,
             sampler: str = "dpm3", nfe: int = 20, grid: str = "edm", label: Optional[int | torch.Tensor] = None,
             micro_batch: int = 16, device: str | torch.device = "cpu",
             run: Optional[Callable[..., Sampled]] = None, workers: int = 1, **grid_range) -> Sampled:
    """Sample the bank's noises `ids` (default all) with one model; the result for a noise does not
    depend on which other ids are asked for, or in what batch size. `label`: one class for every noise,
    or a tensor of one class per id. `run(D, x, label, rows)`, when given, replaces the ODE solve (e.g.
    posterior sampling); `rows` are the positions in `ids` of the micro-batch's rows, -1 for padding. On the
    CPU, `workers` threads share the micro-batches, one intra-op thread each (models/fast.py); on a GPU the
    micro-batches run one after the other."""
    _prior_range(kernel, grid_range)
    shape = getattr(D, "sample_shape", None)
    if shape is not None:
        bank.check_shape(shape)
    ids = bank.ids.tolist() if ids is None else [int(i) for i in ids]
    eps = bank.take(ids)
    device = torch.device(device)
    labels = _labels(label, len(ids), getattr(D, "num_classes", None))
    nfe_used = []

    def one(chunk: torch.Tensor, start: int) -> torch.Tensor:
        n = min(micro_batch, len(ids) - start)
        x = kernel.initial_state(chunk.to(device=device, dtype=torch.float64))
        lab = _chunk_labels(labels, start, micro_batch, device)
        checked = _FiniteChecked(D, ids[start:start + n])
        if run is None:
            out = solve(checked, x, kernel, sampler, nfe, grid, lab, **grid_range)
        else:
            rows = torch.cat([torch.arange(start, start + n), torch.full((micro_batch - n,), -1)])
            out = run(checked, x, lab, rows)
        checked.check()
        nfe_used.append(out.nfe)
        return out.x.detach().cpu()

    outs = _in_micro_batches(one, eps, micro_batch, device, workers)
    return Sampled(torch.cat(outs) if outs else eps.to(torch.float64)[:0], nfe_used[-1] if nfe_used else 0,
                   torch.tensor(ids, dtype=torch.int64))

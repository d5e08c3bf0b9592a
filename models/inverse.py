"""Inverse problems with a diffusion prior: inpainting by deterministic DPS (paper Sec. 4, Appendix F).

Algorithm 1 of the paper, in sigma-space: at every step the denoiser gives x0_hat = D(x; sigma) with
its gradient, DPM-Solver++ takes the ODE step, and the data-consistency gradient of
||u - A(x0_hat)||^2 is subtracted with weight xi_i = 1. Nothing random is drawn, so the result is
a function of the initial noise and the observation only.

The paper's Algorithm 1 works on x_t = s_t x_hat; its update x_{i-1} = x' - xi grad_{x_i} L becomes
x_hat_{i-1} = x_hat' - xi grad_{x_hat_i} L / (s_i s_{i-1}) here, with s the model's own kernel's (s = 1 for VE and
EDM kernels). Two readings are the suite's where the paper leaves a choice:
- The coordinates. Algorithm 1 takes s_t and sigma_t as inputs, so the update is made in the model's own kernel; the
  paper's DPS models (DDPM, U-ViT, DiT: Fig. 7) are all VP, where those are VP coordinates, while the embedded zoo's
  are EDM (s = 1), where the same xi guides (1 + sigma_i^2)^(1/2) (1 + sigma_(i-1)^2)^(1/2) times more weakly than in
  VP coordinates of the same sigma. Measured once on the zoo (64 noises, README "How a case is decided"): in VP
  coordinates the guidance at large sigma pushes the state off the data (5-13% of pixels saturated against 1-2%, the
  hidden square 36-53 from the truth against 15-25 on 0-255) and RP within a family falls from 0.98 to 0.45-0.50.
- The step. Algorithm 1's gradient of the squared norm, 2 J^T (A x0_hat - u), is taken as written (Eq. 22 of the
  appendix writes J^T (A x0_hat - u), half of it); with xi = 1 a step near sigma 0, where J is about the identity on
  the observed pixels, moves them past the observation by the residual rather than onto it.

One departure from Appendix F: its 34 posterior steps are 33 steps of singlestep DPM-Solver-3 and one of order 1,
100 evaluations; here each of the 34 steps is one multistep DPM-Solver++(3M) step (orders 1 and 2 first, the last
step returning D), 34 evaluations. The gradient steps are the same 33 (the paper's 34th update is discarded too:
line 7 returns x0_hat); the ODE between them is integrated more coarsely. The paper's two extra evaluations a
step need no gradient, so they would add 66 forwards to the 34 forward-and-backward steps (about three forwards
each): some 60% more work, where DPS is already 4.1 of the 17.6 TFLOP that a cold main job computes on the embedded
zoo (README "Speed").
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional

import torch

from models.grids import make_grid
from models.kernels import Kernel
from models.samplers import Denoiser, DPMHistory, Sampled, dpmpp_step

# Appendix F: centred square masks covering 25% ("easy", 16x16 of 32x32) and 61% ("hard", 25x25) of the image.
MASK_FRACTIONS = {"easy": 0.25, "hard": 0.61}
DPS = "dps"  # the sampler's name in a case's Run (outside models.samplers.SAMPLERS: it needs an observation)
DPS_STEPS = 34  # Appendix F: N_dps = 34 posterior sampling steps (one multistep evaluation each: see the docstring)


def inpainting_mask(size: int, fraction: float) -> torch.Tensor:
    """keep (1, 1, size, size) float64: 0 on a centred square whose side is round(sqrt(fraction) * size),
    1 elsewhere; A(x) = keep * x observes the pixels outside the square."""
    if not 0 < fraction < 1:
        raise ValueError(f"mask fraction must be in (0, 1), got {fraction}")
    side = round(math.sqrt(fraction) * size)
    if not 0 < side < size:  # no hole (nothing to inpaint) or no observation (plain sampling, scored everywhere)
        raise ValueError(f"mask fraction {fraction} of a {size} px image rounds to a square of side {side}: it must "
                         f"hide at least one pixel and observe at least one row, a fraction in about "
                         f"({0.5 / size:.3g}^2, {(size - 0.5) / size:.3g}^2)")
    lo = (size - side) // 2
    keep = torch.ones(1, 1, size, size, dtype=torch.float64)
    keep[..., lo:lo + side, lo:lo + side] = 0
    return keep


def make_mask(name: str, size: int) -> torch.Tensor:
    if name not in MASK_FRACTIONS:
        raise ValueError(f"unknown mask {name!r}; valid masks: {', '.join(MASK_FRACTIONS)}")
    return inpainting_mask(size, MASK_FRACTIONS[name])


def dps(D: Denoiser, x: torch.Tensor, kernel: Kernel, sigmas: torch.Tensor, observed: torch.Tensor,
        keep: torch.Tensor, label=None, xi: float = 1.0, order: int = 3) -> Sampled:
    """Deterministic DPS with DPM-Solver++ (paper Algorithm 1, xi_i = xi): x is the sigma-space state at
    sigmas[0], `observed` = keep * truth in the model's data range. `sigmas` falls strictly to 0, so the result is
    the last x0_hat."""
    _check_settings(xi, order)
    _check_grid(sigmas)
    if observed.shape != x.shape:
        raise ValueError(f"the observation must have the state's shape {tuple(x.shape)}, got {tuple(observed.shape)}")
    if (keep.dim() != x.dim() or keep.shape[-2:] != x.shape[-2:]
            or any(k not in (1, n) for k, n in zip(keep.shape, x.shape))):
        raise ValueError(f"the mask `keep` must cover the state's image, shape (1 or {x.shape[0]}, 1 or "
                         f"{x.shape[1]}, {x.shape[2]}, {x.shape[3]}), got {tuple(keep.shape)}")
    if not ((keep == 0) | (keep == 1)).all():
        raise ValueError(f"the mask `keep` must hold only 0 (hidden) and 1 (observed), got values "
                         f"{keep.unique()[:4].tolist()}")
    if not (keep == 0).any() or not (keep == 1).any():  # as inpainting_mask: nothing to inpaint, or nothing observed
        raise ValueError(f"the mask `keep` must hide some pixels and observe others, got all "
                         f"{'observed' if bool((keep == 1).all()) else 'hidden'}")
    history = DPMHistory()
    keep = keep.to(x)
    observed = observed.to(x)
    s_of = lambda sigma: float(kernel.s_of_sigma(torch.as_tensor(sigma, dtype=torch.float64)))  # CPU grid: no sync
    with deterministic_backward(x.device):
        for i in range(len(sigmas) - 1):
            s, t = sigmas[i], sigmas[i + 1]
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():  # also at the last step, whose gradient goes unused: every call has gradients
                denoised = D(xg, s, label)
                if t > 0:  # the last step returns x0_hat itself (Algorithm 1, line 7): no correction, no backward
                    residual = ((observed - keep * denoised) ** 2).sum()  # rows are independent: one grad serves all
                    grad, = torch.autograd.grad(residual, xg)
            x, history = dpmpp_step(x.detach(), s, t, denoised.detach(), history, order)
            if t > 0:
                x = x - xi * grad / (s_of(s) * s_of(t))
    return Sampled(x.detach(), len(sigmas) - 1)


@contextmanager
def deterministic_backward(device: torch.device):
    """On a GPU, backward passes that give the same bits on every run: the math attention kernel (the memory-efficient
    one's backward is not deterministic, PyTorch's documentation of scaled_dot_product_attention) and cuDNN's
    deterministic convolutions. DPS differentiates every network call, and its sets are stored as a function of the
    noise and the observation. On a CPU, nothing changes."""
    if torch.device(device).type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    previous = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.cudnn.deterministic = previous


def _check_settings(xi: float, order: int) -> None:
    if not (isinstance(xi, (int, float)) and not isinstance(xi, bool) and math.isfinite(xi) and xi >= 0):
        raise ValueError(f"the DPS step size xi must be a finite number >= 0, got {xi!r}")  # a negative one ascends
    if type(order) is not int or order not in (1, 2, 3):  # 2.0 failed later as a slice index
        raise ValueError(f"DPS steps with DPM-Solver++ of order 1, 2 or 3, got order {order!r}")


def _check_grid(sigmas: torch.Tensor) -> None:
    """A grid that falls strictly and ends at 0: on another, dps would return a state, not an image (a grid without
    its final 0 returned the state at sigma_min), or step the wrong way."""
    values = torch.as_tensor(sigmas).reshape(-1)
    if len(values) < 2 or float(values[-1]) != 0 or not bool((values[1:] < values[:-1]).all()):
        levels = [f"{v:.4g}" for v in values.tolist()]
        shown = levels if len(levels) <= 5 else levels[:3] + ["...", levels[-1]]
        raise ValueError(f"DPS needs a grid of two or more levels falling strictly to 0, got [{', '.join(shown)}]")


def dps_runner(kernel: Kernel, truth: torch.Tensor, keep: torch.Tensor, steps: int = DPS_STEPS, grid: str = "edm",
               xi: float = 1.0, order: int = 3):
    """A `run` for models.generate.generate: row r of a micro-batch observes keep * truth[r] (truth: images in the
    model's data range [-1, 1], one per noise id position)."""
    _check_settings(xi, order)
    if type(steps) is not int or steps < 2:  # one level above 0 is a grid with no step at sigma > 0: no guidance
        raise ValueError(f"DPS needs steps >= 2 (one step to sigma 0 is unguided sampling), got {steps!r}")
    if truth.dim() != 4 or truth.shape[-2:] != keep.shape[-2:]:
        raise ValueError(f"the ground truth must be images (N, C, H, W) of the mask's size {tuple(keep.shape[-2:])}, "
                         f"got shape {tuple(truth.shape)}")
    if not bool(torch.isfinite(truth).all()) or float(truth.abs().max()) > 1 + 1e-6:
        raise ValueError(f"the ground truth must be finite images in the data range [-1, 1], got values in "
                         f"[{float(truth.min()):.4g}, {float(truth.max()):.4g}]")
    sigmas = make_grid(grid, kernel, steps, append_zero=True)

    def run(D: Denoiser, x: torch.Tensor, label: Optional[torch.Tensor], rows: torch.Tensor) -> Sampled:
        if int(rows.max()) >= len(truth):
            raise ValueError(f"noise position {int(rows.max())} has no ground truth: {len(truth)} images given")
        if truth.shape[1] != x.shape[1]:  # one grey channel was broadcast into every channel of an RGB model
            raise ValueError(f"the ground truth has {truth.shape[1]} channel(s), the model samples {x.shape[1]}: "
                             f"give observations of the model's channels")
        obs = torch.zeros_like(x)
        real = rows >= 0
        obs[real] = (keep * truth[rows[real]].to(torch.float64)).to(x)
        return dps(D, x, kernel, sigmas, obs, keep, label, xi, order)

    # every network call of `dps` has gradients on, so it runs the module itself whatever the network's runner
    # (models/fast.py): a traced or compiled runner cannot change these samples (fixtures/samples.py keys them so)
    run.module_only = True
    return run

"""Deterministic samplers of the probability-flow ODE in sigma-space.

Every sampler is `sample_<name>(D, x, sigmas, label=None) -> Sampled` where D(x, sigma, label)
returns x0_hat, x is the state at sigmas[0] and sigmas is the step grid (decreasing to sample,
increasing to invert; a final 0 makes the last step return D). No sampler draws random numbers.
The ODE is dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, Eq. 4 with s(t) = 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from models.kernels import append_dims
from models.registry import Registry

Denoiser = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Sampled:
    """A batch of samples in float: a solver's end state, or generate()'s images with the bank ids they came from."""

    x: torch.Tensor
    nfe: int  # denoiser evaluations actually made (per noise)
    ids: Optional[torch.Tensor] = None  # the bank noise ids of x's rows, when known


def _d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """ODE slope dx/dsigma = (x - D) / sigma."""
    return (x - denoised) / sigma


def _rows(x: torch.Tensor, *sigmas):
    """Sigmas as given when scalars; one per row of x, broadcastable, when vectors."""
    return tuple(append_dims(s, x.ndim) if torch.as_tensor(s).ndim else s for s in sigmas)


def euler_step(x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """One Euler step of the ODE from s_from to s_to; in sigma-space exactly a DDIM step with eta = 0 (Karras et al.
    2022, Sec. 3). Sigmas are scalars or one per row."""
    s_from, s_to = _rows(x, s_from, s_to)
    return x + (s_to - s_from) * _d(x, s_from, denoised)


def _on_device(sigma) -> bool:
    """Whether sigmas live on an accelerator, where reading one back makes the host wait."""
    return torch.as_tensor(sigma).device.type != "cpu"


def heun_step(D: Denoiser, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, label=None) -> torch.Tensor:
    """One step of Heun's method from s to t (Karras et al. 2022, Algorithm 2, S_churn = 0): an Euler step, then the
    trapezoidal correction unless t is 0. Sigmas are scalars or one per row."""
    s_, t_ = _rows(x, s, t)
    d = _d(x, s_, D(x, s, label))
    x_next = x + (t_ - s_) * d
    if _on_device(t):  # sigmas on the device, one per row (training's teacher steps): the correction for every row,
        # kept where t > 0, so that the host never waits for the device to choose
        d_next = _d(x_next, t_, D(x_next, t, label))
        return torch.where(t_ == 0, x_next, x + (t_ - s_) * 0.5 * (d + d_next))
    last = torch.as_tensor(t) == 0
    if bool(last.any()) and not bool(last.all()):
        raise ValueError("heun_step: some rows end at sigma 0 and others do not; step them separately")
    if not bool(last.any()):
        d_next = _d(x_next, t_, D(x_next, t, label))
        x_next = x + (t_ - s_) * 0.5 * (d + d_next)
    return x_next


@torch.no_grad()
def sample_euler(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, label=None) -> Sampled:
    """Euler's method, i.e. DDIM with eta = 0."""
    for i in range(len(sigmas) - 1):
        x = euler_step(x, sigmas[i], sigmas[i + 1], D(x, sigmas[i], label))
    return Sampled(x, len(sigmas) - 1)


@torch.no_grad()
def sample_heun(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, label=None) -> Sampled:
    """Heun's 2nd-order method, Algorithm 2 of Karras et al. (2022) with S_churn = 0."""
    nfe = 0
    for i in range(len(sigmas) - 1):
        x = heun_step(D, x, sigmas[i], sigmas[i + 1], label)
        nfe += 1 if sigmas[i + 1] == 0 else 2
    return Sampled(x, nfe)


@dataclass(frozen=True)
class DPMHistory:
    """What DPM-Solver++ carries from step to step: earlier D evaluations and step lengths, most recent first."""

    denoised: tuple[torch.Tensor, ...] = ()
    hs: tuple[torch.Tensor, ...] = ()


def dpmpp_step(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, denoised: torch.Tensor, history: DPMHistory,
               order: int = 2) -> tuple[torch.Tensor, DPMHistory]:
    """One step of DPM-Solver++ multistep of order 1, 2 or 3 (Lu et al. 2022b, data prediction): the state at
    sigma t from the state x at sigma s, its D(x; s) and the history of earlier steps; returns the new state and
    the history the next step needs. One step at a time, so that a caller can act between steps (deterministic
    DPS, models/inverse.py).

    In sigma-space (alpha = 1, lambda = -log sigma, h = lambda_t - lambda_s), the exact solution
    x_t = (sigma_t / sigma_s) x_s + sigma_t int e^lambda x0(lambda) dlambda is integrated with a
    Taylor expansion of x0 in lambda whose derivatives come from earlier D evaluations. The first
    steps use the orders the history allows; a step to sigma = 0 returns D (lambda = inf).

    Order 2 is the Taylor form of DPM-Solver++(2M), x_t = (sigma_t / sigma_s) x_s - (e^-h - 1) D_0
    + (phi_1 / h + 1) (D_0 - D_1) h / h_1: the authors' code's solver_type "taylor", diffusers'
    `solver_type="heun"`. The paper's Algorithm 2 writes the second-order term in the midpoint form,
    (1 + 1 / 2r) D_0 - (1 / 2r) D_1 (k-diffusion's dpmpp_2m, diffusers' default "midpoint"): also second order,
    but not the same samples at a few steps. Order 3 is the multistep update of the authors' code and diffusers'
    `solver_order=3` but for one factor: it takes the whole second-order term, -phi_3 h^2 x0'', whose x0'' comes
    from the last three evaluations, where theirs takes half of it (their D2, (D1_0 - D1_1) / (r0 + r1), is
    h^2 x0'' / 2 to leading order, and multiplies the same -phi_3). So this order 3 converges at order 3, theirs at
    about 2 (tests/test_samplers.py: slopes 3.09 against 1.76 on the EDM grid), and their samples are not these;
    at few steps theirs can be the closer to the exact ODE solution (16 steps of that test: 1.3e-2 against 4.7e-2).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
    hist, hs = (denoised,) + history.denoised[:order - 1], history.hs
    if t == 0:
        return hist[0], DPMHistory(hist, hs)
    h = torch.log(s) - torch.log(t)
    k = len(hist)
    phi1 = torch.expm1(-h)  # e^{-h} - 1
    x = (t / s) * x - phi1 * hist[0]
    if k >= 2:
        phi2 = phi1 / h + 1  # h phi2 = int_0^h e^{tau - h} tau dtau
        d1_0 = (hist[0] - hist[1]) * (h / hs[0])  # ~ h x0'
        if k == 2:
            x = x + phi2 * d1_0
        else:
            phi3 = phi2 / h - 0.5  # -h^2 phi3 = int_0^h e^{tau - h} tau^2 / 2 dtau
            d1_1 = (hist[1] - hist[2]) * (h / hs[1])
            r0, r1 = hs[0] / h, hs[1] / h
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))  # ~ h x0'
            d2 = (d1_0 - d1_1) * (2 / (r0 + r1))  # ~ h^2 x0''
            x = x + phi2 * d1 - phi3 * d2
    return x, DPMHistory(hist, ((h,) + hs)[:2])


@torch.no_grad()
def sample_dpmpp(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, label=None, order: int = 2) -> Sampled:
    """DPM-Solver++ multistep of order 1, 2 or 3 over the whole grid (see dpmpp_step)."""
    history = DPMHistory()
    for i in range(len(sigmas) - 1):
        x, history = dpmpp_step(x, sigmas[i], sigmas[i + 1], D(x, sigmas[i], label), history, order)
    return Sampled(x, len(sigmas) - 1)


@torch.no_grad()
def sample_consistency(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, label=None) -> Sampled:
    """One-step consistency sampling x0 = f(x_T, sigma_max) (Song et al. 2023, Algorithm 1, one step)."""
    return Sampled(D(x, sigmas[0], label), 1)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler, the fewest evaluations at which it has its stated order, and how an NFE
    budget becomes a number of grid steps (ending at sigma = 0). A multistep DPM-Solver++ of order k reaches
    order k at its k-th step, and its last step, to sigma = 0, returns D: so k + 1 evaluations at the least (at
    k, dpm2 would compute what dpm1 does and dpm3 what dpm2 does)."""

    fn: Callable[..., Sampled]
    min_nfe: int
    steps_for_budget: Callable[[int], int]
    max_nfe: Optional[int] = None

    def steps(self, name: str, nfe: int) -> int:
        """The most steps whose evaluations fit in `nfe`; the run reports the exact NFE used."""
        if nfe < self.min_nfe or (self.max_nfe is not None and nfe > self.max_nfe):
            bound = f"exactly {self.min_nfe}" if self.max_nfe == self.min_nfe else f"at least {self.min_nfe}"
            raise ValueError(f"sampler {name!r} needs {bound} denoiser evaluations, got NFE={nfe}")
        return self.steps_for_budget(nfe)


def _one_per_step(nfe: int) -> int:
    return nfe


SAMPLERS: Registry[SamplerSpec] = Registry("sampler", {
    "euler": SamplerSpec(sample_euler, 1, _one_per_step),
    "ddim": SamplerSpec(sample_euler, 1, _one_per_step),
    "heun": SamplerSpec(sample_heun, 3, lambda nfe: (nfe + 1) // 2),  # 2 steps - 1 evaluations
    "dpm1": SamplerSpec(partial(sample_dpmpp, order=1), 1, _one_per_step),
    "dpm2": SamplerSpec(partial(sample_dpmpp, order=2), 3, _one_per_step),
    "dpm3": SamplerSpec(partial(sample_dpmpp, order=3), 4, _one_per_step),
    "consistency": SamplerSpec(sample_consistency, 1, _one_per_step, max_nfe=1),
})


def same_samples_as(name: str, nfe: int) -> tuple[str, int]:
    """The (sampler, NFE) that names the same computation as (name, nfe), for keying stored samples: an alias runs
    the first registered sampler with the same function (`ddim` is `euler` in sigma-space, Karras et al. 2022, Sec.
    3), and an NFE budget that buys no more grid steps than a smaller one is that smaller one (heun at 36 runs the
    18 steps, 35 evaluations, of heun at 35). Names outside the registry (a run with its own solve) are returned
    as they are."""
    if name not in SAMPLERS:
        return name, nfe
    spec = SAMPLERS[name]
    first = next(n for n, s in SAMPLERS.items() if s.fn is spec.fn)
    steps = spec.steps(name, nfe)
    while nfe > spec.min_nfe and spec.steps_for_budget(nfe - 1) == steps:
        nfe -= 1
    return first, nfe

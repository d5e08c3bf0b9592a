"""Perturbation kernels p_t(x_t | x_0) = N(s(t) x_0, s(t)^2 sigma(t)^2 I) (paper, Appendix D, Eq. 3).

Every kernel is described by s(t), sigma(t) and the inverse t(sigma). Samplers work in
sigma-space, x_hat = x / s(t), where every kernel gives the same probability-flow ODE
dx_hat/dsigma = (x_hat - D(x_hat; sigma)) / sigma (Karras et al. 2022, Eq. 4 with s = 1).
All schedule arithmetic is float64.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from models.registry import Registry

Tensorish = float | torch.Tensor


def as64(v: Tensorish) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


class Kernel:
    """s(t), sigma(t), t(sigma) on [t_min, t_max], and the prior the sampler starts from.

    `prior_scale` is the std of the initial noise x_T = prior_scale * eps in x-space:
    1 for VP and sub-VP, sigma_max for VE and EDM (paper, Appendix B, "Initial Noise Consistency").
    """

    name: str
    t_min: float
    t_max: float

    def s(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    def t(self, sigma: Tensorish) -> torch.Tensor:
        raise NotImplementedError

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_max))

    @property
    def prior_scale(self) -> float:
        return 1.0

    def round_sigma(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The noise levels a step grid may use: EDM's iDDPM baseline pickles round every grid to their own discrete
        levels (as EDM's sampler does); everywhere else the grid stays as it is (networks of a discrete chain take
        their nearest step through their time input instead, while the solver steps between the grid's own levels:
        diffusers' DPMSolverMultistepScheduler does the same with use_karras_sigmas, continuous Karras sigmas and
        rounded timesteps)."""
        return sigmas

    def s_of_sigma(self, sigma: Tensorish) -> torch.Tensor:
        return self.s(self.t(sigma))

    def to_sigma_space(self, x: torch.Tensor, t: Tensorish) -> torch.Tensor:
        """x_hat = x / s(t)."""
        return x / append_dims(self.s(t).to(x), x.ndim)

    def from_sigma_space(self, x_hat: torch.Tensor, t: Tensorish) -> torch.Tensor:
        """x = s(t) x_hat."""
        return x_hat * append_dims(self.s(t).to(x_hat), x_hat.ndim)

    def initial_state(self, eps: torch.Tensor) -> torch.Tensor:
        """sigma-space start of sampling from a bank noise: x_hat_T = prior_scale * eps / s(t_max)."""
        return eps * (self.prior_scale / float(self.s(self.t_max)))

    def noise_of_state(self, x_hat_T: torch.Tensor) -> torch.Tensor:
        """Inverse of `initial_state`: the bank noise eps that starts at x_hat_T (used by f^-1)."""
        return x_hat_T * (float(self.s(self.t_max)) / self.prior_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma in [{self.sigma_min:.4g}, {self.sigma_max:.4g}])"


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so a scalar or (B,) coefficient broadcasts against a (B, ...) tensor."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _check_numbers(kernel, **values: float) -> None:
    """Each of a kernel's settings must be a finite number > 0 (a negative beta_min gave NaN noise levels, a zero
    sigma_min log(0)); the error names the kernel, the setting and its value."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{kernel.name} kernel: {name} must be a finite number > 0, got {value!r}")


def _check_order(kernel, low_name: str, low: float, high_name: str, high: float, strict: bool = True) -> None:
    if low > high or (strict and low == high):
        raise ValueError(f"{kernel.name} kernel: {low_name} {low!r} must be {'below' if strict else 'at most'} "
                         f"{high_name} {high!r}")


class _LinearBeta:
    """Integrated linear beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021, Eq. 32).

    u(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2, and its inverse.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_d = beta_min, beta_max - beta_min

    def u(self, t: Tensorish) -> torch.Tensor:
        t = as64(t)
        return self.beta_min * t + 0.5 * self.beta_d * t**2

    def t_of_u(self, u: Tensorish) -> torch.Tensor:
        """The positive root of u(t), as 2u / (beta_min + sqrt(beta_min^2 + 2 beta_d u)): the textbook form
        (sqrt(...) - beta_min) / beta_d divides 0 by 0 for a constant beta (beta_d = 0) and cancels for a small one."""
        u = as64(u)
        return 2 * u / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * self.beta_d * u))


class _LinearBetaKernel(Kernel):
    """VP and sub-VP share the linear beta schedule, t in [t_min, 1] and the mean s = exp(-u/2); they differ
    only in sigma(t) and its inverse."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0):
        _check_numbers(self, beta_min=beta_min, beta_max=beta_max, t_min=t_min, t_max=t_max)
        _check_order(self, "beta_min", beta_min, "beta_max", beta_max, strict=False)  # equal: a constant beta
        _check_order(self, "t_min", t_min, "t_max", t_max)
        self.beta = _LinearBeta(beta_min, beta_max)
        self.t_min, self.t_max = t_min, t_max

    def s(self, t):
        return torch.exp(-0.5 * self.beta.u(t))


class VP(_LinearBetaKernel):
    """Continuous VP SDE: s = exp(-u/2), sigma = sqrt(e^u - 1) (Karras et al. 2022, Table 1)."""

    name = "vp"

    def sigma(self, t):
        return torch.sqrt(torch.expm1(self.beta.u(t)))

    def t(self, sigma):
        return self.beta.t_of_u(torch.log1p(as64(sigma) ** 2))


class SubVP(_LinearBetaKernel):
    """sub-VP SDE: same mean as VP, std 1 - e^{-u} = (VP std)^2 (Song et al. 2021, Eq. 29).

    s sigma = 1 - e^{-u} with s = e^{-u/2} gives sigma = 2 sinh(u / 2).
    """

    name = "subvp"

    def sigma(self, t):
        return 2 * torch.sinh(0.5 * self.beta.u(t))

    def t(self, sigma):
        return self.beta.t_of_u(2 * torch.asinh(0.5 * as64(sigma)))


class VPDiscrete(Kernel):
    """DDPM's discrete VP chain (Ho et al. 2020): alpha_bar_n = prod_{k<=n} (1 - beta_k), n = 0..T-1.

    s_n = sqrt(alpha_bar_n), sigma_n = sqrt((1 - alpha_bar_n) / alpha_bar_n). Between integer
    timesteps t is interpolated linearly in log sigma, so t(sigma(t)) = t holds for every real t
    in [0, T-1], and s = 1 / sqrt(1 + sigma^2) keeps the VP identity exact.
    """

    name = "vp-discrete"

    def __init__(self, betas: torch.Tensor | None = None, beta_start: float = 1e-4, beta_end: float = 0.02,
                 num_train_timesteps: int = 1000):
        if betas is None:
            if type(num_train_timesteps) is not int or num_train_timesteps < 2:
                raise ValueError(f"{self.name} kernel: num_train_timesteps must be a whole number >= 2, got "
                                 f"{num_train_timesteps!r}")
            _check_numbers(self, beta_start=beta_start, beta_end=beta_end)
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        betas = as64(betas)
        # beta in (0, 1): a zero step repeats a level (t(sigma) searches a strictly increasing table), a beta of 1
        # ends the chain at alpha_bar 0 (sigma infinite)
        if betas.ndim != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            bad = betas if betas.ndim != 1 or len(betas) < 2 else betas[~((betas > 0) & (betas < 1))][:3]
            raise ValueError(f"{self.name} kernel: betas must be a 1-D chain of >= 2 values in (0, 1), got "
                             f"shape {tuple(betas.shape)}, e.g. {bad.tolist()[:3]}")
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.log_sigmas = 0.5 * torch.log((1 - alpha_bar) / alpha_bar)
        self.t_min, self.t_max = 0.0, float(len(alpha_bar) - 1)
        self._tables = {self.log_sigmas.device: self.log_sigmas}
        self._log_range = (float(self.log_sigmas[0]), float(self.log_sigmas[-1]))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.log_sigmas)

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        """log sigma_n on the query's device (a GPU run asks with the rows' sigmas on the GPU), copied once."""
        if like.device not in self._tables:
            self._tables[like.device] = self.log_sigmas.to(like.device)
        return self._tables[like.device]

    def sigma(self, t):
        t = as64(t).clamp(self.t_min, self.t_max)
        table = self._table(t)
        lo = t.floor().long().clamp(max=len(table) - 2)
        w = t - lo
        return torch.exp((1 - w) * table[lo] + w * table[lo + 1])

    def s(self, t):
        return torch.rsqrt(1 + self.sigma(t) ** 2)

    def t(self, sigma):
        sigma = as64(sigma)
        table = self._table(sigma)
        log_sigma = torch.log(sigma).clamp(*self._log_range)
        hi = torch.searchsorted(table, log_sigma.reshape(-1)).clamp(1, len(table) - 1)
        lo = hi - 1
        w = (log_sigma.reshape(-1) - table[lo]) / (table[hi] - table[lo])
        return (lo + w).reshape(log_sigma.shape)


class VE(Kernel):
    """VE SDE: s = 1, sigma = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021, Eq. 31)."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        _check_numbers(self, sigma_min=sigma_min, sigma_max=sigma_max)
        _check_order(self, "sigma_min", sigma_min, "sigma_max", sigma_max)
        self._log_min, self._log_ratio = math.log(sigma_min), math.log(sigma_max / sigma_min)
        self.t_min, self.t_max = 0.0, 1.0

    def s(self, t):
        return torch.ones_like(as64(t))

    def sigma(self, t):
        return torch.exp(self._log_min + as64(t) * self._log_ratio)

    def t(self, sigma):
        return (torch.log(as64(sigma)) - self._log_min) / self._log_ratio

    @property
    def prior_scale(self) -> float:
        return self.sigma_max


class EDM(Kernel):
    """EDM: s = 1, sigma(t) = t (Karras et al. 2022, Table 1), t in [0.002, 80]. `round_sigma`: a network's map of
    any sigma to the nearest level it was trained on (EDM's iDDPMPrecond.round_sigma), applied to every step grid as
    EDM's own sampler does."""

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 round_sigma: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        _check_numbers(self, sigma_min=sigma_min, sigma_max=sigma_max)
        _check_order(self, "sigma_min", sigma_min, "sigma_max", sigma_max)
        self.t_min, self.t_max = sigma_min, sigma_max
        self._round = round_sigma

    def round_sigma(self, sigmas: torch.Tensor) -> torch.Tensor:
        return sigmas if self._round is None else as64(self._round(sigmas))

    def s(self, t):
        return torch.ones_like(as64(t))

    def sigma(self, t):
        return as64(t).clone()

    def t(self, sigma):
        return as64(sigma).clone()

    @property
    def prior_scale(self) -> float:
        """sigma_max, or the level it rounds to: sampling starts where the rounded grid does (EDM's sampler starts
        at its first rounded step)."""
        return self.sigma_max if self._round is None else float(self.round_sigma(as64([self.sigma_max]))[0])


KERNELS: Registry[type[Kernel]] = Registry(
    "kernel", {k.name: k for k in (VP, SubVP, VPDiscrete, VE, EDM)}
)


def make_kernel(name: str, **params) -> Kernel:
    """Resolve a kernel by name ('vp', 'vp-discrete', 'subvp', 've', 'edm')."""
    return KERNELS[name](**params)

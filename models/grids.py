"""Step grids: n decreasing noise levels sigma_0 > ... > sigma_{n-1}, optionally followed by 0."""
from __future__ import annotations

import math

import torch

from models.kernels import Kernel
from models.registry import Registry


def edm_grid(kernel: Kernel, n: int, sigma_min: float | None = None, sigma_max: float | None = None,
             rho: float = 7.0) -> torch.Tensor:
    """EDM's rho-schedule (Karras et al. 2022, Eq. 5)."""
    lo, hi = _range(kernel, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def uniform_t_grid(kernel: Kernel, n: int, sigma_min: float | None = None, sigma_max: float | None = None
                   ) -> torch.Tensor:
    """Uniform in the kernel's own time t, from t(sigma_max) to t(sigma_min) (score-SDE's and DPM-Solver's
    'time_uniform', diffusers' 'linspace' spacing). A range that the kernel's time cannot reach (a discrete chain's
    t stops at its first and last levels) is refused, not cut to the levels it has."""
    lo, hi = _range(kernel, sigma_min, sigma_max)
    t_hi, t_lo = float(kernel.t(hi)), float(kernel.t(lo))
    for end, want, t in (("sigma_max", hi, t_hi), ("sigma_min", lo, t_lo)):
        if not math.isclose(float(kernel.sigma(t)), want, rel_tol=1e-6):  # float64 round trip: ~1e-15 (tests)
            raise ValueError(f"a uniform-t grid needs {end} {want:g} within the {kernel.name} kernel's levels "
                             f"[{kernel.sigma_min:.6g}, {kernel.sigma_max:.6g}]: its time t reaches none beyond them")
    return kernel.sigma(torch.linspace(t_hi, t_lo, n, dtype=torch.float64))


def logsnr_grid(kernel: Kernel, n: int, sigma_min: float | None = None, sigma_max: float | None = None
                ) -> torch.Tensor:
    """Uniform in log-SNR lambda = -log sigma (DPM-Solver's 'logSNR' spacing, Lu et al. 2022)."""
    lo, hi = _range(kernel, sigma_min, sigma_max)
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), n, dtype=torch.float64))


def _range(kernel: Kernel, sigma_min: float | None = None, sigma_max: float | None = None) -> tuple[float, float]:
    lo = kernel.sigma_min if sigma_min is None else float(sigma_min)
    hi = kernel.sigma_max if sigma_max is None else float(sigma_max)
    if not 0 < lo < hi:
        raise ValueError(f"a step grid needs 0 < sigma_min < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


GRIDS = Registry("grid", {"edm": edm_grid, "uniform-t": uniform_t_grid, "logsnr": logsnr_grid})


def make_grid(name: str, kernel: Kernel, n: int, append_zero: bool = True, **range_) -> torch.Tensor:
    """n noise levels from the named grid, each on one of the kernel's levels (`Kernel.round_sigma`), then a final 0
    (the last step returns D) if `append_zero`. Levels that rounding makes equal are kept once: a step of length 0
    would waste evaluations (Heun) or divide by it (DPM-Solver++'s h), so a rounded grid may hold fewer than n."""
    if n < 1:
        raise ValueError(f"a step grid needs at least 1 noise level, got n={n}")
    sigmas = GRIDS[name](kernel, n, **range_) if n > 1 else torch.tensor([_range(kernel, **range_)[1]],
                                                                          dtype=torch.float64)
    sigmas = torch.unique_consecutive(kernel.round_sigma(sigmas))
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas

"""The one denoiser contract, D(x_hat, sigma, label=None) -> x0_hat in sigma-space, and the
wrapper that puts any network behind it.

A network is called as net(c_in * x, c_noise[, label]) and predicts eps, x0, v, or EDM's F.
The conversions follow from x_t = s x_hat = alpha x0 + sigma_std eps with alpha = s and
sigma_std = s sigma (paper, Appendix D, Eq. 11); EDM preconditioning is Karras et al. (2022), Table 1.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from models.fast import Runner
from models.kernels import Kernel, append_dims, as64, make_kernel
from models.registry import Registry


def sigma_per_row(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as one float64 value per row of x, on x's device. A scalar (a Python number or a 0-d CPU tensor, as the
    samplers' grids are) is written there by a fill, without a host-to-device copy that would wait for the GPU."""
    sigma = as64(sigma)
    if sigma.numel() == 1:  # one level for every row, whatever its shape ((), (1,), (1, 1, 1, 1))
        sigma = sigma.reshape(())
    if sigma.ndim == 0 and sigma.device.type == "cpu":
        return torch.full((x.shape[0],), float(sigma), dtype=torch.float64, device=x.device)
    if sigma.ndim == 0:
        return sigma.to(x.device).expand(x.shape[0])
    if sigma.numel() != x.shape[0]:
        raise ValueError(f"sigma must be one level, or one per row of x ({x.shape[0]} rows), got shape "
                         f"{tuple(sigma.shape)}")
    return sigma.reshape(-1).to(x.device)


# --- time inputs: what the network receives as its noise level (c_noise) -------------------------

def _time_t(kernel: Kernel, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """The kernel's own continuous t (times `scale`, e.g. 999 for score-SDE's DDPM++ cont.)."""
    return kernel.t(sigma) * scale


def _time_discrete(kernel: Kernel, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """The nearest integer timestep index of a discrete chain (DDPM, Ho et al. 2020)."""
    return torch.round(kernel.t(sigma) * scale)


def _time_log_sigma(kernel: Kernel, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """EDM's c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1), times `scale` (1000 for consistency
    models: diffusers' CMStochasticIterativeScheduler.sigma_to_t = 1000 * 0.25 * ln(sigma))."""
    return 0.25 * torch.log(sigma) * scale


def _time_sigma(kernel: Kernel, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """sigma itself (EDM's pickled networks take sigma and precondition inside)."""
    return sigma * scale


def _time_reversed_discrete(kernel: Kernel, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """NCSN's noise-level index, 0 at the largest sigma: round((1 - t) * scale) with scale = N - 1 (score-SDE's
    discrete VE models, Song et al. 2021, whose networks look their sigma up in a descending table), kept within
    the table."""
    return torch.round(((1 - kernel.t(sigma)) * scale).clamp(0, scale))


TIME_INPUTS = Registry("time input", {"t": _time_t, "discrete": _time_discrete, "log-sigma": _time_log_sigma,
                                      "sigma": _time_sigma, "reversed-discrete": _time_reversed_discrete})
INTEGER_TIME_INPUTS = ("discrete", "reversed-discrete")  # passed to the network as int64


# --- predictions: how the network output becomes x0_hat -----------------------------------------

def _x0_from_eps(x, sigma, alpha, sigma_std, out, sigma_data):
    return x - sigma * out  # x_hat = x0 + sigma eps


def _x0_from_x0(x, sigma, alpha, sigma_std, out, sigma_data):
    return out


def _x0_from_v(x, sigma, alpha, sigma_std, out, sigma_data):
    # v = alpha eps - sigma_std x0 (Salimans & Ho 2022) and x_t = alpha x0 + sigma_std eps give
    # alpha x_t - sigma_std v = (alpha^2 + sigma_std^2) x0.
    x_t = alpha * x
    return (alpha * x_t - sigma_std * out) / (alpha**2 + sigma_std**2)


def _x0_from_score(x, sigma, alpha, sigma_std, out, sigma_data):
    # a score network's output is grad log p_t(x_t); x_t = alpha x0 + sigma_std eps gives score = -eps / sigma_std
    # and so x0 = x_hat - sigma eps = x_hat + alpha sigma^2 score (score-SDE's VE models, Song et al. 2021)
    return x + alpha * sigma**2 * out


def _x0_from_edm(x, sigma, alpha, sigma_std, out, sigma_data):
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)
    return c_skip * x + c_out * out


def _x0_from_cm(x, sigma, alpha, sigma_std, out, sigma_data, sigma_min=0.002):
    """Consistency models' boundary-condition scalings (Song et al. 2023, Appendix C): D = x at sigma_min."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)
    return c_skip * x + c_out * out


PREDICTIONS = Registry("prediction type", {"eps": _x0_from_eps, "x0": _x0_from_x0, "v": _x0_from_v,
                                           "score": _x0_from_score, "edm": _x0_from_edm, "cm": _x0_from_cm})
PRECONDITIONED = ("edm", "cm")  # networks that take c_in x_hat = x_hat / sqrt(sigma^2 + sigma_data^2)


class NetworkDenoiser:
    """A network under the denoiser contract.

    `prediction` is what the network outputs ('eps', 'x0', 'v', 'score', or 'edm' for EDM's F with
    c_skip/c_out/c_in preconditioning); `time_input` is what it takes as its noise level ('t',
    'discrete', 'log-sigma', 'sigma', 'reversed-discrete'), multiplied by `time_scale`. Non-EDM
    networks take x_t = s x_hat; EDM networks take c_in x_hat. Arithmetic is float64; the network
    runs in its own dtype.
    """

    def __init__(self, net: torch.nn.Module, kernel: Kernel | str, prediction: str = "eps",
                 time_input: str = "t", time_scale: float = 1.0, sigma_data: float = 0.5,
                 sample_shape: Optional[tuple[int, ...]] = None, num_classes: Optional[int] = None):
        self.net = net
        self.kernel = make_kernel(kernel) if isinstance(kernel, str) else kernel
        self.prediction, self.time_input = prediction, time_input
        self._to_x0 = PREDICTIONS[prediction]
        if prediction == "cm":  # the boundary condition sits at the kernel's sigma_min
            self._to_x0 = functools.partial(_x0_from_cm, sigma_min=self.kernel.sigma_min)
        self._c_noise: Callable = TIME_INPUTS[time_input]
        self.time_scale, self.sigma_data = time_scale, sigma_data
        self.sample_shape = sample_shape
        self.num_classes = num_classes
        self.runner = Runner(net, "eager")  # see use(); gradients always run the module itself

    def use(self, runner: str) -> "NetworkDenoiser":
        """Call the network through `runner` ('eager', 'traced', 'compiled'; models/fast.py) when no gradient
        is needed. Only for networks whose weights no longer change: a trace keeps the weights it was made with."""
        self.runner = Runner(self.net, runner)
        return self

    def _param(self) -> Optional[torch.Tensor]:
        return next(self.net.parameters(), None)

    def __call__(self, x: torch.Tensor, sigma, label: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Differentiable (training uses it); samplers call it under torch.no_grad()."""
        if label is not None and self.num_classes is None:
            raise ValueError("a label was given to an unconditional denoiser (num_classes=None)")
        sigma = append_dims(sigma_per_row(sigma, x), x.ndim).to(x.dtype)
        flat = sigma.reshape(-1)
        alpha = append_dims(self.kernel.s_of_sigma(flat), x.ndim).to(x)
        sigma_std = alpha * sigma
        if self.prediction in PRECONDITIONED:
            net_in = x / torch.sqrt(sigma**2 + self.sigma_data**2)
        else:
            net_in = alpha * x
        c_noise = self._c_noise(self.kernel, flat, self.time_scale)
        p = self._param()
        dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, x.device)
        time_dtype = torch.long if self.time_input in INTEGER_TIME_INPUTS else dtype
        args = (net_in.to(device, dtype), c_noise.to(device, time_dtype))
        if label is not None:
            args += (label.to(device),)
        out = self.runner(*args)
        return self._to_x0(x, sigma, alpha, sigma_std, out.to(x), self.sigma_data)


def wrap(net: torch.nn.Module, kernel: Kernel | str, prediction: str = "eps", **options) -> NetworkDenoiser:
    """One line from a `(x, t[, label])` network to D(x, sigma, label), e.g. wrap(unet, 'vp', 'eps')."""
    return NetworkDenoiser(net, kernel, prediction, **options)

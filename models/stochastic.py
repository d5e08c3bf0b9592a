"""One stochastic sampler, for the paper's one claim about them: "randomness introduced by stochastic samplers will
break the model reproducibility" (Sec. 2, footnote 1), which is why every other sampler of the suite is deterministic.

Euler ancestral (eta = 1; Ho et al. 2020's ancestral step in sigma-space, as k-diffusion's sample_euler_ancestral
takes it): from sigma_i, an Euler step of the probability-flow ODE down to sigma_down = sigma_(i+1)^2 / sigma_i, then
fresh Gaussian noise of std sigma_up = sqrt(sigma_(i+1)^2 - sigma_down^2) brings the state back to sigma_(i+1). The
last step, to sigma 0, adds none. One evaluation per step.

The per-step noise of a row is drawn on the CPU from a numpy PCG64 stream of its own, seeded from SeedSequence([stream,
noise id, 2]) as the noise bank draws its noises (models/noise.py; the third word keeps it apart from the bank's and
the labels' streams), so a set is the same on any micro-batch size, worker count or device, can be stored, and two
runs on different streams draw independent noise: the setting of the claim, where two runs share their initial noise
and nothing else.
"""
from __future__ import annotations

from typing import Optional

import torch

from models.grids import make_grid
from models.kernels import Kernel
from models.noise import pcg64
from models.samplers import SAMPLERS, Denoiser, Sampled, euler_step

ANCESTRAL = "ancestral"  # the sampler's name in a case's Run (outside models.samplers.SAMPLERS: it needs a stream)
STEP_NOISE_WORD = 2  # SeedSequence([stream, noise id, 2]); the bank draws from [seed, id], labels from [seed, id, 1]


def step_noise(stream: int, noise_id: int, steps: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The (steps, *shape) float64 standard normal noise that row `noise_id` draws on `stream`."""
    return torch.from_numpy(pcg64(stream, noise_id, STEP_NOISE_WORD).standard_normal((steps, *shape)))


@torch.no_grad()
def sample_euler_ancestral(D: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor,
                           label=None) -> Sampled:
    """Euler ancestral from the state x at sigmas[0] down the grid `sigmas` (ending in 0); noise[i] (x's shape) is
    step i's standard normal draw. Without gradients, as every sampler of models/samplers.py: with them a network
    runs its module rather than its trace (models/fast.py) and keeps every step's activations."""
    if len(noise) < len(sigmas) - 1 or noise.shape[1:] != x.shape:
        raise ValueError(f"noise must hold one draw of x's shape {tuple(x.shape)} per step ({len(sigmas) - 1}), "
                         f"got shape {tuple(noise.shape)}")
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        denoised = D(x, s, label)
        if t == 0:
            x = denoised  # the Euler step to sigma 0 lands on D
            continue
        down = t * t / s
        up = (t * t - down * down).sqrt()
        x = euler_step(x, s, down, denoised) + noise[i].to(x) * up
    return Sampled(x, len(sigmas) - 1)


def ancestral_runner(kernel: Kernel, ids: list[int], nfe: int, stream: int, grid: str = "edm"):
    """A `run` for models.generate.generate: Euler ancestral over `nfe` steps of the grid Euler takes at that NFE.
    `ids` are the noise ids generate samples, in its order (its `ids`, else the bank's): a micro-batch row at position
    r is noise ids[r] and draws its step noise from (`stream`, ids[r])."""
    steps = SAMPLERS["euler"].steps("euler", nfe)
    sigmas = make_grid(grid, kernel, steps, append_zero=True)

    def run(D: Denoiser, x: torch.Tensor, label: Optional[torch.Tensor], rows: torch.Tensor) -> Sampled:
        noise = torch.zeros((steps, *x.shape), dtype=torch.float64)
        for j, r in enumerate(rows.tolist()):
            if r >= 0:  # padding rows (-1) draw none
                noise[:, j] = step_noise(stream, ids[r], steps, tuple(x.shape[1:]))
        return sample_euler_ancestral(D, x, sigmas, noise.to(x.device), label)

    return run

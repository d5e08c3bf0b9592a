"""Two small variational autoencoders (Kingma & Welling 2014) of different architectures: generators that are not
diffusion models, for the paper's Appendix C (other generative models are not reproducible from the same noise).

Both map a latent z ~ N(0, I) of `latent` dimensions to a 3 x size x size image in [-1, 1]. The suite feeds them the
same noise as every diffusion model: z is the first `latent` coordinates of the bank's noise. `NoiseDecoder` puts a
decoder under the one-step map contract of the `consistency` sampler, f(x_T, sigma_max) with x_T = sigma_max eps, so
a VAE is sampled like any zoo entry (sampler `consistency`, NFE 1).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from models.kernels import Kernel, make_kernel
from models.unet import check_counts


class VAE(nn.Module):
    """encode(x) -> (mean, log variance) of q(z | x); decode(z) -> image in [-1, 1]."""

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    @property
    def latent(self) -> int:
        return self.config["latent"]

    def elbo_loss(self, y: torch.Tensor, noise: torch.Tensor, pixel_std: float) -> torch.Tensor:
        """The negative ELBO per channel value (3 per pixel), up to an additive constant: a Gaussian likelihood with
        fixed std `pixel_std` whose normaliser, 0.5 ln(2 pi pixel_std^2) per value, is left out, and the KL to N(0, I).
        The constant does not move training; add it for the exact figure."""
        mean, logvar = self.encode(y)
        z = mean + torch.exp(0.5 * logvar) * noise
        recon = ((self.decode(z) - y) ** 2).flatten(1).sum(1) / (2 * pixel_std**2)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1)
        return (recon + kl).mean() / y[0].numel()


class ConvVAE(VAE):
    """Convolutional: two stride-2 convolutions down to size / 4, and transposed convolutions back up."""

    def __init__(self, image_size: int = 16, latent: int = 32, channels: int = 32):
        check_counts("ConvVAE", image_size=image_size, latent=latent, channels=channels)
        if image_size % 4:
            raise ValueError(f"ConvVAE: image_size must be a multiple of 4 (two stride-2 convolutions), got "
                             f"{image_size}")
        super().__init__(image_size=image_size, latent=latent, channels=channels)
        side, c = image_size // 4, channels
        self.enc = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.SiLU(), nn.Conv2d(c, 2 * c, 3, 2, 1), nn.SiLU(),
                                 nn.Flatten(), nn.Linear(2 * c * side * side, 2 * latent))
        self.dec_in = nn.Linear(latent, 2 * c * side * side)
        self.dec = nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.SiLU(),
                                 nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Tanh())
        self._side = side

    def encode(self, x):
        return self.enc(x).chunk(2, dim=1)

    def decode(self, z):
        c = self.config["channels"]
        return self.dec(self.dec_in(z).reshape(len(z), 2 * c, self._side, self._side))


class MLPVAE(VAE):
    """Fully connected: one hidden layer each way, no spatial structure at all."""

    def __init__(self, image_size: int = 16, latent: int = 32, hidden: int = 512):
        check_counts("MLPVAE", image_size=image_size, latent=latent, hidden=hidden)
        super().__init__(image_size=image_size, latent=latent, hidden=hidden)
        d = 3 * image_size * image_size
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, d), nn.Tanh())

    def encode(self, x):
        return self.enc(x).chunk(2, dim=1)

    def decode(self, z):
        size = self.config["image_size"]
        return self.dec(z).reshape(len(z), 3, size, size)


VAES = {"ConvVAE": ConvVAE, "MLPVAE": MLPVAE}


class NoiseDecoder:
    """A VAE's decoder as a one-step map from noise: f(x_T, sigma_max) = decode(first `latent` coordinates of the bank
    noise that starts at x_T). With the `consistency` sampler at NFE 1 the sample is decode(eps[:latent]); any other
    sigma is refused (a multistep sampler would read each step's output as an estimate of the image)."""

    prediction = "generator"

    def __init__(self, vae: VAE, kernel: Kernel | str = "edm", sample_shape: Optional[tuple[int, int, int]] = None):
        self.net, self.kernel = vae, make_kernel(kernel) if isinstance(kernel, str) else kernel
        size = vae.config["image_size"]
        self.sample_shape = sample_shape or (3, size, size)
        if vae.latent > self.sample_shape[0] * self.sample_shape[1] * self.sample_shape[2]:
            raise ValueError(f"a VAE of latent {vae.latent} cannot be fed from noises of shape {self.sample_shape}: "
                             f"its latent is the noise's first coordinates")
        self.num_classes = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        if label is not None:
            raise ValueError("a VAE generator is unconditional; got a label")
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
        top = float(self.kernel.sigma_max)
        if not torch.allclose(sigma, torch.full_like(sigma, top), rtol=1e-6, atol=0.0):
            raise ValueError(f"a VAE generator decodes only the start of sampling (sigma_max {top:.6g}), got sigma "
                             f"{sigma.tolist()[:4]}: sample it with the consistency sampler at NFE 1")
        # the bank noise of the start x = eps * prior_scale / s(t_max) (Kernel.initial_state; sigma_max for EDM / VE)
        start = self.kernel.prior_scale / float(self.kernel.s(self.kernel.t_max))
        z = x.double().flatten(1)[:, :self.net.latent] / start
        param = next(self.net.parameters())
        return self.net.decode(z.to(param.device, param.dtype)).double()

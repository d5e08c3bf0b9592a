"""The UNet builder (its GroupNorm epsilon, what it does to the output's scale, bad values) and the U-ViT's bad values."""
import math
import re

import pytest
import torch

from models.checkpoints import load_checkpoint, save_checkpoint
from models.unet import build_unet


def _norm_slope(net, seed: int = 0) -> float:
    """d log ||net(x)|| / d log ||x|| at a random input (finite difference over a 10% change of scale)."""
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    t = torch.full((8,), 500.0)
    with torch.no_grad():
        a, b = (net(s * x, t).sample.flatten(1).norm(dim=1) for s in (1.0, 1.1))
    return float((b / a).log().mean() / math.log(1.1))


def test_default_epsilon_is_diffusers_and_the_checkpoint_keeps_another(tmp_path):
    assert build_unet(image_size=8, base_channels=8).config.norm_eps == 1e-5  # diffusers' UNet2DModel default
    save_checkpoint(tmp_path / "m", build_unet(image_size=8, base_channels=8, norm_eps=100.0), {"config": {}})
    net, _ = load_checkpoint(tmp_path / "m")
    assert net.config.norm_eps == 100.0
    assert all(m.eps == 100.0 for m in net.modules() if isinstance(m, torch.nn.GroupNorm))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_groupnorm_hides_the_input_scale_and_a_large_epsilon_keeps_it(seed):
    """The mechanism that norm_eps acts on (README, kernel axis: the eps models retrained with it, not shipped): at
    diffusers' epsilon the output's norm does not move with the input's (slope near 0, the last GroupNorm divides it
    out); with epsilon 1 it follows it in part. Measured at initialization, seeds 0-5: |slope| 0.004-0.049 at 1e-5, 0.67-0.86 at 1."""
    torch.manual_seed(seed)
    blind = build_unet(image_size=16, base_channels=16).eval()
    torch.manual_seed(seed)
    seeing = build_unet(image_size=16, base_channels=16, norm_eps=1.0).eval()
    assert abs(_norm_slope(blind, seed)) < 0.15
    assert _norm_slope(seeing, seed) > 0.4


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_epsilon_is_refused_with_its_value(bad):
    with pytest.raises(ValueError, match=r"norm_eps must be a finite number above 0, got"):
        build_unet(image_size=8, base_channels=8, norm_eps=bad)


@pytest.mark.parametrize("bad, says", [(0, "num_classes >= 1 (None: unconditional), got 0"),
                                       (-2, "got -2")])
def test_a_uvit_with_no_classes_is_refused(bad, says):
    """num_classes 0 made a label slot in the position embedding with no label token: a size error at the first call."""
    from models.uvit import UViT

    with pytest.raises(ValueError, match=re.escape(says)):
        UViT(image_size=8, dim=32, depth=3, heads=4, num_classes=bad)


BAD_BUILDS = [  # (builder, arguments, message): each built a network that failed at its first call or never
    ("unet", dict(num_classes=0), "UNet: num_classes must be a whole number >= 1, got 0"),
    ("unet", dict(base_channels=0), "UNet: base_channels must be a whole number >= 1, got 0"),
    ("unet", dict(base_channels=12), "base_channels must be a multiple of 8"),
    ("unet", dict(image_size=15), "image_size even"),
    ("uvit", dict(depth=-1), "U-ViT: depth must be a whole number >= 1, got -1"),
    ("uvit", dict(patch_size=0), "U-ViT: patch_size must be a whole number >= 1, got 0"),
    ("uvit", dict(image_size=0), "U-ViT: image_size must be a whole number >= 1, got 0"),
    ("uvit", dict(dim=97, heads=1), "an even dim divisible by heads, got dim=97, heads=1"),
    ("uvit", dict(dim=30, heads=4), "an even dim divisible by heads, got dim=30, heads=4"),
    ("vae-conv", dict(image_size=6), "ConvVAE: image_size must be a multiple of 4"),
    ("vae-mlp", dict(latent=0), "MLPVAE: latent must be a whole number >= 1, got 0"),
]


@pytest.mark.parametrize("arch, options, says", BAD_BUILDS, ids=[f"{a}-{list(o)[0]}" for a, o, _ in BAD_BUILDS])
def test_a_network_of_impossible_sizes_is_refused_naming_the_value(arch, options, says):
    from models.uvit import UViT
    from models.vae import ConvVAE, MLPVAE

    build = {"unet": lambda **o: build_unet(**{"image_size": 8, "base_channels": 8} | o),
             "uvit": lambda **o: UViT(**{"image_size": 8, "dim": 32, "depth": 3, "heads": 4} | o),
             "vae-conv": lambda **o: ConvVAE(**{"image_size": 8} | o),
             "vae-mlp": lambda **o: MLPVAE(**{"image_size": 8} | o)}[arch]
    with pytest.raises(ValueError, match=re.escape(says)):
        build(**options)


def test_a_vae_whose_latent_outgrows_the_noise_is_refused():
    from models.vae import MLPVAE, NoiseDecoder

    with pytest.raises(ValueError, match=r"latent 200 cannot be fed from noises of shape \(3, 8, 8\)"):
        NoiseDecoder(MLPVAE(image_size=8, latent=200))


@pytest.mark.parametrize("bad", [2, -1, 7])
def test_a_label_outside_the_classes_is_refused_naming_it_and_the_valid_ones(bad):
    from models.denoisers import wrap
    from models.generate import generate
    from models.noise import NoiseBank
    from models.uvit import UViT

    torch.manual_seed(0)
    D = wrap(UViT(image_size=8, dim=32, depth=3, heads=4, num_classes=2).eval(), "edm", "edm", time_input="log-sigma",
             num_classes=2)
    bank = NoiseBank.draw(0, (3, 8, 8), n=3)
    with pytest.raises(ValueError, match=rf"labels \[{bad}\] are outside this denoiser's classes: valid 0..1"):
        generate(D, D.kernel, bank, sampler="euler", nfe=1, label=torch.tensor([0, bad, 1]))
    generate(D, D.kernel, bank, sampler="euler", nfe=1, label=torch.tensor([0, 1, 1]))  # in range: sampled

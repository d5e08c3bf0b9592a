"""UNet denoisers built on diffusers' UNet2DModel (the paper's UNet-64/128/256 differ in base width)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # diffusers is imported where a UNet is built: with torch._dynamo it costs about 0.9 s, which a
    # run on stored samples never needs
    from diffusers import UNet2DModel


def check_counts(owner: str, **counts) -> None:
    """Refuse a size, width or count of a network builder that is not a whole number >= 1, naming it (the UNet, the
    U-ViT and the VAEs build layers of zero width from a 0 and fail only at their first call, if at all)."""
    for name, value in counts.items():
        if type(value) is not int or value < 1:
            raise ValueError(f"{owner}: {name} must be a whole number >= 1, got {value!r}")


def build_unet(image_size: int = 16, channels: int = 3, base_channels: int = 32, attention: bool = True,
               num_classes: int | None = None, norm_eps: float = 1e-5) -> UNet2DModel:
    """A two-level UNet with self-attention at the lower resolution; width `base_channels`
    (UNet-64 in the paper is base_channels=64). With `num_classes`, labels are embedded and added
    to the time embedding (EDM's class conditioning, paper Appendix E).

    `norm_eps` is every GroupNorm's epsilon: (h - mean) / sqrt(var + norm_eps). At diffusers' 1e-5 each norm divides
    out its input's scale, and the last one (before the output convolution) makes the output's norm blind to the
    input's: an eps-predicting network then cannot follow the norm of x, which its target tracks at large sigma. A
    large epsilon (features of variance well below it pass unscaled) leaves that scale in the signal."""
    if not (math.isfinite(norm_eps) and norm_eps > 0):
        raise ValueError(f"norm_eps must be a finite number above 0, got {norm_eps!r}")
    check_counts("UNet", image_size=image_size, channels=channels, base_channels=base_channels,
                 **({} if num_classes is None else {"num_classes": num_classes}))
    if base_channels % 8 or image_size % 2:  # GroupNorm of 8 groups; one 2x downsampling and its upsampling
        raise ValueError(f"UNet: base_channels must be a multiple of 8 (GroupNorm's 8 groups) and image_size even (one "
                         f"2x down- and upsampling), got base_channels={base_channels}, image_size={image_size}")
    from diffusers import UNet2DModel

    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                       block_out_channels=(base_channels, 2 * base_channels), layers_per_block=1,
                       down_block_types=down, up_block_types=up, norm_num_groups=8,
                       num_class_embeds=num_classes, norm_eps=norm_eps)

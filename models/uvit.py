"""U-ViT (Bao et al. 2023): every input is a token (time, optional class label, image patches), with long
skip connections between shallow and deep transformer blocks. Called like a UNet: net(x, t[, label]).

The module keeps its constructor arguments in `config` so that it saves and loads in the same
"config + safetensors" format as diffusers models (see models/checkpoints.py).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from models.unet import check_counts


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of a (B,) noise level (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Block(nn.Module):
    """Pre-norm transformer block; `skip` concatenates a long-skip input and projects it back (U-ViT Sec. 3)."""

    def __init__(self, dim: int, heads: int, skip: bool = False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    def __init__(self, image_size: int = 16, channels: int = 3, patch_size: int = 2, dim: int = 128, depth: int = 7,
                 heads: int = 4, num_classes: Optional[int] = None):
        super().__init__()
        if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
            raise ValueError(f"a class-conditional U-ViT needs num_classes >= 1 (None: unconditional), got "
                             f"{num_classes}")
        check_counts("U-ViT", image_size=image_size, channels=channels, patch_size=patch_size, dim=dim, depth=depth,
                     heads=heads)
        if image_size % patch_size or depth % 2 == 0:
            raise ValueError(f"U-ViT needs image_size divisible by patch_size and an odd depth, got "
                             f"image_size={image_size}, patch_size={patch_size}, depth={depth}")
        if dim % 2 or dim % heads:  # the time embedding's cos / sin halves; the heads split dim
            raise ValueError(f"U-ViT needs an even dim divisible by heads, got dim={dim}, heads={heads}")
        self.config = dict(image_size=image_size, channels=channels, patch_size=patch_size, dim=dim, depth=depth,
                           heads=heads, num_classes=num_classes)
        self.patch_size, self.channels, self.image_size = patch_size, channels, image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.time_embed = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
        self.label_embed = nn.Embedding(num_classes, dim) if num_classes else None
        self.extras = 1 + (num_classes is not None)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.num_patches, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.in_blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth // 2))
        self.mid_block = Block(dim, heads)
        self.out_blocks = nn.ModuleList(Block(dim, heads, skip=True) for _ in range(depth // 2))
        self.norm = nn.LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, patch_size**2 * channels)
        self.final_layer = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: Optional[torch.Tensor] = None) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = t.reshape(-1).expand(len(x)) if t.numel() in (1, len(x)) else t
        extra = [self.time_embed(timestep_embedding(t, tokens.shape[-1]).to(tokens.dtype))[:, None]]
        if self.label_embed is not None:
            if label is None:
                raise ValueError("this U-ViT is class-conditional: give a label")
            extra.append(self.label_embed(label)[:, None])
        elif label is not None:
            raise ValueError("a label was given to an unconditional U-ViT")
        h = torch.cat(extra + [tokens], dim=1) + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())
        h = self.decoder_pred(self.norm(h))[:, self.extras:]
        p, n = self.patch_size, self.image_size // self.patch_size
        h = h.reshape(len(x), n, n, p, p, self.channels).permute(0, 5, 1, 3, 2, 4).reshape(x.shape)
        return self.final_layer(h)

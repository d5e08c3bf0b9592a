"""Noises between bank noises: slerp paths (paper Appendix A.3) and the 2D hyperplane of Figure 4."""
from __future__ import annotations

import math

import torch


def slerp(eps0: torch.Tensor, eps1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985), (len(alphas), *eps0.shape):
    sin((1 - a) theta) / sin(theta) eps0 + sin(a theta) / sin(theta) eps1, theta the angle between them.
    (Appendix A.3 prints sin(a theta) / theta for the second weight; sin(theta) is the slerp it cites. Its RP_manifold
    formula writes the path between generated images x; the suite slerps the noises and samples each point, the
    reading under which the path's samples come from one noise path, as in Song et al. 2020a's interpolation.)"""
    if eps0.shape != eps1.shape:
        raise ValueError(f"slerp needs two noises of one shape, got {tuple(eps0.shape)} and {tuple(eps1.shape)}")
    a, b = eps0.double().reshape(-1), eps1.double().reshape(-1)
    if not (bool(torch.isfinite(a).all() and torch.isfinite(b).all()) and float(a.norm()) > 0
            and float(b.norm()) > 0):  # no angle to a zero noise; NaN or inf would fill the path with NaN
        raise ValueError(f"slerp needs two nonzero finite noises, got norms {float(a.norm()):.4g} and "
                         f"{float(b.norm()):.4g}")
    cos = float(a @ b / (a.norm() * b.norm()))
    if cos < -1 + 1e-12:  # every great circle joins opposite noises: no one path between them
        raise ValueError(f"slerp between opposite noises (cosine {cos:.12g}) has no unique path")
    theta = torch.arccos(torch.tensor(cos, dtype=torch.float64).clamp(-1, 1))
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1, 1)
    if len(alphas) == 0 or not bool(torch.isfinite(alphas).all()):  # a NaN position is a NaN noise for the sampler
        raise ValueError(f"slerp needs at least one finite position alpha, got {alphas.reshape(-1).tolist()[:8]}")
    if float(torch.sin(theta)) < 1e-12:  # parallel: fall back to a straight line
        out = (1 - alphas) * a + alphas * b
    else:
        out = (torch.sin((1 - alphas) * theta) * a + torch.sin(alphas * theta) * b) / torch.sin(theta)
    return out.to(eps0.dtype).reshape((len(alphas),) + tuple(eps0.shape))


def hyperplane(eps1: torch.Tensor, eps2: torch.Tensor, eps3: torch.Tensor, n: int = 100, lo: float = -0.1,
               hi: float = 1.1) -> tuple[torch.Tensor, torch.Tensor]:
    """eps(a, b) = a (eps2 - eps1) + b (eps3 - eps1) + eps1 on an n x n grid over [lo, hi]^2 (paper Sec. 2.2,
    Figure 4: n = 100 over [-0.1, 1.1]^2). Returns (noises (n*n, ...), coords (n*n, 2)), row-major in b then a.
    As in the paper, the plane is not on the noise's Gaussian shell: |eps(a, b)|^2 is about d ((1 - a - b)^2 + a^2 +
    b^2) for independent anchors, from 0.58 d^(1/2) in norm near (1/3, 1/3) to 1.96 d^(1/2) at (1.1, 1.1)."""
    if type(n) is not int or n < 2:
        raise ValueError(f"a hyperplane grid needs n >= 2 points a side (an int), got {n!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"a hyperplane grid needs finite lo < hi, got lo={lo!r}, hi={hi!r}")
    if not eps1.shape == eps2.shape == eps3.shape:
        raise ValueError(f"a hyperplane needs three noises of one shape, got {tuple(eps1.shape)}, "
                         f"{tuple(eps2.shape)} and {tuple(eps3.shape)}")
    if not all(bool(torch.isfinite(e).all()) for e in (eps1, eps2, eps3)):
        raise ValueError("a hyperplane needs three finite noises: an anchor holds NaN or inf")
    u, v = (eps2 - eps1).double().reshape(-1), (eps3 - eps1).double().reshape(-1)
    gram = float(u @ u) * float(v @ v) - float(u @ v) ** 2  # 0 when the anchors lie on one line (or coincide)
    if gram <= 1e-12 * max(float(u @ u) * float(v @ v), 1e-300):
        raise ValueError("a hyperplane needs three anchors that span a plane: these lie on one line (or two are "
                         "equal)")
    axis = torch.linspace(lo, hi, n, dtype=torch.float64)
    bb, aa = torch.meshgrid(axis, axis, indexing="ij")
    coords = torch.stack([aa.reshape(-1), bb.reshape(-1)], 1)
    e1, d2, d3 = eps1.double().reshape(-1), (eps2 - eps1).double().reshape(-1), (eps3 - eps1).double().reshape(-1)
    noises = coords[:, :1] * d2 + coords[:, 1:] * d3 + e1
    return noises.to(eps1.dtype).reshape((n * n,) + tuple(eps1.shape)), coords

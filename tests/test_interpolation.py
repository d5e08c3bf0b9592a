import math

import torch

from models.interpolation import hyperplane, slerp


def test_slerp_endpoints_and_angle():
    g = torch.Generator().manual_seed(0)
    e0, e1 = torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)
    path = slerp(e0, e1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], e0, atol=1e-5) and torch.allclose(path[-1], e1, atol=1e-5)
    # for orthogonal unit vectors slerp stays on the circle: cos(a pi/2), sin(a pi/2)
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(u, v, torch.tensor([1 / 3]))[0]
    assert torch.allclose(mid, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]), atol=1e-6)


def test_hyperplane_corners_are_the_three_noises():
    g = torch.Generator().manual_seed(1)
    e = [torch.randn(3, 4, 4, generator=g) for _ in range(3)]
    noises, coords = hyperplane(*e, n=13, lo=0.0, hi=1.0)
    assert noises.shape == (169, 3, 4, 4)
    at = {tuple(c.tolist()): k for k, c in enumerate(coords)}
    assert torch.allclose(noises[at[(0.0, 0.0)]], e[0], atol=1e-6)
    assert torch.allclose(noises[at[(1.0, 0.0)]], e[1], atol=1e-6)
    assert torch.allclose(noises[at[(0.0, 1.0)]], e[2], atol=1e-6)

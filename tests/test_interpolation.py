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


def test_slerp_refuses_paths_it_cannot_draw_and_keeps_parallel_noises_on_a_line():
    import pytest

    e = torch.randn(3, 4, 4, dtype=torch.float64)
    # a zero noise gave an all-NaN path; opposite noises a straight line through 0 (midpoint norm 0); noises of two
    # shapes of one size took the first's shape
    for a, b, says in [(e, torch.zeros_like(e), r"nonzero finite noises, got norms .* and 0"),
                       (e, -e, r"opposite noises .* has no unique path"),
                       (e, e.reshape(4, 4, 3), r"one shape, got \(3, 4, 4\) and \(4, 4, 3\)"),
                       (e, torch.full_like(e, float("nan")), r"nonzero finite noises")]:
        with pytest.raises(ValueError, match=says):
            slerp(a, b, torch.linspace(0, 1, 3))
    path = slerp(e, 2 * e, torch.tensor([0.0, 0.5, 1.0]))  # parallel: the straight line, endpoints exact
    assert torch.equal(path[0], e) and torch.equal(path[2], 2 * e) and torch.allclose(path[1], 1.5 * e)
    for alphas in (torch.tensor([]), torch.tensor([0.5, float("nan")])):  # a NaN position: a NaN noise sampled
        with pytest.raises(ValueError, match=r"at least one finite position alpha"):
            slerp(e, torch.randn(3, 4, 4, dtype=torch.float64), alphas)


def test_a_hyperplane_that_spans_no_plane_or_no_grid_is_refused():
    """Identical or collinear anchors, NaN anchors, a grid of fewer than 2 points or an empty range were accepted:
    the grid then repeated one line (or one noise) or held NaN noises for the sampler."""
    import pytest

    g = torch.Generator().manual_seed(2)
    e1, e2, e3 = (torch.randn(3, 4, 4, generator=g) for _ in range(3))
    for anchors, kw, says in [((e1, e1, e3), {}, "span a plane: these lie on one line"),
                              ((e1, e2, 2 * e2 - e1), {}, "span a plane"),
                              ((e1, e2, torch.full_like(e3, float("nan"))), {}, "three finite noises"),
                              ((e1, e2, e3.reshape(4, 4, 3)), {}, r"one shape, got \(3, 4, 4\)"),
                              ((e1, e2, e3), {"n": 1}, r"n >= 2 points a side \(an int\), got 1"),
                              ((e1, e2, e3), {"n": 4.0}, "got 4.0"),
                              ((e1, e2, e3), {"lo": 1.0, "hi": 0.0}, "finite lo < hi, got lo=1.0, hi=0.0")]:
        with pytest.raises(ValueError, match=says):
            hyperplane(*anchors, **kw)
    assert hyperplane(e1, e2, e3, n=2)[0].shape == (4, 3, 4, 4)

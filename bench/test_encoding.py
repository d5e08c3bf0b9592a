"""Unique encoding (Sec. 2.2, Fig. 4) on the noise hyperplane, and manifold RP along slerp paths
(Appendix A.3, Fig. 11)."""
import pytest
import torch

from cases.catalog import of
from cases.encoding import ANCHORS, GRID_RANGE
from fixtures.measure import as_params
from fixtures.results import Measured
from models.noise import NoiseBank
from models.interpolation import hyperplane, slerp
from models.scores import SSCD_THRESHOLD, cosine, hyperplane_map, rp_manifold


def hyperplane_samples(measure, run, points: int):
    """The model's anchors x_1..x_3 (bank ids ANCHORS) and its images over the points x points grid."""
    shape = measure.model(run.model).sample_shape
    anchors_bank = NoiseBank.draw(0, shape, ids=ANCHORS)
    noises, coords = hyperplane(*anchors_bank.eps, n=points, lo=GRID_RANGE[0], hi=GRID_RANGE[1])
    grid_bank = NoiseBank(noises.float(), torch.arange(len(noises)))
    spec = {"hyperplane": {"anchors": list(ANCHORS), "points": points, "range": list(GRID_RANGE)}}
    anchors = measure.sample(run, len(ANCHORS), bank=anchors_bank)
    grid = measure.sample(run, len(noises), bank=grid_bank, extra=spec)
    return anchors, grid


@pytest.mark.parametrize("case", as_params(of("encoding")))
def test_hyperplane(case, measure, claim):
    points = case.params["points"]
    maps = []
    for run in case.runs:
        anchors, grid = hyperplane_samples(measure, run, points)
        maps.append((hyperplane_map(measure.embed(anchors.images), measure.embed(grid.images)), grid))
    if case.metric == "agreement":
        (a, _), (b, _) = maps
        agree = a.agreement(b)
        extra = {"points": points, "maps": [m.nearest.tolist() for m, _ in maps],
                 "similarity": [[round(v, 3) for v in m.similarity.tolist()] for m, _ in maps]}
        claim(case, Measured(agree, points * points, extra=extra))
        return
    # neighbours: SSCD similarity of horizontally and vertically adjacent grid images
    (m, grid), = maps
    emb = measure.embed(grid.images).reshape(points, points, -1)
    sims = torch.cat([cosine(emb[:, 1:], emb[:, :-1]).reshape(-1), cosine(emb[1:], emb[:-1]).reshape(-1)])
    value = float((sims > SSCD_THRESHOLD).float().mean())
    claim(case, Measured(value, len(sims), extra={"points": points, "map": m.nearest.tolist(),
                                                   "similarity": [round(v, 3) for v in m.similarity.tolist()]}))


@pytest.mark.parametrize("case", as_params(of("manifold")))
def test_manifold(case, measure, claim):
    paths, points = case.params["paths"], case.params["points"]
    alphas = torch.linspace(0, 1, points)
    embs = []
    for run in case.runs:
        shape = measure.model(run.model).sample_shape
        ends = NoiseBank.draw(0, shape, n=2 * paths).eps
        noises = torch.cat([slerp(ends[2 * k], ends[2 * k + 1], alphas) for k in range(paths)])
        bank = NoiseBank(noises.float(), torch.arange(len(noises)))
        s = measure.sample(run, len(noises), bank=bank, extra={"slerp": {"paths": paths, "points": points}})
        embs.append(measure.embed(s.images).reshape(paths, points, -1))
    per_point = rp_manifold(*embs)
    claim(case, Measured(float(per_point.mean()), paths * points,
                         extra={"per_point": [round(v, 4) for v in per_point.tolist()]}))

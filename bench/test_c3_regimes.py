"""C3: the memorization and generalization regimes (Sec. 3, Fig. 2, 5, 13) and Theorem 1."""
import json
from pathlib import Path

import pytest
import torch

from cases import Run
from cases.catalog import of
from fixtures.measure import IMAGE_SIZE, as_params
from fixtures.results import Measured
from cases.names import DATASETS, optimal
from models.datasets import embedded_photos, to_uint8
from models.generate import invert, solve
from models.scores import MAE_THRESHOLD, MAEScore, mae_255


def measure_runs(measure, case, runs, size=None):
    if case.metric == "rp":
        return measure.pair(case, runs)
    if case.metric == "gl":
        return measure.gl(measure.sample(runs[0], measure.n(case)), size)
    if case.metric == "rp_optimal":  # D* on the same training set as the model
        return measure.pair(case, (runs[0], Run(optimal(size))), "rp")
    if case.metric == "loss":
        return final_loss(measure, runs[0], case.params["last_steps"])
    raise ValueError(f"unknown metric {case.metric!r} in a C3 case")


def final_loss(measure, run, last: int) -> Measured:
    """Mean training loss over the last steps of the checkpoint's loss log (Appendix A.5, Fig. 13)."""
    entry = measure.model(run.model).entry
    path = Path(entry.source) / "loss.jsonl"
    if not path.is_file():  # the loss cases name embedded models only, which ship their logs
        raise FileNotFoundError(f"{run.model} has no training loss log ({path}); the loss cases need suite-trained "
                                f"checkpoints")
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()]
    tail = losses[-last:]
    return Measured(sum(tail) / len(tail), len(tail), extra={"loss": losses[::10]})


def size_of(case, key="dataset"):
    ds = case.params.get(key)
    return DATASETS[ds] if ds else None


@pytest.mark.parametrize("case", as_params(of("C3")))
def test_regime(case, measure, claim):
    measured = measure_runs(measure, case, case.runs, size_of(case) or case.params.get("size"))
    versus = None
    if case.versus:
        versus = measure_runs(measure, case, case.versus,
                              size_of(case, "versus_dataset") or case.params.get("versus_size"))
    claim(case, measured, versus)


@pytest.mark.parametrize("case", as_params(of("theorem1")))
def test_theorem1(case, measure, claim):
    run = case.runs[0]
    size = DATASETS[case.params["dataset"]]
    train = torch.from_numpy(embedded_photos(size, size=IMAGE_SIZE).images)
    if case.metric == "in_training_set":
        s = measure.sample(run, measure.n(case))
        # MAE (0-255) from each sample to its nearest training image
        nearest = torch.stack([mae_255(torch.from_numpy(img)[None].expand_as(train), train).min()
                               for img in s.images])
        value = float((nearest < MAE_THRESHOLD).float().mean())
        order = torch.argsort(nearest, descending=True)
        worst = [(int(s.ids[i]), round(float(nearest[i]), 3)) for i in order[:16]]
        claim(case, Measured(value, len(s.ids), worst, {"nearest_mae": [round(v, 3) for v in nearest.tolist()]}))
        return
    # f^-1 by ODE inversion, then f from the recovered noise with the same solver and grid
    m = measure.model(run.model)
    n = measure.n(case)
    y = embedded_photos(size, size=IMAGE_SIZE).as_tensor()[:n].double()
    steps = (run.nfe + 1) // 2  # Heun spends 2 steps - 1 evaluations
    with torch.no_grad():
        eps = invert(m.D, y, m.kernel, "heun", steps=steps).x
        back = solve(m.D, m.kernel.initial_state(eps), m.kernel, run.sampler, run.nfe).x
    metric = MAEScore()
    metric.update(torch.from_numpy(to_uint8(y)), torch.from_numpy(to_uint8(back)), torch.arange(n), torch.arange(n))
    pairs = metric.pairs()
    worst = [(int(i), round(float(v), 3)) for i, v in zip(pairs.ids[:16], pairs.values[:16])]
    claim(case, Measured(float(metric.compute()), n, worst))

"""A metric added outside the suite, run end to end by tests/test_metric_registry.py in a pytest of its own (no
test_ prefix: `pytest tests` does not collect it). Adding a metric is its score plus one registry entry."""
import pytest
import torch

from cases import Bar, Case, Run
from cases.embedded import M64
from fixtures.metrics import METRICS, Metric


def mean_level(images: torch.Tensor) -> torch.Tensor:
    """The toy score: each uint8 image's mean pixel value, 0-255 (in the suite it would live in models/scores.py)."""
    return images.double().mean(dim=(1, 2, 3))


def measure_mean_level(measure, case, side):
    s, = measure.sets(case, side)
    values = mean_level(torch.from_numpy(s.images))
    return measure.scored_values(values, s)


METRICS.add("toy_mean_level", Metric("toy mean level", "mean pixel value, 0-255", measure_mean_level))
CASE = Case("C2", "Sec. 2.1", "toy_mean_level", (Run(M64[0]),), Bar("<", 0.0, "a bar no image can meet"))


@pytest.mark.parametrize("case", [pytest.param(CASE, id=CASE.id)])
def test_toy(case, measure, claim):
    claim(case, *measure.case(case))

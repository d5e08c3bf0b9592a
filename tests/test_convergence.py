"""Convergence figures of a training run: the slope per doubling of steps, and D*'s loss floor (closed forms)."""
import math

import pytest

from models.convergence import optimal_loss, slope_per_doubling
from models.training import TrainConfig


def test_the_slope_of_a_log_linear_loss_is_its_coefficient():
    losses = [1.0 - 0.07 * math.log2(step) for step in range(1, 4001)]  # falls 0.07 per doubling
    assert slope_per_doubling(losses) == pytest.approx(-0.07, abs=1e-9)
    assert slope_per_doubling([0.3] * 1000) == pytest.approx(0.0, abs=1e-12)  # levelled off


def test_a_log_too_short_for_a_slope_is_refused():
    with pytest.raises(ValueError, match="at least 2 steps in the last 10%, the log has 5 steps"):
        slope_per_doubling([1.0] * 5)


def edm_config(n: int) -> TrainConfig:
    return TrainConfig(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0,
                       dataset_size=n, image_size=8)


def test_the_floor_of_one_training_image_is_zero_and_grows_with_the_set():
    """D* of a single image returns that image at every sigma (Theorem 1), so its loss is exactly 0; with more
    images D* must guess at large sigma, so the floor is positive and grows with the set."""
    assert optimal_loss(edm_config(1), samples=256) == pytest.approx(0.0, abs=1e-12)
    small, large = optimal_loss(edm_config(4), samples=1024), optimal_loss(edm_config(64), samples=1024)
    assert 0 < small < large

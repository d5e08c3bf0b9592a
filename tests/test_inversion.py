"""ODE inversion, the paper's f^-1 (Theorem 1): encode an image to its noise, decode it back."""
import pytest
import torch

from models.denoisers import wrap
from models.grids import make_grid
from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.generate import generate, invert, roundtrip, solve
from tests.helpers import GaussianData, TinyEpsNet


# Relative max error at 200 EDM-grid steps, measured: euler 1.4e-2, heun 3.5e-4, dpm2 4.8e-4,
# dpm3 1.6e-5; each bound is about twice the measurement.
INVERSION_TOL = {"euler": 3e-2, "heun": 1e-3, "dpm2": 1e-3, "dpm3": 5e-5}


@pytest.mark.parametrize("sampler", sorted(INVERSION_TOL))
def test_inversion_matches_the_closed_form_flow(sampler):
    """On Gaussian data the ODE map is known:
    f^-1(x) = (mu + sqrt((c^2 + s_max^2)/(c^2 + s_min^2)) (x - mu)) / s_max."""
    data, kernel = GaussianData(), make_kernel("edm")
    x0 = data.mu + data.c * torch.randn(8, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = invert(data, x0, kernel, sampler, steps=200).x
    exact = kernel.noise_of_state(data.flow(x0, kernel.sigma_min, kernel.sigma_max))
    assert float((eps - exact).abs().max() / exact.abs().max()) < INVERSION_TOL[sampler]


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm3"])
def test_encode_then_decode_returns_the_training_image(sampler):
    """For the optimal denoiser on a small dataset, f(f^-1(y_i)) = y_i (Theorem 1). Tolerance 1e-9:
    float64 rounding; every decoded pixel equals the training pixel to that level."""
    data = torch.rand(16, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    D, kernel = OptimalDenoiser(data, dtype=torch.float64), make_kernel("vp")
    eps = invert(D, data, kernel, sampler, steps=50).x
    nfe = {"euler": 50, "heun": 99, "dpm3": 50}[sampler]  # 50 steps each
    decoded = solve(D, kernel.initial_state(eps), kernel, sampler, nfe).x
    assert torch.allclose(decoded, data, atol=1e-9)


def test_bank_noise_survives_a_round_trip_through_its_sample():
    """f^-1(f(eps)) lands on a noise that f maps to the same training image (the encoding is unique in
    image space; the basin of an image holds many noises, so eps itself is not recovered)."""
    data = torch.rand(16, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    D, kernel = OptimalDenoiser(data, dtype=torch.float64), make_kernel("edm")
    bank = NoiseBank.draw(0, (3, 8, 8), n=8)
    images = generate(D, kernel, bank, sampler="dpm3", nfe=20).x
    eps = invert(D, images, kernel, "dpm3", steps=20).x
    again = solve(D, kernel.initial_state(eps), kernel, "dpm3", 20).x
    assert torch.allclose(again, images, atol=1e-9)


def test_consistency_sampler_cannot_invert():
    with pytest.raises(ValueError, match="no inverse ODE"):
        invert(GaussianData(), torch.zeros(2), make_kernel("edm"), "consistency")


def test_inversion_grid_runs_upward():
    k = make_kernel("ve")
    s = make_grid("edm", k, 5, append_zero=False).flip(0)
    assert float(s[0]) == pytest.approx(k.sigma_min) and float(s[-1]) == pytest.approx(k.sigma_max)


def test_a_round_trip_in_micro_batches_takes_each_rows_own_label():
    """With `micro_batch`, every micro-batch was handed the whole label tensor: a RuntimeError on shapes."""
    data = torch.rand(6, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 1] * 3)
    D, kernel = OptimalDenoiser(data, labels=labels, dtype=torch.float64), make_kernel("edm")
    whole = roundtrip(D, data, kernel, "dpm3", 50, label=labels)
    assert torch.allclose(whole, data, atol=1e-9)
    assert torch.equal(roundtrip(D, data, kernel, "dpm3", 50, label=labels, micro_batch=4), whole)


def test_a_round_trip_of_one_class_given_as_an_int_labels_every_row():
    """Without `micro_batch` the round trip passed the label as given: an int class reached the denoiser as an int
    (an AttributeError in a network's wrapper), while `generate` and the micro-batched round trip took it."""
    data = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    kernel = make_kernel("vp")
    D = wrap(TinyEpsNet(num_classes=3).eval(), kernel, "eps", num_classes=3)
    whole = roundtrip(D, data, kernel, "euler", 4, label=torch.tensor([1, 1]))
    assert torch.equal(roundtrip(D, data, kernel, "euler", 4, label=1), whole)
    assert torch.equal(roundtrip(D, data, kernel, "euler", 4, label=1, micro_batch=2), whole)


def test_an_inversion_of_no_steps_and_labels_that_are_not_integers_are_refused():
    with pytest.raises(ValueError, match=r"an inversion needs at least 1 step, got steps=0"):
        invert(GaussianData(), torch.zeros(2, 3, 4, 4), make_kernel("edm"), steps=0)
    bank = NoiseBank.draw(0, (3, 4, 4), n=2)
    for label, message in ((1.7, r"torch.float32 \[1.7"), (torch.tensor([0.0, 1.0]), r"torch.float32 \[0.0, 1.0\]"),
                           (True, "torch.bool")):  # 1.7 was cut to class 1
        with pytest.raises(ValueError, match=rf"labels are integer classes, got {message}"):
            generate(GaussianData(), make_kernel("edm"), bank, label=label)


def test_solve_and_invert_check_their_labels_as_generate_does():
    """One label for two rows was taken; an int failed inside the network's wrapper; a class out of range failed in
    the embedding without naming it; a string label was torch's TypeError."""
    kernel = make_kernel("vp")
    D = wrap(TinyEpsNet(num_classes=3).eval(), kernel, "eps", num_classes=3)
    x = kernel.initial_state(NoiseBank.draw(0, (3, 4, 4), n=2).take([0, 1]))
    with_tensor = solve(D, x, kernel, "euler", 3, label=torch.tensor([1, 1])).x
    assert torch.equal(solve(D, x, kernel, "euler", 3, label=1).x, with_tensor)  # an int: one class for every row
    for call in (lambda label: solve(D, x, kernel, "euler", 3, label=label),
                 lambda label: invert(D, torch.zeros(2, 3, 4, 4), kernel, steps=2, label=label)):
        with pytest.raises(ValueError, match=r"one class or one per noise id \(2\), got shape \(1,\)"):
            call(torch.tensor([1]))
        with pytest.raises(ValueError, match=r"labels \[5\] are outside this denoiser's classes: valid 0\.\.2"):
            call(torch.tensor([5, 5]))
    with pytest.raises(ValueError, match=r"labels are integer classes \(one int, or one per noise id\), got 'random'"):
        generate(D, kernel, NoiseBank.draw(0, (3, 4, 4), n=2), label="random")

"""The denoiser contract: every prediction type and time input converts to x0_hat exactly."""
from types import SimpleNamespace

import pytest
import torch

from models.denoisers import wrap
from models.kernels import make_kernel
from models.registry import UnknownNameError
from tests.helpers import TinyEpsNet


class Oracle(torch.nn.Module):
    """Knows x0 and eps for one sigma; checks what it is fed and answers with the exact target."""

    def __init__(self, x0, eps, sigma, kernel, prediction, sigma_data=0.5):
        super().__init__()
        alpha = float(kernel.s_of_sigma(sigma))
        sigma_std = alpha * sigma
        x_hat = x0 + sigma * eps
        self.expected_in = x_hat / (sigma**2 + sigma_data**2) ** 0.5 if prediction == "edm" else alpha * x_hat
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        self.target = {"eps": eps, "x0": x0, "v": alpha * eps - sigma_std * x0,
                       "edm": (x0 - c_skip * x_hat) / c_out}[prediction]
        self.seen_t = None

    def forward(self, x, t):
        torch.testing.assert_close(x.double(), self.expected_in, rtol=1e-6, atol=1e-6)
        self.seen_t = t
        return SimpleNamespace(sample=self.target.float())  # diffusers-style output object


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "edm"])
@pytest.mark.parametrize("kernel_name, sigma", [("vp", 0.3), ("vp", 40.0), ("subvp", 2.0), ("ve", 5.0),
                                                ("edm", 0.05), ("vp-discrete", 1.0)])
def test_every_prediction_type_recovers_x0(prediction, kernel_name, sigma):
    kernel = make_kernel(kernel_name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    D = wrap(Oracle(x0, eps, sigma, kernel, prediction), kernel, prediction)
    got = D(x0 + sigma * eps, torch.tensor(sigma, dtype=torch.float64))
    # the float32 network output's rounding (6e-8 relative) times c_out (about sigma) and |target| (under about 4 for
    # these 96 normal draws): at most about 2.4e-7 sigma; measured at most 0.8e-7 sigma over these 24 cases
    torch.testing.assert_close(got, x0, rtol=0, atol=1e-6 * max(1.0, sigma))


@pytest.mark.parametrize("time_input, expected", [("t", lambda k, s: k.t(s)), ("discrete", lambda k, s: k.t(s).round()),
                                                  ("log-sigma", lambda k, s: 0.25 * torch.log(s))])
def test_time_inputs(time_input, expected):
    kernel = make_kernel("vp-discrete")
    sigma = torch.tensor([0.5, 3.0], dtype=torch.float64)
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen["t"] = t
            return x

    wrap(Spy(), kernel, "x0", time_input=time_input)(torch.zeros(2, 1, 2, 2, dtype=torch.float64), sigma)
    torch.testing.assert_close(seen["t"].double(), expected(kernel, sigma).to(seen["t"].dtype).double(),
                               rtol=1e-6, atol=1e-6)
    if time_input == "discrete":
        assert seen["t"].dtype == torch.long


def test_label_reaches_a_conditional_network_and_changes_the_output():
    D = wrap(TinyEpsNet(num_classes=4), "vp", "eps", num_classes=4)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a, b = D(x, 1.0, torch.tensor([0, 0])), D(x, 1.0, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)


def test_label_given_to_an_unconditional_denoiser_is_refused():
    D = wrap(TinyEpsNet(), "vp", "eps")
    with pytest.raises(ValueError, match="label was given to an unconditional denoiser"):
        D(torch.randn(1, 3, 8, 8, dtype=torch.float64), 1.0, torch.tensor([0]))


def test_unknown_prediction_and_time_input_list_valid_names():
    with pytest.raises(UnknownNameError, match="valid prediction types: cm, edm, eps, score, v, x0"):
        wrap(TinyEpsNet(), "vp", "scor")
    with pytest.raises(UnknownNameError, match="valid time inputs: discrete, log-sigma, reversed-discrete, sigma, t"):
        wrap(TinyEpsNet(), "vp", "eps", time_input="frac")


def test_consistency_prediction_is_the_identity_at_sigma_min():
    """Song et al. 2023 (Appendix C): c_skip(sigma_min) = 1, c_out(sigma_min) = 0, so D(x; sigma_min) = x."""
    from models.denoisers import NetworkDenoiser

    class Constant(torch.nn.Module):  # any output is ignored at sigma_min
        def forward(self, x, t):
            return torch.full_like(x, 5.0)

    D = NetworkDenoiser(Constant(), make_kernel("edm"), "cm", time_input="log-sigma", time_scale=1000.0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(D(x, torch.tensor(0.002, dtype=torch.float64)), x)
    assert not torch.allclose(D(x, torch.tensor(1.0, dtype=torch.float64)), x)


class _GaussianScore(torch.nn.Module):
    """The exact score of x_t for data N(mu, c^2 I) under a VP kernel: x_t ~ N(s mu, s^2 (c^2 + sigma^2) I)."""

    def __init__(self, kernel, mu: float = 0.3, c: float = 0.5):
        super().__init__()
        self.kernel, self.mu, self.c = kernel, mu, c

    def forward(self, x_t, t):
        sigma = self.kernel.sigma(t.double()).reshape(-1, 1, 1, 1)
        s = self.kernel.s(t.double()).reshape(-1, 1, 1, 1)
        return (-(x_t.double() - s * self.mu) / (s**2 * (self.c**2 + sigma**2))).float()


def test_reversed_discrete_index_counts_down_from_sigma_max_and_stays_in_the_table():
    from models.denoisers import TIME_INPUTS

    kernel = make_kernel("ve", sigma_min=0.01, sigma_max=50.0)
    index = TIME_INPUTS["reversed-discrete"](kernel, torch.tensor([50.0, 0.01, 500.0, 1e-4], dtype=torch.float64),
                                             999.0)
    assert index.tolist() == [0.0, 999.0, 0.0, 999.0]  # beyond either end: the table's first or last entry


def test_a_score_network_gives_the_closed_form_denoiser():
    """prediction 'score': x0 = x_hat + s sigma^2 score equals D(x; sigma) = mu + c^2 / (c^2 + sigma^2) (x - mu)."""
    from tests.helpers import GaussianData

    kernel = make_kernel("vp")
    D = wrap(_GaussianScore(kernel), kernel, "score", time_input="t")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for sigma in (0.05, 1.0, 20.0):
        assert torch.allclose(D(x, sigma), GaussianData()(x, sigma), rtol=1e-5, atol=1e-5)  # float32 network

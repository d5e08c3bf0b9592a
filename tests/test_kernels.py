"""Kernel identities (paper, Appendix D, Eq. 3; Song et al. 2021; Karras et al. 2022, Table 1)."""
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.kernels import KERNELS, VP, SubVP, make_kernel
from models.registry import UnknownNameError

ALL = sorted(KERNELS)
unit = st.floats(0.0, 1.0, allow_nan=False)


def t_at(kernel, u):
    return kernel.t_min + u * (kernel.t_max - kernel.t_min)


@settings(max_examples=200, deadline=None)
@given(u=unit)
@pytest.mark.parametrize("name", ["vp", "vp-discrete"])
def test_vp_preserves_variance(name, u):
    """VP: s^2 + s^2 sigma^2 = 1 (closed form)."""
    k = make_kernel(name)
    t = t_at(k, u)
    s, sigma = k.s(t), k.sigma(t)
    assert float(s**2 + (s * sigma) ** 2) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(u=unit)
def test_subvp_std_is_vp_std_squared(u):
    """sub-VP's std is the VP std squared: 1 - e^{-u} = (sqrt(1 - e^{-u}))^2 (Song et al. 2021, Eq. 29)."""
    vp, sub = VP(), SubVP()
    t = t_at(vp, u)
    assert float(sub.s(t)) == pytest.approx(float(vp.s(t)), rel=1e-12)
    assert float(sub.s(t) * sub.sigma(t)) == pytest.approx(float((vp.s(t) * vp.sigma(t)) ** 2), rel=1e-10)


@settings(max_examples=200, deadline=None)
@given(u=unit)
@pytest.mark.parametrize("name", ALL)
def test_t_of_sigma_inverts_sigma_of_t(name, u):
    k = make_kernel(name)
    t = t_at(k, u)
    assert float(k.t(k.sigma(t))) == pytest.approx(t, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_sigma_increases_with_t(name):
    k = make_kernel(name)
    sig = k.sigma(torch.linspace(k.t_min, k.t_max, 257, dtype=torch.float64))
    assert bool((sig[1:] > sig[:-1]).all())
    assert 0 < k.sigma_min < k.sigma_max


@pytest.mark.parametrize("name", ALL)
def test_sigma_space_round_trip(name):
    k = make_kernel(name)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    t = torch.tensor([k.t_min, k.t_max, 0.5 * (k.t_min + k.t_max), k.t_max], dtype=torch.float64)
    x_hat = k.to_sigma_space(x, t)
    for row in range(len(t)):  # each row with its own t (one s for all rows passed when only row 0 was checked)
        torch.testing.assert_close(x_hat[row], x[row] / k.s(t[row]), rtol=1e-12, atol=0)  # float64
    assert torch.allclose(k.from_sigma_space(x_hat, t), x, rtol=1e-12)


@pytest.mark.parametrize("name, scale", [("vp", 1.0), ("subvp", 1.0), ("vp-discrete", 1.0),
                                         ("ve", 50.0), ("edm", 80.0)])
def test_prior_noise_scale(name, scale):
    """VP/sub-VP start from eps, VE/EDM from sigma_max * eps (paper, Appendix B)."""
    k = make_kernel(name)
    eps = torch.randn(2, 3, dtype=torch.float64)
    x_T = k.from_sigma_space(k.initial_state(eps), k.t_max)
    assert torch.allclose(x_T, scale * eps, rtol=1e-12)
    assert torch.allclose(k.noise_of_state(k.initial_state(eps)), eps, rtol=1e-12)


def test_vp_matches_published_endpoints():
    """Song et al. (2021): beta in [0.1, 20] gives sigma(1) = sqrt(e^{10.05} - 1) ~ 152.0."""
    assert VP().sigma_max == pytest.approx(math.sqrt(math.expm1(10.05)), rel=1e-12)
    ddpm = make_kernel("vp-discrete")  # Ho et al. (2020): beta_1 = 1e-4 gives sigma_0 = sqrt(1e-4 / (1 - 1e-4))
    assert ddpm.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-9)


@pytest.mark.parametrize("t", [0.25, 0.5, 0.8818])
def test_vp_and_subvp_match_song_et_al_inside_the_range(t):
    """The variance identities hold for any u(t); the schedule itself, at interior t, against Song et al. (2021) written
    out here: VP's marginal std sqrt(1 - e^{-int beta}) and mean e^{-int beta / 2} (Eq. 33), sub-VP's std
    1 - e^{-int beta} (Eq. 29), int_0^t beta = 0.1 t + 19.95 t^2 (beta from 0.1 to 20)."""
    integral = 0.1 * t + 0.5 * (20.0 - 0.1) * t * t
    vp, sub = VP(), SubVP()
    tt = torch.tensor(t, dtype=torch.float64)
    assert float(vp.s(tt)) == pytest.approx(math.exp(-integral / 2), rel=1e-12)
    assert float(vp.s(tt) * vp.sigma(tt)) == pytest.approx(math.sqrt(-math.expm1(-integral)), rel=1e-12)
    assert float(sub.s(tt) * sub.sigma(tt)) == pytest.approx(-math.expm1(-integral), rel=1e-12)


@pytest.mark.parametrize("n", [0, 1, 499, 999])
def test_vp_discrete_matches_ddpms_alpha_bar_at_every_step(n):
    """Ho et al. (2020): beta linear from 1e-4 to 0.02 over 1,000 steps, alpha_bar_n = prod_{k<=n} (1 - beta_k);
    s_n = sqrt(alpha_bar_n) and s_n sigma_n = sqrt(1 - alpha_bar_n), the product written out here."""
    k = make_kernel("vp-discrete")
    alpha_bar = 1.0
    for j in range(n + 1):
        alpha_bar *= 1 - (1e-4 + (0.02 - 1e-4) * j / 999)
    tt = torch.tensor(float(n), dtype=torch.float64)
    assert float(k.s(tt)) == pytest.approx(math.sqrt(alpha_bar), rel=1e-9)
    assert float(k.s(tt) * k.sigma(tt)) == pytest.approx(math.sqrt(1 - alpha_bar), rel=1e-9)


def test_unknown_kernel_lists_valid_names():
    with pytest.raises(UnknownNameError, match="unknown kernel 'vpp'; valid kernels: edm, subvp, ve, vp, vp-discrete"):
        make_kernel("vpp")


@pytest.mark.parametrize("name", ALL)
def test_a_kernel_answers_on_the_querys_device(name):
    """A GPU run asks with each row's sigma on the GPU; the 'meta' device stands in for it here (no GPU on CI). The
    discrete chain's table of levels lived on the CPU and mixed devices (searchsorted refused it)."""
    k = make_kernel(name)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64) * k.t_max
    sigma = k.sigma(t)
    assert k.sigma(t.to("meta")).device.type == "meta" and k.t(sigma.to("meta")).device.type == "meta"
    assert k.s_of_sigma(sigma.to("meta")).device.type == "meta"


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_a_constant_beta_inverts_without_dividing_by_its_slope(name):
    """beta_min == beta_max is a valid schedule (u = beta t); t(sigma) divided 0 by 0 there and sampled NaN."""
    kernel = make_kernel(name, beta_min=1.0, beta_max=1.0)
    t = torch.linspace(kernel.t_min, kernel.t_max, 9, dtype=torch.float64)
    assert torch.allclose(kernel.t(kernel.sigma(t)), t, rtol=1e-12, atol=0)
    assert torch.allclose(kernel.sigma(t), 2 * torch.sinh(t / 2) if name == "subvp" else torch.sqrt(torch.expm1(t)))


@pytest.mark.parametrize("name, options, message", [
    ("vp", {"beta_min": -1.0}, "vp kernel: beta_min must be a finite number > 0, got -1.0"),
    ("vp", {"beta_max": float("nan")}, "vp kernel: beta_max must be a finite number > 0, got nan"),
    ("subvp", {"beta_min": 2.0, "beta_max": 1.0}, "subvp kernel: beta_min 2.0 must be at most beta_max 1.0"),
    ("vp", {"t_min": 0.0}, "vp kernel: t_min must be a finite number > 0, got 0.0"),
    ("vp", {"t_min": 1.0}, "vp kernel: t_min 1.0 must be below t_max 1.0"),
    ("vp", {"t_max": "1"}, "vp kernel: t_max must be a finite number > 0, got '1'"),
    ("ve", {"sigma_min": 0}, "ve kernel: sigma_min must be a finite number > 0, got 0"),
    ("ve", {"sigma_min": 50.0, "sigma_max": 0.01}, "ve kernel: sigma_min 50.0 must be below sigma_max 0.01"),
    ("edm", {"sigma_max": math.inf}, "edm kernel: sigma_max must be a finite number > 0, got inf"),
    ("vp-discrete", {"num_train_timesteps": 1}, "num_train_timesteps must be a whole number >= 2, got 1"),
    ("vp-discrete", {"beta_start": 0.0}, "vp-discrete kernel: beta_start must be a finite number > 0, got 0.0"),
    ("vp-discrete", {"betas": torch.tensor([0.1, 1.0])}, "betas must be a 1-D chain of >= 2 values in (0, 1)"),
    ("vp-discrete", {"betas": torch.tensor([0.1])}, "betas must be a 1-D chain of >= 2 values in (0, 1)"),
])
def test_kernel_settings_out_of_range_are_refused_by_name(name, options, message):
    """A negative beta_min gave NaN noise levels, sigma_min 0 a bare math domain error, t_min >= t_max an empty
    range: each is refused where the kernel is made, naming the setting and its value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        make_kernel(name, **options)

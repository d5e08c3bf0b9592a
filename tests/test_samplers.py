"""Samplers: order of convergence, DDIM equivalence, exact NFE, determinism, refusals."""
import math

import numpy as np
import pytest
import torch

from models.denoisers import wrap
from models.grids import GRIDS, make_grid
from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.registry import UnknownNameError
from models.samplers import SAMPLERS, same_samples_as, sample_dpmpp, sample_euler
from models.generate import NonFiniteError, generate, solve
from tests.helpers import Counting, GaussianData, TinyEpsNet

# Measured slopes of log(error) against log(steps) on this problem, N = 16..128, EDM grid:
# euler 0.98-1.00, heun 2.05-2.19, dpm2 2.09-2.31, dpm3 2.98-3.18. The tolerance admits the
# pre-asymptotic drift of those measurements around the theoretical order.
ORDERS = {"euler": (1, 0.1), "dpm1": (1, 0.1), "heun": (2, 0.25), "dpm2": (2, 0.3), "dpm3": (3, 0.35)}


def measured_order(name: str, grid: str) -> float:
    data, k = GaussianData(), make_kernel("edm")
    x0 = 80 * torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = [16, 32, 64, 128]
    errs = []
    for n in steps:
        sigmas = make_grid(grid, k, n, append_zero=False, sigma_min=0.01)
        out = SAMPLERS[name].fn(data, x0.clone(), sigmas)
        errs.append(float((out.x - data.flow(x0, sigmas[0], sigmas[-1])).abs().max()))
    slope, _ = np.polyfit(np.log(steps), np.log(errs), 1)
    return -slope


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_order_of_convergence(name):
    order, tol = ORDERS[name]
    assert measured_order(name, "edm") == pytest.approx(order, abs=tol)


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_order_is_at_least_nominal_on_uniform_logsnr(name):
    """On a uniform lambda grid this problem lets DPM-Solver++(3M) superconverge (measured 3.96-4.12),
    so only a lower bound is stated there."""
    order, tol = ORDERS[name]
    assert measured_order(name, "logsnr") >= order - tol


def dpmpp3_reference(D, x, sigmas, second_term):
    """DPM-Solver++(3M) in sigma-space from the Taylor expansion of x0 in lambda = -log sigma, with `second_term`
    times the x0'' term: 1 is the whole term; 1/2 is what the DPM-Solver authors' code and diffusers'
    `solver_order=3` take (their D2 = (D1_0 - D1_1) / (r0 + r1) is h^2 x0'' / 2, times the same -phi_3)."""
    lam, ds = -torch.log(sigmas), []
    for i in range(len(sigmas) - 1):
        ds.insert(0, D(x, sigmas[i]))
        h = lam[i + 1] - lam[i]
        x = sigmas[i + 1] / sigmas[i] * x - torch.expm1(-h) * ds[0]
        if len(ds) >= 2:
            phi2, h0 = torch.expm1(-h) / h + 1, lam[i] - lam[i - 1]
            slope0 = (ds[0] - ds[1]) / h0  # x0' at the midpoint of the last step
            if len(ds) == 2:
                x = x + phi2 * h * slope0
            else:
                h1 = lam[i - 1] - lam[i - 2]
                second = (slope0 - (ds[1] - ds[2]) / h1) / ((h0 + h1) / 2)  # x0''
                x = x + phi2 * h * (slope0 + second * h0 / 2) - (phi2 / h - 0.5) * h * h * second * second_term
    return x


@pytest.mark.parametrize("grid, ours, theirs", [("edm", 3.09, 1.76), ("logsnr", 4.06, 2.31)])
def test_dpm3_takes_the_whole_second_order_term_that_the_authors_code_halves(grid, ours, theirs):
    """`dpm3` is the Taylor expansion's update (equal to a reference written from it to 1e-12); with that term halved,
    as in the authors' code and diffusers, the update converges at about order 2 (measured slopes: EDM grid 3.09 /
    1.76, uniform log-SNR 4.06 / 2.31, N = 16..128)."""
    data, k = GaussianData(), make_kernel("edm")
    x0 = 80 * torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps, errs = [16, 32, 64, 128], {1.0: [], 0.5: []}
    for n in steps:
        sigmas = make_grid(grid, k, n, append_zero=False, sigma_min=0.01)
        exact = data.flow(x0, sigmas[0], sigmas[-1])
        suite = sample_dpmpp(data, x0.clone(), sigmas, order=3).x
        assert torch.allclose(dpmpp3_reference(data, x0.clone(), sigmas, 1.0), suite, rtol=0, atol=1e-12)
        for term in errs:
            errs[term].append(float((dpmpp3_reference(data, x0.clone(), sigmas, term) - exact).abs().max()))
    slope = {term: -np.polyfit(np.log(steps), np.log(e), 1)[0] for term, e in errs.items()}
    assert slope[1.0] == pytest.approx(ours, abs=0.05) and slope[0.5] == pytest.approx(theirs, abs=0.05)


def ddim_reference(net, kernel, timesteps, eps):
    """DDIM (Song et al. 2020a, Eq. 12, eta = 0) in x-space on the discrete DDPM chain."""
    alpha_bar = 1 / (1 + torch.exp(2 * kernel.log_sigmas))  # sigma^2 = (1 - alpha_bar) / alpha_bar
    x = eps
    for i, t in enumerate(timesteps):
        a_t = alpha_bar[t]
        a_prev = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        e = net(x.float(), torch.full((len(x),), t)).double()
        x0 = (x - torch.sqrt(1 - a_t) * e) / torch.sqrt(a_t)
        x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev) * e
    return x


def test_ddim_is_euler_is_dpm1():
    """DDIM == Euler in sigma-space == DPM-Solver++(1) (Karras et al. 2022, Sec. 3; Lu et al. 2022b)."""
    kernel = make_kernel("vp-discrete")
    net = TinyEpsNet()
    D = wrap(net, kernel, "eps", time_input="discrete")
    timesteps = list(range(999, -1, -111))  # 999, 888, ..., 0
    sigmas = torch.cat([kernel.sigma(torch.tensor(timesteps, dtype=torch.float64)),
                        torch.zeros(1, dtype=torch.float64)])
    eps = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = ddim_reference(net, kernel, timesteps, eps)
    euler = sample_euler(D, kernel.initial_state(eps), sigmas).x
    dpm1 = sample_dpmpp(D, kernel.initial_state(eps), sigmas, order=1).x
    assert torch.allclose(euler, ref, rtol=0, atol=1e-9)
    assert torch.allclose(dpm1, euler, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name, nfe, expected", [
    ("euler", 10, 10), ("ddim", 35, 35), ("heun", 35, 35), ("heun", 10, 9), ("dpm1", 7, 7),
    ("dpm2", 10, 10), ("dpm3", 20, 20), ("consistency", 1, 1)])
def test_reported_nfe_is_exact(name, nfe, expected):
    D = Counting(GaussianData())
    out = solve(D, torch.randn(2, 3), make_kernel("edm"), name, nfe)
    assert out.nfe == D.calls == expected


@pytest.mark.parametrize("name, nfe, same", [
    ("ddim", 50, ("euler", 50)), ("heun", 36, ("heun", 35)), ("heun", 10, ("heun", 9)), ("heun", 35, ("heun", 35)),
    ("euler", 7, ("euler", 7)), ("dpm1", 7, ("dpm1", 7)), ("dpm3", 20, ("dpm3", 20)),
    ("consistency", 1, ("consistency", 1)), ("dps", 34, ("dps", 34))])
def test_the_store_names_one_computation_once(name, nfe, same):
    """Stored samples are keyed by the (sampler, NFE) that computes them: an alias (ddim runs euler) and an NFE budget
    that buys no more steps (heun at 2k) name the same solve, and their samples are equal bit for bit; a name
    outside the registry (DPS runs its own solve) is kept."""
    assert same_samples_as(name, nfe) == same
    if name in SAMPLERS and (name, nfe) != same:
        x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        a = solve(GaussianData(), x.clone(), make_kernel("edm"), name, nfe)
        b = solve(GaussianData(), x.clone(), make_kernel("edm"), *same)
        assert torch.equal(a.x, b.x) and a.nfe == b.nfe


def test_samplers_that_differ_are_not_keyed_as_one():
    """dpm1 is Euler in exact arithmetic (test_ddim_is_euler_is_dpm1) but another sequence of float operations, so
    it keeps its own key; so does every NFE that buys one more step."""
    assert same_samples_as("dpm1", 7) != same_samples_as("euler", 7)
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(solve(GaussianData(), x, make_kernel("edm"), "dpm1", 7).x,
                           solve(GaussianData(), x, make_kernel("edm"), "euler", 7).x)
    keys = {same_samples_as(name, nfe) for name in SAMPLERS for nfe in range(SAMPLERS[name].min_nfe, 40)
            if SAMPLERS[name].max_nfe is None or nfe <= SAMPLERS[name].max_nfe}
    runs = {(SAMPLERS[name].fn, SAMPLERS[name].steps(name, nfe)) for name, nfe in keys}
    assert len(runs) == len(keys)  # one key per (function, steps): no two keys name one solve


def test_a_dpm_order_first_shows_at_its_minimum_nfe():
    """Multistep DPM-Solver++ of order k takes k steps to reach order k, and its step to sigma = 0 returns D: at
    NFE k it computes what order k - 1 does (so its minimum is k + 1), and at k + 1 something else."""
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = lambda n: make_grid("edm", make_kernel("edm"), n)  # noqa: E731
    for k in (2, 3):
        assert SAMPLERS[f"dpm{k}"].min_nfe == k + 1
        assert torch.equal(sample_dpmpp(GaussianData(), x, grid(k), order=k).x,
                           sample_dpmpp(GaussianData(), x, grid(k), order=k - 1).x)
        assert not torch.equal(solve(GaussianData(), x, make_kernel("edm"), f"dpm{k}", k + 1).x,
                               solve(GaussianData(), x, make_kernel("edm"), f"dpm{k - 1}", k + 1).x)


@pytest.mark.parametrize("name, nfe, minimum", [("heun", 2, "at least 3"), ("dpm3", 3, "at least 4"),
                                                ("dpm2", 2, "at least 3"), ("consistency", 4, "exactly 1")])
def test_too_small_nfe_is_refused_with_the_minimum(name, nfe, minimum):
    with pytest.raises(ValueError, match=f"sampler '{name}' needs {minimum} denoiser evaluations, got NFE={nfe}"):
        solve(GaussianData(), torch.randn(2), make_kernel("edm"), name, nfe)


def test_unknown_sampler_and_grid_list_valid_names():
    with pytest.raises(UnknownNameError, match="valid samplers: consistency, ddim, dpm1, dpm2, dpm3, euler, heun"):
        solve(GaussianData(), torch.randn(2), make_kernel("edm"), "dpm4", 10)
    with pytest.raises(UnknownNameError, match="valid grids: edm, logsnr, uniform-t"):
        solve(GaussianData(), torch.randn(2), make_kernel("edm"), "euler", 10, grid="karras")


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("kernel", ["vp", "ve", "edm", "subvp", "vp-discrete"])
def test_grids_span_the_kernel(grid, kernel):
    k = make_kernel(kernel)
    s = make_grid(grid, k, 12)
    assert len(s) == 13 and s[-1] == 0
    assert float(s[0]) == pytest.approx(k.sigma_max, rel=1e-12)
    assert float(s[-2]) == pytest.approx(k.sigma_min, rel=1e-12)
    assert bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize("kernel", ["vp", "ve", "edm", "subvp", "vp-discrete"])
def test_each_grid_is_uniform_in_its_own_variable(kernel):
    """uniform-t in the kernel's time, logsnr in log sigma, edm in sigma^(1/7) (Karras et al. 2022, Eq. 5): the
    endpoints alone would not tell one spacing from another."""
    k = make_kernel(kernel)
    for grid, variable in (("uniform-t", lambda s: k.t(s)), ("logsnr", torch.log), ("edm", lambda s: s ** (1 / 7))):
        v = variable(make_grid(grid, k, 12)[:-1].double())
        steps = v[1:] - v[:-1]
        assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=1e-9), (grid, steps)


def _models():
    torch.manual_seed(0)
    net = wrap(TinyEpsNet(), "vp", "eps", sample_shape=(3, 8, 8))
    data = torch.rand(32, 3, 8, 8) * 2 - 1
    return {"network": net, "optimal": OptimalDenoiser(data, chunk_size=7)}


@pytest.mark.parametrize("model", ["network", "optimal"])
@pytest.mark.parametrize("sampler, nfe", [("dpm3", 10), ("heun", 9)])
def test_bit_identical_whatever_the_batch(model, sampler, nfe):
    """The same noise gives the same bits whether sampled alone, in any subset or in any order."""
    D = _models()[model]
    bank = NoiseBank.draw(7, (3, 8, 8), n=40)
    kernel = make_kernel("vp")
    full = generate(D, kernel, bank, sampler=sampler, nfe=nfe).x
    for ids in ([5], [38, 3, 17], list(range(39, -1, -1))):
        part = generate(D, kernel, bank, ids, sampler=sampler, nfe=nfe).x
        assert torch.equal(part, full[ids])
    again = generate(D, kernel, bank, sampler=sampler, nfe=nfe).x
    assert torch.equal(again, full)


def test_sampling_never_touches_global_random_streams():
    net, bank, kernel = _models()["network"], NoiseBank.draw(0, (3, 8, 8), n=4), make_kernel("vp")  # they seed
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    generate(net, kernel, bank, sampler="heun", nfe=5)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_nan_output_stops_sampling_with_the_noise_ids():
    data = GaussianData()

    def broken(x, sigma, label=None):
        out = data(x, sigma)
        out[1] = math.nan  # the second row of every micro-batch
        return out

    bank = NoiseBank.draw(0, (2,), ids=[10, 11, 12, 13, 14])
    with pytest.raises(NonFiniteError, match=r"for noise ids \[11\]"):
        generate(broken, make_kernel("edm"), bank, sampler="euler", nfe=4, micro_batch=4)


def test_noise_bank_shape_must_match_the_model():
    bank = NoiseBank.draw(0, (3, 16, 16), n=2)
    expected = r"noise bank shape \(3, 16, 16\) does not match the model's sample shape \(3, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        generate(_models()["network"], make_kernel("vp"), bank)


def test_a_heun_step_refuses_rows_that_end_at_zero_beside_rows_that_do_not():
    from models.samplers import heun_step

    x = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="some rows end at sigma 0 and others do not"):
        heun_step(lambda x, s, label=None: torch.zeros_like(x), x, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.0]))
    zero = lambda x, s, label=None: torch.zeros_like(x)
    both = heun_step(zero, x, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(both, x / 2)  # D = 0: x(sigma) = x * sigma / sigma_0, exact for Heun


def _coarse_levels(sigmas: torch.Tensor) -> torch.Tensor:
    """A network's discrete levels, as an iDDPM pickle rounds them: 40 levels log-spaced over the EDM range."""
    levels = torch.logspace(math.log10(0.002), math.log10(80.0), 40, dtype=torch.float64)
    return levels[(sigmas[:, None] - levels[None]).abs().argmin(1)]


@pytest.mark.parametrize("sampler", ["dpm2", "dpm3", "heun"])
def test_a_grid_rounded_onto_fewer_levels_keeps_each_level_once(sampler):
    """64 grid points on 40 levels repeat some: a zero step made DPM-Solver++ divide by h = 0 (NaN)."""
    k = make_kernel("edm", round_sigma=_coarse_levels)
    s = make_grid("edm", k, 64)
    assert bool((s[1:] < s[:-1]).all()) and len(s) - 1 < 64
    out = solve(GaussianData(), 80 * torch.randn(8, dtype=torch.float64), k, sampler, 64)
    assert torch.isfinite(out.x).all() and out.nfe <= 64


def test_a_uniform_t_range_beyond_a_discrete_chains_levels_is_refused():
    """A discrete chain's t stops at its first and last levels: sigma_min 0.002 silently became its first level
    (0.01) and sigma_max 400 its last (157), where the EDM grid keeps the range it is asked for."""
    chain = make_kernel("vp-discrete")
    grid = make_grid("uniform-t", chain, 4)
    assert float(grid[0]) == pytest.approx(chain.sigma_max, rel=1e-12)
    assert float(grid[-2]) == pytest.approx(chain.sigma_min, rel=1e-12)
    for end, value in (("sigma_min", 0.002), ("sigma_max", 400.0)):
        with pytest.raises(ValueError, match=rf"a uniform-t grid needs {end} {value:g} within the vp-discrete kernel's "
                                             rf"levels \[0.01\d*, 157.\d*\]"):
            make_grid("uniform-t", chain, 4, **{end: value})


def test_a_grid_start_other_than_the_kernels_prior_is_refused():
    """The bank noise starts at the kernel's sigma_max; a grid from another level would start from a state scaled
    for the wrong level (EDM kernel, data std 0.5: sample std 4.0 from sigma_max 10)."""
    from models.generate import invert

    k, data = make_kernel("edm"), GaussianData()
    bank = NoiseBank.draw(0, (4,), n=4)
    with pytest.raises(ValueError, match=r"sigma_max=10.0 differs from the kernel's sigma_max 80, .*t_max for vp"):
        generate(data, k, bank, nfe=10, sigma_max=10.0)
    with pytest.raises(ValueError, match=r"sigma_max=10.0 differs"):
        invert(data, torch.zeros(2, 4), k, steps=10, sigma_max=10.0)
    assert torch.equal(generate(data, k, bank, nfe=10, sigma_max=80.0).x, generate(data, k, bank, nfe=10).x)
    assert torch.isfinite(generate(data, k, bank, nfe=10, sigma_min=0.01).x).all()  # the low end may move


@pytest.mark.parametrize("sampler", ["euler", "ddim", "heun", "dpm1", "dpm2", "dpm3"])
def test_every_sampler_passes_the_label_to_every_evaluation(sampler):
    """A class-conditional D* sampled under class c equals D* of class c's images alone, whatever the sampler: a
    solver that dropped the label in one of its evaluations (e.g. Heun's corrector) would mix the classes."""
    from models.generate import generate
    from models.noise import NoiseBank

    data = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    labels = torch.tensor([0, 1] * 4)
    kernel, bank = make_kernel("edm"), NoiseBank.draw(0, (3, 4, 4), n=4)
    both = OptimalDenoiser(data, labels, dtype=torch.float64)
    for c in (0, 1):
        alone = OptimalDenoiser(data[labels == c], dtype=torch.float64)
        got = generate(both, kernel, bank, sampler=sampler, nfe=6, label=c).x
        want = generate(alone, kernel, bank, sampler=sampler, nfe=6).x
        assert torch.allclose(got, want, atol=1e-10), (sampler, c)


def test_a_heun_step_with_one_sigma_per_row_on_the_device_never_waits_for_it():
    """Consistency distillation's teacher step passes one sigma per row on the training device: Heun read
    `last.any()` and `last.all()` back from it, two waits a training step on a GPU ('meta' stands in for it)."""
    from models.samplers import heun_step

    x = torch.empty(3, 3, 8, 8, device="meta")
    s = torch.empty(3, dtype=torch.float64, device="meta")
    out = heun_step(lambda x, sigma, label=None: x * 0.5, x, s, s * 0.5)
    assert out.device.type == "meta" and out.shape == x.shape


def test_the_device_path_of_a_heun_step_gives_each_rows_own_step(monkeypatch):
    """The per-row path taken for sigmas on a GPU, run on the CPU: a row ending at sigma 0 takes the Euler step, the
    others Heun's, as each row stepped alone."""
    import models.samplers as samplers

    gaussian = GaussianData()

    def data(x, sigma, label=None):  # GaussianData's D, with one sigma per row too
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        return gaussian(x, sigma.reshape(-1, 1, 1, 1) if sigma.ndim else sigma)

    x = torch.randn(3, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    s, t = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 0.0, 0.1], dtype=torch.float64)
    alone = torch.cat([samplers.heun_step(data, x[i:i + 1], s[i], t[i]) for i in range(3)])
    monkeypatch.setattr(samplers, "_on_device", lambda sigma: True)
    assert torch.allclose(samplers.heun_step(data, x, s, t), alone, rtol=0, atol=1e-12)

"""Deterministic DPS (paper Algorithm 1) for inpainting with centred square masks (Appendix F)."""
import pytest
import torch

from models.inverse import MASK_FRACTIONS, dps, dps_runner, inpainting_mask, make_mask
from models.grids import make_grid
from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.generate import generate


def test_masks_match_appendix_f_on_cifar_size():
    # Appendix F: on 32 x 32, "easy" is a 16 x 16 square (25%), "hard" 25 x 25 (61%)
    assert (1 - make_mask("easy", 32)).sum() == 16 * 16
    assert (1 - make_mask("hard", 32)).sum() == 25 * 25
    keep = inpainting_mask(16, 0.25)
    assert keep[0, 0, 4:12, 4:12].sum() == 0 and keep.sum() == 256 - 64  # centred
    with pytest.raises(ValueError, match="unknown mask 'medium'; valid masks: easy, hard"):
        make_mask("medium", 16)
    assert set(MASK_FRACTIONS) == {"easy", "hard"}


class DifferentiableOptimal:
    """D*(x; sigma) = softmax_i(-||x - y_i||^2 / 2 sigma^2) @ y, in plain autograd ops (DPS needs its gradient;
    models.optimal.OptimalDenoiser is the fast no-grad form of the same closed form)."""

    def __init__(self, data):
        self.y = data.reshape(len(data), -1).double()

    def __call__(self, x, sigma, label=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        d2 = torch.cdist(x.reshape(len(x), -1), self.y) ** 2
        return (torch.softmax(-d2 / (2 * sigma**2), dim=1) @ self.y).reshape(x.shape)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    data = torch.rand(32, 3, 8, 8, generator=g) * 2 - 1
    return DifferentiableOptimal(data), make_kernel("edm"), data


def test_the_test_denoiser_is_the_optimal_denoiser(setup):
    D, _, data = setup
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(D(x, 0.7), OptimalDenoiser(data, dtype=torch.float64)(x, 0.7), atol=1e-9)


def test_dps_fits_the_observation_and_is_deterministic(setup):
    D, kernel, data = setup
    truth = data[:4].double()
    keep = make_mask("easy", 8)
    sigmas = make_grid("edm", kernel, 34)
    x = kernel.initial_state(NoiseBank.draw(0, (3, 8, 8), n=4).eps.double())
    guided = dps(D, x, kernel, sigmas, keep * truth, keep).x
    again = dps(D, x, kernel, sigmas, keep * truth, keep).x
    free = dps(D, x, kernel, sigmas, keep * truth, keep, xi=0.0).x
    assert torch.equal(guided, again)
    err = lambda y: float((keep * (y - truth)).abs().sum() / keep.sum() / 3 / 4)
    # the data-consistency step pulls towards the observation (measured: 0.34 guided vs 0.63 unguided, xi = 1)
    assert err(guided) < 0.75 * err(free)


class SmoothDenoiser:
    """A smooth, row-wise denoiser (a fixed random convolution under tanh, blended by sigma): unlike D*, which snaps
    each output onto one training image at small sigma and so hides small effects between rows, every row's
    guidance shows in its image."""

    def __init__(self, seed: int = 0):
        self.w = torch.randn(3, 3, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / 9

    def __call__(self, x, sigma, label=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
        scale = 1 / (1 + sigma**2)
        return scale * x + (1 - scale) * torch.tanh(torch.nn.functional.conv2d(x * scale.sqrt(), self.w, padding=1))


def test_dps_runner_is_batch_invariant(setup):
    """Each row's guidance is the gradient of its own residual: the rows of a micro-batch, its padding and the other
    rows' observations do not move a row. Checked on a smooth denoiser, where a coupling shows: the guidance of DPS's
    own code (one norm over the whole batch, not squared) moves them by up to 1.19 here (measured), and passed on D*."""
    _, kernel, data = setup
    D = SmoothDenoiser()
    bank = NoiseBank.draw(0, (3, 8, 8), n=5)
    run = dps_runner(kernel, data[:5], make_mask("hard", 8), steps=10)
    whole = generate(D, kernel, bank, run=run, micro_batch=4).x
    single = torch.cat([generate(D, kernel, bank, ids=[i], run=dps_runner(kernel, data[i:i + 1], make_mask("hard", 8),
                                                                            steps=10), micro_batch=4).x
                        for i in range(5)])
    assert torch.allclose(whole, single, atol=1e-10)


def test_dps_on_a_vp_kernel_is_algorithm_1_written_in_x_t(setup):
    """The paper's Algorithm 1 runs on x_t = s_t x_hat; the suite runs it in sigma-space, where the guidance step
    becomes grad / (s_i s_(i-1)). Written out here in x_t with DDIM steps (DPM-Solver++ of order 1) on the VP
    kernel, whose s_t < 1: the two agree to float64 rounding (s = 1 on the EDM kernel hides that factor)."""
    D, _, data = setup
    kernel = make_kernel("vp")
    truth, keep = data[:3].double(), make_mask("hard", 8)
    sigmas = make_grid("edm", kernel, 12)
    x_hat = kernel.initial_state(NoiseBank.draw(0, (3, 8, 8), n=3).eps.double())
    s_of = lambda sigma: float(kernel.s_of_sigma(torch.as_tensor(float(sigma), dtype=torch.float64)))  # noqa: E731
    x_t = s_of(sigmas[0]) * x_hat
    for sig, nxt in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        s, s_next = s_of(sig), s_of(nxt)
        xg = x_t.detach().requires_grad_(True)
        x0 = D(xg / s, sig)  # the model in x_t: x0_hat(x_t) = D(x_t / s_t; sigma_t)
        grad, = torch.autograd.grad(((keep * truth - keep * x0) ** 2).sum(), xg)  # Algorithm 1, line 5
        x0 = x0.detach()
        if nxt == 0:
            break  # line 7: return x0_hat
        ddim = s_next * nxt / (s * sig) * x_t + s_next * (1 - nxt / sig) * x0  # line 4, first order
        x_t = ddim - 1.0 * grad  # xi_i = 1 (Appendix F)
    got = dps(D, x_hat, kernel, sigmas, keep * truth, keep, order=1).x
    assert s_of(sigmas[1]) < 0.1  # the factor is far from 1 on this grid
    torch.testing.assert_close(got, x0, rtol=1e-9, atol=1e-9)  # float64 on both sides


def test_every_network_call_of_dps_has_gradients_on_so_no_runner_changes_its_samples(setup):
    """What lets the store key DPS sets without the network's runner (fixtures/samples.py): a traced or compiled
    runner calls the module itself whenever gradients are on (models/fast.py), and DPS calls it only so."""
    D, kernel, data = setup
    modes = []

    def recording(x, sigma, label=None):
        modes.append(torch.is_grad_enabled())
        return D(x, sigma, label)

    bank = NoiseBank.draw(0, (3, 8, 8), n=3)
    run = dps_runner(kernel, data[:3], make_mask("easy", 8), steps=6)
    with torch.no_grad():  # as the sample source calls it
        generate(recording, kernel, bank, run=run, micro_batch=4)
    assert run.module_only and len(modes) == 6 and all(modes)


@pytest.mark.parametrize("fraction, side", [(0.0009, 0), (0.97, 16)])
def test_a_mask_that_rounds_to_no_hole_or_no_observation_is_refused(fraction, side):
    """inpainting_mask(16, 0.0009) hid no pixel and (16, 0.97) every pixel: DPS then had nothing to inpaint, or
    nothing observed (plain sampling, scored over the whole image)."""
    with pytest.raises(ValueError, match=rf"mask fraction {fraction} of a 16 px image rounds to a square of side "
                                         rf"{side}"):
        inpainting_mask(16, fraction)


@pytest.mark.parametrize("change, message", [
    (dict(xi=-1.0), r"step size xi must be a finite number >= 0, got -1.0"),
    (dict(xi=float("nan")), r"got nan"),
    (dict(observed=torch.zeros(2, 3, 4, 4)), r"the state's shape \(2, 3, 8, 8\), got \(2, 3, 4, 4\)"),
    (dict(keep=torch.full((1, 1, 8, 8), 0.5)), r"only 0 \(hidden\) and 1 \(observed\), got values \[0.5\]"),
    (dict(keep=torch.ones(1, 1, 8, 1)), r"cover the state's image, shape \(1 or 2, 1 or 3, 8, 8\), got \(1, 1, 8, 1\)"),
    (dict(keep=torch.ones(1, 1, 4, 4)), r"got \(1, 1, 4, 4\)"),
    (dict(keep=torch.zeros(1, 1, 8, 8)), r"hide some pixels and observe others, got all hidden"),
    (dict(keep=torch.ones(1, 1, 8, 8)), r"got all observed"),
    (dict(order=4), r"order 1, 2 or 3, got order 4"),
    (dict(sigmas="no zero"), r"falling strictly to 0, got \[80, 9.723, 0.47, 0.002\]"),
    (dict(sigmas="rising"), r"falling strictly to 0, got \[0, 0.002, "),
])
def test_bad_dps_inputs_are_refused_by_name(setup, change, message):
    """A negative xi ascended the residual, a NaN one showed up only in the next network call, and a mask of other
    values or an observation of another shape broadcast silently."""
    D, kernel, data = setup
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 80
    args = dict(observed=torch.zeros(2, 3, 8, 8, dtype=torch.float64), keep=make_mask("easy", 8), xi=1.0, order=3,
                sigmas=make_grid("edm", kernel, 4, append_zero=True))
    args |= change
    # a grid without its final 0 returned the state at sigma_min (std 2.15 against the data's 0.57), a rising one a
    # tensor; a mask of another size broadcast silently or failed in torch's words, and an all-0 one was plain sampling
    args["sigmas"] = {"no zero": make_grid("edm", kernel, 4, append_zero=False),
                      "rising": make_grid("edm", kernel, 4, append_zero=True).flip(0)}.get(args["sigmas"], args["sigmas"])
    with pytest.raises(ValueError, match=message):
        dps(D, x, kernel, args["sigmas"], args["observed"], args["keep"], xi=args["xi"], order=args["order"])


@pytest.mark.parametrize("change, message", [
    (dict(steps=1), r"steps >= 2 \(one step to sigma 0 is unguided sampling\), got 1"),
    (dict(xi=-0.5), r"xi must be a finite number >= 0, got -0.5"),
    (dict(order=0), r"order 1, 2 or 3, got order 0"),
    (dict(order=2.0), r"order 1, 2 or 3, got order 2.0"),
    (dict(xi=True), r"xi must be a finite number >= 0, got True"),
    (dict(truth="255"), r"data range \[-1, 1\], got values in \[.*, 2\d\d"),
    (dict(truth="4 px"), r"images \(N, C, H, W\) of the mask's size \(8, 8\), got shape \(5, 3, 4, 4\)"),
])
def test_bad_dps_runner_inputs_are_refused_when_it_is_built(setup, change, message):
    """steps=1 gave the unguided sample bit for bit; truth in 0-255 was taken as it was; xi and order were checked only
    at the first micro-batch."""
    _, kernel, data = setup
    truth = {"255": (data[:5] + 1) * 127.5, "4 px": data[:5, :, :4, :4]}.get(change.pop("truth", None), data[:5])
    with pytest.raises(ValueError, match=message):
        dps_runner(kernel, truth, make_mask("hard", 8), **change)


def test_a_noise_position_without_ground_truth_is_named(setup):
    D, kernel, data = setup
    run = dps_runner(kernel, data[:3], make_mask("hard", 8), steps=3)
    with pytest.raises(ValueError, match=r"noise position 4 has no ground truth: 3 images given"):
        generate(D, kernel, NoiseBank.draw(0, (3, 8, 8), n=5), run=run, micro_batch=8)


def test_a_ground_truth_of_other_channels_than_the_models_is_named(setup):
    """One grey channel was broadcast into all three of an RGB model's (the sampled set made as if observed)."""
    D, kernel, data = setup
    run = dps_runner(kernel, data[:3, :1], make_mask("hard", 8), steps=3)
    with pytest.raises(ValueError, match=r"the ground truth has 1 channel\(s\), the model samples 3"):
        generate(D, kernel, NoiseBank.draw(0, (3, 8, 8), n=3), run=run, micro_batch=8)


def test_the_last_dps_step_makes_no_backward_pass(setup, monkeypatch):
    """The last step returns x0_hat itself: its gradient went unused (one backward pass of 34 wasted)."""
    D, kernel, data = setup
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    keep = make_mask("easy", 8)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 80
    dps(D, x, kernel, make_grid("edm", kernel, 5, append_zero=True), keep * data[:2].double(), keep)
    assert len(calls) == 4  # 5 steps, the last to sigma 0


def test_dps_on_a_gpu_takes_the_deterministic_backward_kernels_and_gives_them_back():
    """Every DPS step backpropagates through attention; on a GPU the memory-efficient attention kernel's backward is
    not deterministic, nor are cuDNN's default convolution backwards: a DPS set was not a function of its noise and
    observation alone. The settings are checked here without a GPU (they are flags)."""
    from models.inverse import deterministic_backward

    before = (torch.backends.cudnn.deterministic, torch.backends.cuda.flash_sdp_enabled(),
              torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    with deterministic_backward(torch.device("cuda")):
        assert torch.backends.cudnn.deterministic and torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
    assert (torch.backends.cudnn.deterministic, torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == before
    with deterministic_backward(torch.device("cpu")):  # a CPU run: nothing changes
        assert torch.backends.cudnn.deterministic == before[0]
        assert torch.backends.cuda.flash_sdp_enabled() == before[1]

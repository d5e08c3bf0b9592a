"""The closed-form optimal denoiser of Theorem 1 (paper, Eq. 2; Appendix D, Eq. 17)."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.generate import generate


def reference(data, x, sigma):
    """Direct softmax over the whole dataset in float64: the formula, unchunked."""
    d2 = torch.cdist(x.reshape(len(x), -1).double(), data.reshape(len(data), -1).double()) ** 2
    w = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    return (w @ data.reshape(len(data), -1).double()).reshape(x.shape)


@pytest.fixture
def data():
    return torch.rand(24, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0, 80.0])
@pytest.mark.parametrize("chunk_size, batch_size", [(1, 1), (5, 3), (24, 64), (1000, 2)])
def test_chunked_equals_unchunked(data, sigma, chunk_size, batch_size):
    x = data[:10] + sigma * torch.randn(10, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    D = OptimalDenoiser(data, chunk_size=chunk_size, batch_size=batch_size, dtype=torch.float64)
    assert torch.allclose(D(x, sigma), reference(data, x, sigma), rtol=0, atol=1e-12)


def test_float32_agrees_with_float64(data):
    x = data[:8] + 0.3 * torch.randn(8, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = OptimalDenoiser(data.float(), chunk_size=5)(x.float(), 0.3)
    assert torch.allclose(got.double(), reference(data, x, 0.3), atol=1e-5)  # float32 rounding of O(1) values


def test_subnormal_weights_are_flushed_to_zero():
    """A weight under float32's smallest normal number (2^-126 of the largest) is 0: far below the resolution of the
    sums it joins, and subnormal operands slow the CPU's matrix products sixfold (models/optimal.py)."""
    from models.optimal import _flush_subnormal

    tiny = torch.finfo(torch.float32).tiny
    assert _flush_subnormal(torch.tensor([1.0, tiny, tiny / 2, 1e-45, 0.0])).tolist() == [1.0, tiny, 0.0, 0.0, 0.0]
    data = torch.stack([torch.zeros(4), torch.ones(4)])
    sigma = (4 / (2 * 95.0)) ** 0.5  # the second image's weight is exp(-95) = 5.5e-42, a float32 subnormal
    got = OptimalDenoiser(data)(torch.zeros(1, 4), sigma)
    assert torch.equal(got, torch.zeros(1, 4))  # unflushed it would be 5.5e-42 in every pixel
    assert torch.allclose(got.double(), reference(data.double(), torch.zeros(1, 4, dtype=torch.float64), sigma),
                          rtol=0, atol=1e-40)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_sigma_0_d_star_is_the_nearest_training_image(data, dtype):
    """D*'s limit as sigma -> 0 (Theorem 1), also where 1 / sigma^2 overflows the dtype (float32 at 1e-20), row by row
    beside rows of positive sigma, which keep their softmax; without the limit the logits were inf - inf (NaN)."""
    x = (data[[3, 7, 20, 5]] + 0.01 * torch.randn(4, 3, 4, 4, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(3))).to(dtype)
    D = OptimalDenoiser(data.to(dtype), chunk_size=5, dtype=dtype)
    sigma = torch.tensor([0.0, 1e-20, 0.0, 0.5], dtype=torch.float64)
    got = D(x, sigma)
    assert torch.equal(got[:3], data[[3, 7, 20]].to(dtype))
    assert torch.equal(got[3:], D(x[3:], 0.5))
    assert torch.equal(D(x[:1], 0.0), data[[3]].to(dtype))


@pytest.mark.parametrize("dtype, sigmas", [(torch.float32, [1e-17, 1e-18, 1e-19, 3e-20]),
                                           (torch.float64, [1e-150, 1e-153, 1e-154, 1e-155])])
def test_a_sigma_whose_logits_overflow_gives_the_nearest_image_not_nan(data, dtype, sigmas):
    """1 / sigma^2 was finite but the logits (x.y - ||y||^2 / 2) / sigma^2 overflowed: inf - inf, NaN out (float32 at
    1e-19, float64 at 1e-154, on these images), between the sigmas that gave the softmax and those that gave the
    limit."""
    x = (data[[3, 7]] + 0.01 * torch.randn(2, 3, 4, 4, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(3))).to(dtype)
    D = OptimalDenoiser(data.to(dtype), chunk_size=5, dtype=dtype)
    for sigma in sigmas:
        assert torch.equal(D(x, sigma), data[[3, 7]].to(dtype)), sigma


def test_a_query_that_is_not_finite_gives_nan_at_sigma_0_too(data):
    """At sigma 0 no score beat the first (NaN > best is False): a diverged state came back as training image 0."""
    x = data[[3, 7]].float().clone()
    x[0, 0, 0, 0] = float("nan")
    D = OptimalDenoiser(data.float())
    for sigma in (0.0, 1.0):
        got = D(x, sigma)
        assert bool(torch.isnan(got[0]).all()) and bool(torch.isfinite(got[1]).all()), sigma
    assert torch.equal(D(x, 0.0)[1], data[7].float())


def test_per_row_sigma(data):
    x = data[:3] + 0.2
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    got = OptimalDenoiser(data, dtype=torch.float64)(x, sigma)
    for i in range(3):
        assert torch.allclose(got[i:i + 1], reference(data, x[i:i + 1], float(sigma[i])), atol=1e-12)

    # one level in any shape serves every row; a per-row level in (n, 1, 1, 1) is the same as (n,)
    D = OptimalDenoiser(data, dtype=torch.float64)
    for one in (torch.tensor([1.0]), torch.tensor(1.0), torch.ones(1, 1, 1, 1), 1.0):
        assert torch.equal(D(x, one), D(x, torch.ones(3, dtype=torch.float64)))
    assert torch.equal(D(x, sigma.reshape(3, 1, 1, 1)), got)
    with pytest.raises(ValueError, match=r"one per row of x \(3 rows\), got shape \(2,\)"):
        D(x, sigma[:2])

@pytest.mark.parametrize("kernel", ["vp", "ve", "edm"])
def test_one_training_image_every_noise_maps_to_it(kernel):
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    bank = NoiseBank.draw(3, (3, 8, 8), n=16)
    out = generate(OptimalDenoiser(image, dtype=torch.float64), make_kernel(kernel), bank, sampler="dpm3", nfe=12)
    assert torch.allclose(out.x, image.expand_as(out.x), atol=1e-9)


@pytest.mark.parametrize("sampler, nfe", [("dpm3", 20), ("heun", 35), ("euler", 50)])
def test_samples_are_training_images(data, sampler, nfe):
    """Memorization: every sample lands on a training image, and many distinct ones are reached."""
    bank = NoiseBank.draw(5, (3, 4, 4), n=64)
    out = generate(OptimalDenoiser(data, dtype=torch.float64), make_kernel("vp"), bank, sampler=sampler, nfe=nfe).x
    dist = torch.cdist(out.reshape(64, -1), data.reshape(24, -1))
    assert float(dist.min(1).values.max()) < 1e-6  # within float64 rounding of an image (max pixel error ~1e-9)
    assert len(set(dist.argmin(1).tolist())) >= 12  # 64 noises over 24 images reach at least half of them


@pytest.mark.parametrize("sigma", [0.1, 0.7, 3.0])
def test_minimizes_the_denoising_loss(data, sigma):
    """D* minimizes E||D(y + sigma n) - y||^2; per x the posterior loss is L(D*) + ||D - D*||^2, so any
    perturbation is worse. Checked exactly per x, and by Monte Carlo over (y, n)."""
    g = torch.Generator().manual_seed(4)
    D = OptimalDenoiser(data, dtype=torch.float64)
    y = data[torch.randint(len(data), (4096,), generator=g)]
    x = y + sigma * torch.randn(y.shape, generator=g, dtype=torch.float64)
    best = D(x, sigma)
    flat = data.reshape(len(data), -1)
    w = torch.softmax(-torch.cdist(x.reshape(len(x), -1), flat) ** 2 / (2 * sigma**2), 1)

    def posterior_loss(d):
        return (w * torch.cdist(d.reshape(len(x), -1), flat) ** 2).sum(1)

    for delta in (0.01, 0.1):
        worse = best + delta * torch.randn(best.shape, generator=g, dtype=torch.float64)
        assert bool((posterior_loss(worse) >= posterior_loss(best) - 1e-9).all())
        assert ((worse - y) ** 2).mean() > ((best - y) ** 2).mean()
    blurred = D(x, 1.5 * sigma)  # the right formula at the wrong noise level
    assert bool((posterior_loss(blurred) >= posterior_loss(best) - 1e-9).all())


def test_class_conditional_uses_only_that_class(data):
    labels = torch.arange(24) % 3
    D = OptimalDenoiser(data, labels=labels, dtype=torch.float64)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    label = torch.tensor([0, 1, 2, 2, 1, 0])
    got = D(x, 0.4, label)
    for i in range(6):
        members = data[labels == label[i]]
        assert torch.allclose(got[i:i + 1], reference(members, x[i:i + 1], 0.4), atol=1e-12)
    assert D.num_classes == 3
    with pytest.raises(ValueError, match=r"label 7 has no training images; labels present: \[0, 1, 2\]"):
        D(x[:1], 0.4, torch.tensor([7]))
    # classes 0 and 2 only: three classes (a random label in 0..2 may be 1, which it refuses), not two
    gap = OptimalDenoiser(data, labels=labels * (labels != 1) * 1 + 2 * (labels == 1), dtype=torch.float64)
    assert gap.num_classes == 3
    with pytest.raises(ValueError, match=r"label 1 has no training images; labels present: \[0, 2\]"):
        gap(x[:1], 0.4, torch.tensor([1]))
    for bad in (labels - 1, labels.double()):
        with pytest.raises(ValueError, match=r"class labels are integers 0, 1, 2, ..., got"):
            OptimalDenoiser(data, labels=bad)


def test_class_grouping_is_found_once_per_label_tensor(data, monkeypatch):
    """A sampler passes one label tensor to every step: its rows are grouped by class once (on a GPU each grouping
    waits for the device), and found again only while the tensor is unchanged; an in-place write regroups."""
    labels = torch.arange(24) % 3
    D = OptimalDenoiser(data, labels=labels, dtype=torch.float64)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    label = torch.tensor([0, 1, 2, 2, 1, 0])
    calls = []
    unique = torch.Tensor.unique
    monkeypatch.setattr(torch.Tensor, "unique", lambda self, *a, **k: calls.append(1) or unique(self, *a, **k))
    first = D(x, 0.4, label)
    for sigma in (0.4, 0.2, 0.1):
        D(x, sigma, label)
    assert len(calls) == 1
    assert torch.equal(D(x, 0.4, label), first)

    label[0] = 2  # in place: the cached grouping no longer describes the tensor
    got = D(x, 0.4, label)
    assert len(calls) == 2
    assert torch.allclose(got[:1], reference(data[labels == 2], x[:1], 0.4), atol=1e-12)
    assert torch.equal(got[1:], first[1:])
    assert torch.equal(D(x, 0.4, label.clone()), got)  # another tensor with the same classes: grouped anew, same rows
    assert len(calls) == 3


def test_cifar10_size_fits_a_2_gib_working_budget():
    """N = 50,000 images of 3x32x32 (CIFAR-10's size), batch 64, float32 on CPU: the peak memory the
    denoiser adds beside the dataset stays within 2 GiB (issue budget), measured as max RSS."""
    script = textwrap.dedent("""
        import json, resource, torch
        from models.optimal import OptimalDenoiser
        data = torch.empty(50000, 3, 32, 32).uniform_(-1, 1)
        x = torch.randn(64, 3, 32, 32)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = OptimalDenoiser(data, batch_size=64)(x, 1.0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"extra_kib": peak - base, "finite": bool(torch.isfinite(out).all())}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=".")
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["finite"]
    assert got["extra_kib"] < 2 * 1024 * 1024


def test_the_gpu_sizes_give_the_cpu_sizes_output():
    """D* on a GPU takes larger products (fixtures/zoo.py, optimal_sizes); run here on the CPU, they must agree with
    the CPU's sizes within float32 rounding (the sizes change only low bits)."""
    from fixtures.zoo import optimal_sizes

    assert optimal_sizes(torch.device("cpu")) == {}
    sizes = optimal_sizes(torch.device("cuda"))
    assert sizes["batch_size"] > 64 and sizes["chunk_size"] > 1024
    g = torch.Generator().manual_seed(0)
    data = torch.rand(3000, 3, 4, 4, generator=g) * 2 - 1  # more images than one CPU chunk, fewer than one GPU chunk
    x = torch.randn(300, 3, 4, 4, generator=g)
    for sigma in (0.05, 1.0, 20.0):
        want = OptimalDenoiser(data)(x * sigma, sigma)
        got = OptimalDenoiser(data, **sizes)(x * sigma, sigma)
        # measured: 0, 7.2e-7 and 3.0e-8 at the three sigmas (outputs in [-1, 1]: a few float32 ulps of the
        # largest values, from the changed summation order); 2e-6 leaves room for another BLAS, not for a wrong weight
        assert torch.allclose(got, want, atol=2e-6, rtol=0), (sigma, float((got - want).abs().max()))


def test_a_noise_level_that_is_nan_or_negative_is_refused():
    """NaN fell into the sigma -> 0 branch and came out as a clean training image (a broken grid would have read as
    perfect memorization); a negative sigma was taken as its absolute value. Checked where sigma is on the CPU, as a
    sampler's grid level always is; one sigma per row on a GPU (a training target's draws) is not read back."""
    D = OptimalDenoiser(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), dtype=torch.float64)
    x = torch.tensor([[0.2, 0.3]], dtype=torch.float64)
    for sigma, shown in ((float("nan"), "nan"), (-0.5, "-0.5")):
        with pytest.raises(ValueError, match=rf"D\* takes noise levels sigma >= 0 \(inf allowed\), got \[{shown}\]"):
            D(x, sigma)
    assert torch.equal(D(x, float("inf")), torch.zeros(1, 2, dtype=torch.float64))  # the data's mean
    images = OptimalDenoiser(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"queries of its images' shape \(B, 3, 4, 5\), got \(1, 4, 5, 3\)"):
        images(torch.zeros(1, 4, 5, 3), 1.0)  # NHWC of the same size


def test_labels_of_a_call_that_are_not_integers_are_refused():
    """The constructor refused float labels, a call cut 1.7 and True to class 1."""
    D = OptimalDenoiser(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), labels=torch.tensor([0, 1]))
    for label in (torch.tensor([1.7]), torch.tensor([True])):
        with pytest.raises(ValueError, match=r"class labels are integers 0, 1, 2, \.\.\., got"):
            D(torch.zeros(1, 2), 0.01, label)


def test_images_exactly_as_near_as_each_other_give_their_mean_at_sigma_zero():
    """The softmax weights of two equally near images are equal at every sigma, so the limit is their mean: sigma 0
    gave the first image, a jump from the mean at sigma 1e-153 (float64) or 1e-19 (float32)."""
    y = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    for dtype, small in ((torch.float64, 1e-153), (torch.float32, 1e-19)):
        D = OptimalDenoiser(y, dtype=dtype, chunk_size=1)  # the tie spans two chunks
        x = torch.tensor([[0.0, 0.3]], dtype=dtype)
        assert torch.equal(D(x, small), torch.zeros(1, 2, dtype=dtype))
        assert torch.equal(D(x, 0.0), torch.zeros(1, 2, dtype=dtype))
        one = torch.tensor([[0.4, 0.3]], dtype=dtype)  # no tie: the nearest image itself, bit for bit
        assert torch.equal(D(one, 0.0), y[:1].to(dtype))


def test_a_conditional_d_star_without_class_0_samples_a_partial_micro_batch():
    """Padding rows took class 0, which a D* whose classes start at 1 refuses: the error named a label no one asked
    for. They take the first row's class now, and the rows asked for are the same bits as without padding."""
    data = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    D = OptimalDenoiser(data, labels=torch.tensor([1, 1, 1, 2, 2, 2]), dtype=torch.float64)
    kernel, bank = make_kernel("edm"), NoiseBank.draw(0, (3, 4, 4), n=3)
    padded = generate(D, kernel, bank, sampler="euler", nfe=4, label=2, micro_batch=4).x
    whole = generate(D, kernel, bank, sampler="euler", nfe=4, label=2, micro_batch=3).x
    assert torch.equal(padded, whole)


def test_d_star_never_waits_for_the_device_it_runs_on():
    """D* on a GPU read a bool back from the device at every call (`limit.any()`, the choice of its sigma -> 0
    branch): a wait per step. The 'meta' device stands in for a GPU here: any read of a value raises."""
    from models.generate import solve

    data = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    D = OptimalDenoiser(data, device="meta", chunk_size=3)
    x = torch.empty(2, 3, 4, 4, device="meta")
    assert D(x, torch.tensor(0.0, dtype=torch.float64)).device.type == "meta"  # a grid level on the CPU
    assert D(x, torch.tensor([0.5, 0.0], dtype=torch.float64, device="meta")).device.type == "meta"  # one per row
    kernel = make_kernel("edm")
    for sampler in ("euler", "heun", "dpm3"):
        assert solve(D, x * kernel.sigma_max, kernel, sampler, 6).x.device.type == "meta"

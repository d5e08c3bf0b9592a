"""The SSCD descriptor: calibration on the embedded thumbnails, formats, cache, TorchScript path."""
import os
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.datasets import embedded_photos, to_uint8
from models.descriptor import EmbeddingCache, ImageFormatError, OnnxSSCD, TorchScriptSSCD, make_descriptor, prepare
from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.registry import UnknownNameError
from models.generate import generate
from models.scores import SSCD_THRESHOLD, RPScore, cosine


def smooth_perturbation(images: np.ndarray, mae: float, seed: int) -> np.ndarray:
    """Add a smooth (bicubic-upsampled 3x3) colour field scaled to a mean absolute change of `mae`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2)
    field = F.interpolate(torch.randn(len(x), 3, 3, 3, generator=g), size=x.shape[-2:], mode="bicubic")
    field = field / field.abs().mean(dim=(1, 2, 3), keepdim=True) * mae
    return (x + field).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


class ConstantDescriptor:
    """A broken descriptor: every image gets the same embedding."""

    def embed(self, images):
        return F.normalize(torch.ones(len(images), 512), dim=1)


@pytest.fixture(scope="module")
def thumbs():
    return embedded_photos(100, size=16, seed=0)


def different_photo_fraction(descriptor, thumbs) -> float:
    e = descriptor.embed(thumbs.images)
    lab = torch.from_numpy(thumbs.labels)
    return float(((e @ e.T)[lab[:, None] != lab[None, :]] > SSCD_THRESHOLD).float().mean())


def perturbed_fraction(descriptor, thumbs) -> float:
    e = descriptor.embed(thumbs.images)
    p = descriptor.embed(smooth_perturbation(thumbs.images, 5.0, seed=1))
    return float((cosine(e, p) > SSCD_THRESHOLD).float().mean())


def test_calibration_different_photos_score_low(descriptor, thumbs):
    """Measured before the suite existed (SSCD int8 at 224 px): 0% of different-photo pairs above 0.6;
    the same here on 16 px thumbnails (100 thumbnails, 4,500 pairs of different photos: max similarity 0.47; 400
    thumbnails: 0.54). Bound: at most 1%."""
    assert different_photo_fraction(descriptor, thumbs) <= 0.01


def test_calibration_smooth_perturbation_scores_high(descriptor, thumbs):
    """A smooth perturbation with MAE ~ 5 keeps 90-99% above 0.6 (measured here: 99% of 400 thumbnails)."""
    assert perturbed_fraction(descriptor, thumbs) >= 0.9


def test_calibration_fails_with_a_constant_descriptor(thumbs):
    """The calibration can fail: a constant descriptor calls every different-photo pair a copy."""
    assert different_photo_fraction(ConstantDescriptor(), thumbs) == 1.0
    assert not different_photo_fraction(ConstantDescriptor(), thumbs) <= 0.01


def test_different_noises_give_rp_near_zero(descriptor, thumbs):
    """Negative control (paper Appendix A.2): samples of *different* noise ids from one model are not copies.
    Model: the optimal denoiser on 64 thumbnails (samples are training images; two random noises share
    an image with probability ~1/64). Bound: RP <= 0.1."""
    train = thumbs.subset(64)
    D = OptimalDenoiser(train.as_tensor())
    bank = NoiseBank.draw(0, (3, 16, 16), n=64)
    samples = to_uint8(generate(D, make_kernel("vp"), bank, sampler="dpm3", nfe=10).x)
    e = descriptor.embed(samples)
    shift = torch.roll(torch.arange(64), 1)  # noise i is compared with the sample of noise i - 1
    rp = RPScore()
    rp.update(e, e[shift], bank.ids, bank.ids)
    assert float(rp.compute()) <= 0.1
    same = RPScore()
    same.update(e, e, bank.ids, bank.ids)
    assert float(same.compute()) == 1.0


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 16, 16, 3), dtype=np.float32), "dtype float32"),
    (np.full((2, 16, 16, 3), np.nan, dtype=np.float32), "contains NaN"),
    (np.zeros((2, 3, 16, 16), dtype=np.uint8), r"looks like NCHW"),
    (np.zeros((2, 16, 16, 4), dtype=np.uint8), r"shape \(2, 16, 16, 4\)"),
    (np.zeros((0, 16, 16, 3), dtype=np.uint8), r"shape \(0, 16, 16, 3\)"),
    (np.zeros((16, 16, 3), dtype=np.uint8), r"shape \(16, 16, 3\): one image\? give it a batch axis, \(1, H, W, 3\)"),
    # one grey image read as 16 images one pixel wide; images of no pixels resized to 224 x 224
    (np.zeros((16, 16, 1), dtype=np.uint8), r"shape \(16, 16, 1\): one image\? give it a batch axis, \(1, H, W, 1\)"),
    (np.zeros((2, 0, 16, 3), dtype=np.uint8), r"shape \(2, 0, 16, 3\);"),
    (np.zeros((2, 16, 0, 3), dtype=np.uint8), r"shape \(2, 16, 0, 3\);"),
])
def test_bad_images_are_refused_with_the_expected_format(bad, message):
    with pytest.raises(ImageFormatError, match=message + r".*expected uint8 RGB images in NHWC layout"):
        prepare(bad, 32)


def test_grayscale_is_replicated():
    gray = np.arange(16 * 16, dtype=np.uint8).reshape(1, 16, 16)
    out = prepare(gray, None)
    assert out.shape == (1, 16, 16, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    assert np.array_equal(prepare(gray[..., None], None), out)  # (N, H, W, 1) too


def test_resize_policy(thumbs):
    assert prepare(thumbs.images[:2], 224).shape == (2, 224, 224, 3)
    assert np.array_equal(prepare(thumbs.images[:2], None), thumbs.images[:2])


def test_unknown_descriptor_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid descriptors: sscd-int8, sscd-large, sscd-mixup"):
        make_descriptor("clip")


def test_missing_torchscript_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup"):
        make_descriptor("sscd-mixup", tmp_path / "nope.pt")


class _MeanPool(torch.nn.Module):
    """A tiny stand-in for SSCD: per-channel means and the pixel at (0, 0), as a 6-d embedding."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x[:, :, 0, 0]], dim=1)


def test_torchscript_path_shares_preprocessing(tmp_path, thumbs):
    path = tmp_path / "sscd_disc_mixup.torchscript.pt"
    # the published SSCD checkpoints are TorchScript files: only a scripted stand-in tests their loader
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        torch.jit.script(_MeanPool()).save(str(path))
    d = TorchScriptSSCD("sscd-mixup", path, size=64)
    got = d.embed(thumbs.images[:5])
    x = torch.from_numpy(prepare(thumbs.images[:5], 64)).permute(0, 3, 1, 2).float() / 255
    # ImageNet's mean and std, as SSCD's and the paper's code (edm/sscd.py) normalize, written out here
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(got, F.normalize(_MeanPool()(x), dim=1), atol=1e-6)
    assert d.identity.startswith("sscd-mixup@64:")


def test_cache_reuses_and_recomputes_a_corrupted_entry(tmp_path, thumbs):
    calls = []

    class Counting(ConstantDescriptor):
        identity = "counting@1:0"

        def embed(self, images):
            calls.append(len(images))
            return F.normalize(torch.from_numpy(images.reshape(len(images), -1)[:, :8].astype(np.float32) + 1), dim=1)

    cache = EmbeddingCache(tmp_path)
    first = cache.embed(Counting(), thumbs.images[:10])
    again = cache.embed(Counting(), thumbs.images[:10])
    assert torch.equal(first, again) and calls == [10]
    (entry,) = tmp_path.glob("*.npz")
    key = cache.key(thumbs.images[:10], Counting())
    entry.write_bytes(entry.read_bytes()[:50])  # truncated
    assert torch.equal(cache.embed(Counting(), thumbs.images[:10]), first) and calls == [10, 10]
    with np.load(entry) as z:
        edited, recorded = z["embeddings"] + 0.5, z["sha256"]
    with open(entry, "wb") as f:
        np.savez(f, embeddings=edited, key=np.array(key), sha256=recorded)  # content edited, hash left as it was
    assert torch.equal(cache.embed(Counting(), thumbs.images[:10]), first) and calls == [10, 10, 10]
    cache.embed(Counting(), thumbs.images[:9])  # other content, other key
    assert calls == [10, 10, 10, 9]
    # a valid entry copied over another is not used: the entry's own key must match
    other = cache.path(cache.key(thumbs.images[:9], Counting()))
    other.write_bytes(entry.read_bytes())
    assert cache.embed(Counting(), thumbs.images[:9]).shape == (9, 8) and calls == [10, 10, 10, 9, 9]
    # another descriptor (or size, or weights: its identity) never reuses these embeddings

    class Other(Counting):
        identity = "counting@2:0"

    cache.embed(Other(), thumbs.images[:9])
    assert calls == [10, 10, 10, 9, 9, 9]
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.tmp"))


def test_a_set_that_begins_with_anothers_batches_embeds_only_the_rest(tmp_path, thumbs):
    """The cache keeps a longer set batch by batch (the descriptor's own batches), so the sets of the bank's first n
    noises, which share their first rows across counts, embed each row once; the values are the whole set's."""
    calls = []

    class Batched(ConstantDescriptor):
        identity, batch_size = "batched@1:0", 4

        def embed(self, images):
            calls.append(len(images))
            return F.normalize(torch.from_numpy(images.reshape(len(images), -1)[:, :8].astype(np.float32) + 1), dim=1)

    cache = EmbeddingCache(tmp_path)
    eight = cache.embed(Batched(), thumbs.images[:8])
    assert calls == [4, 4]
    twelve = cache.embed(Batched(), thumbs.images[:12])  # rows 0-7 are two batches already kept
    assert calls == [4, 4, 4] and torch.equal(twelve[:8], eight)
    assert torch.equal(twelve, Batched().embed(thumbs.images[:12])) and calls.pop() == 12  # the whole set at once
    # one batch's rows alone: that batch's entry is this set's entry
    assert torch.equal(cache.embed(Batched(), thumbs.images[:4]), eight[:4]) and calls == [4, 4, 4]
    ten = cache.embed(Batched(), thumbs.images[:10])  # a last batch of 2 rows is a batch of its own
    assert calls == [4, 4, 4, 2] and torch.equal(ten, twelve[:10])
    cache.embed(Batched(), thumbs.images[1:9])  # rows shifted by one: no batch is shared
    assert calls == [4, 4, 4, 2, 4, 4]


def test_embedding_by_batches_equals_embedding_the_whole_set(tmp_path, thumbs):
    """On the real descriptor, a set assembled from its kept batches is the whole set's embedding bit for bit."""
    descriptor = make_descriptor(size=32, batch_size=16)
    cache = EmbeddingCache(tmp_path)
    cache.embed(descriptor, thumbs.images[:32])
    assert torch.equal(cache.embed(descriptor, thumbs.images[:50]), descriptor.embed(thumbs.images[:50]))


class RowSum(ConstantDescriptor):
    """A counting double whose embedding of a row depends on that row only."""
    identity, batch_size = "rowsum@1:0", 4

    def __init__(self, calls=None, batch_size=4):
        self.calls, self.batch_size = [] if calls is None else calls, batch_size

    def embed(self, images):
        self.calls.append(len(images))
        return F.normalize(torch.from_numpy(images.reshape(len(images), -1)[:, :8].astype(np.float32) + 1), dim=1)


def test_a_long_set_is_kept_once_by_its_batches_and_a_hit_marks_its_entries_used(tmp_path, thumbs):
    """A set longer than one batch is kept as its batches' entries only (no row twice), read back from them; a whole
    entry of such a set (the layout before) is still read."""
    d, cache = RowSum(), EmbeddingCache(tmp_path)
    ten = cache.embed(d, thumbs.images[:10])
    assert d.calls == [4, 4, 2] and torch.equal(ten, d.embed(thumbs.images[:10]))
    d.calls.clear()
    entries = sorted(tmp_path.glob("*.npz"))
    assert len(entries) == 3 and not cache.path(cache.key(thumbs.images[:10], d)).exists()
    for e in entries:
        os.utime(e, (1e9, 1e9))
    assert torch.equal(cache.embed(d, thumbs.images[:10]), ten) and d.calls == []
    assert all(e.stat().st_mtime > 1e9 for e in entries)  # read: marked used (models.store prune)

    class Invariant(RowSum):  # the int8 SSCD's kind: its keys did not change with the layout
        batch_invariant = True

    older = EmbeddingCache(tmp_path / "older")  # a whole entry, as the cache kept long sets before
    inv = Invariant(d.calls)
    key = older.key(thumbs.images[:10], inv)
    older._write(older.path(key), key, ten)
    assert torch.equal(older.embed(inv, thumbs.images[:10]), ten) and d.calls == []
    assert torch.equal(older.embed(inv, thumbs.images[:12]), inv.embed(thumbs.images[:12]))
    assert d.calls == [4, 4, 4, 12]  # another set: embedded by its batches, none kept from the whole entry


def test_the_batch_size_is_in_the_key_unless_the_descriptor_is_batch_invariant(thumbs):
    x = thumbs.images[:6]
    assert EmbeddingCache.key(x, RowSum(batch_size=4)) != EmbeddingCache.key(x, RowSum(batch_size=8))
    assert "/batch4/" in EmbeddingCache.key(x, RowSum(batch_size=4))

    class Invariant(RowSum):
        batch_invariant = True

    assert EmbeddingCache.key(x, Invariant(batch_size=4)) == EmbeddingCache.key(x, Invariant(batch_size=8))
    assert OnnxSSCD.batch_invariant and not TorchScriptSSCD.batch_invariant


def test_the_key_names_the_cpu_the_code_and_the_packages_an_embedding_was_made_with(thumbs, monkeypatch):
    """Another CPU (model or instruction set), another release of a back end or another resize gives other low bits:
    each makes its entries again rather than read the first one's."""
    import models.descriptor as descriptor

    x, d = thumbs.images[:6], RowSum(batch_size=4)
    first = EmbeddingCache.key(x, d)
    assert '"capability": ' in first and '"onnxruntime": ' in first
    cpu = descriptor.cpu_identity()
    monkeypatch.setattr(descriptor, "cpu_identity", lambda: cpu | {"capability": "AVX2"})
    assert EmbeddingCache.key(x, d) != first
    monkeypatch.undo()
    versions = dict(descriptor._embedding_versions())
    monkeypatch.setattr(descriptor, "_embedding_versions", lambda: tuple((versions | {"onnxruntime": "0.0"}).items()))
    assert EmbeddingCache.key(x, d) != first
    monkeypatch.undo()
    monkeypatch.setattr(descriptor, "_embedding_code", lambda: "0" * 64)
    assert EmbeddingCache.key(x, d) != first
    monkeypatch.undo()
    assert EmbeddingCache.key(x, d) == first
    # and the code digest is the descriptor module's own source (the resize, the normalization, the back ends' calls)
    from pathlib import Path

    from models.versions import source_digest
    assert descriptor._embedding_code() == source_digest([Path(descriptor.__file__)]) != source_digest([])


def test_the_int8_descriptor_is_batch_invariant(thumbs):
    """What lets the cache key the int8 descriptor's entries without its batch size or threads: a row's embedding has
    the same bits alone, in batches of 4 and of the cache's 64 (a last batch of 2), on one thread and on two, at the
    default input size."""
    x = thumbs.images[:66]
    whole = make_descriptor(threads=2).embed(x)  # batches of 64 and 2
    assert make_descriptor().batch_size == 64
    for size, threads in ((64, 1), (4, 2), (1, 1)):
        assert torch.equal(make_descriptor(batch_size=size, threads=threads).embed(x), whole), (size, threads)


def test_a_gpu_descriptors_cache_key_names_the_gpu(thumbs, monkeypatch):
    from tests.test_claim_suite import fake_gpu

    class OnGpu(RowSum):
        device = torch.device("cuda")

    x = thumbs.images[:6]
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    h100 = EmbeddingCache.key(x, OnGpu())
    assert "NVIDIA H100 80GB HBM3" in h100 and "NVIDIA" not in EmbeddingCache.key(x, RowSum())
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB")
    assert EmbeddingCache.key(x, OnGpu()) != h100
    # TF32 convolutions change a GPU row's low bits, as they do a sample's: a run under NVIDIA_TF32_OVERRIDE=0 was
    # served the TF32 run's embeddings of the same images
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    tf32 = EmbeddingCache.key(x, OnGpu())
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    assert EmbeddingCache.key(x, OnGpu()) != tf32 and '"override": "0"' in EmbeddingCache.key(x, OnGpu())
    assert "tf32" not in EmbeddingCache.key(x, RowSum())


def test_images_that_cannot_form_one_uint8_array_are_refused_naming_the_format():
    """A bfloat16 tensor raised numpy's TypeError, a list of images of two sizes numpy's ValueError."""
    from models.descriptor import ImageFormatError, check_images

    with pytest.raises(ImageFormatError, match=r"dtype torch.bfloat16; expected uint8 RGB images in NHWC"):
        check_images(torch.zeros(2, 4, 4, 3, dtype=torch.bfloat16))
    with pytest.raises(ImageFormatError, match=r"cannot form one array .*all of one size"):
        check_images([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)])


def test_descriptor_settings_out_of_range_are_refused_by_name():
    """size 0 failed inside PIL, batch_size 0 inside range(), threads -3 was taken, an unknown name was a KeyError."""
    from models.descriptor import descriptor_weights, make_descriptor

    for options, says in (({"size": 0}, "size must be a whole number >= 1 (or None: the images' own size), got 0"),
                          ({"size": 16.5}, "size must be a whole number >= 1"),
                          ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
                          ({"threads": -3}, "threads must be a whole number >= 1 (or None: torch's count), got -3")):
        with pytest.raises(ValueError, match=re.escape(says)):
            make_descriptor(**options)
    with pytest.raises(ValueError, match=r"descriptor 'foo' is unknown; valid: sscd-int8, sscd-mixup, sscd-large"):
        descriptor_weights("foo")

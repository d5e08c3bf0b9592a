"""Embedded thumbnails and real-data loaders."""
import pickle

import numpy as np
import pytest

from models.datasets import (OTHER_PHOTOS, PHOTOS, DatasetFormatError, ImageSet, embedded_photos, load_cifar,
                             load_folder, load_npz, save_npz, to_uint8)


def test_embedded_photos_are_deterministic_nested_and_labelled():
    big = embedded_photos(64, size=16, seed=3)
    small = embedded_photos(16, size=16, seed=3)
    assert big.images.shape == (64, 16, 16, 3) and big.images.dtype == np.uint8
    assert np.array_equal(big.images[:16], small.images) and big.subset(16).hash == small.hash
    assert embedded_photos(64, size=16, seed=3).hash == big.hash
    assert embedded_photos(64, size=16, seed=4).hash != big.hash
    assert big.labels.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0] and big.classes == PHOTOS
    assert embedded_photos(4, size=32).images.shape == (4, 32, 32, 3)
    tail = embedded_photos(64, size=16, seed=3, first=48)  # thumbnails 48-63 alone: held-out data beside 48
    assert np.array_equal(tail.images, big.images[48:]) and tail.labels.tolist() == big.labels.tolist()[48:]


def test_classes_can_group_several_photos():
    one = embedded_photos(40, size=8)
    grouped = embedded_photos(40, size=8, per_class=2)
    assert np.array_equal(grouped.images, one.images)  # the same thumbnails, only the labels differ
    assert grouped.labels.tolist() == (one.labels // 2).tolist()
    assert grouped.classes == ("astronaut+chelsea", "coffee+hubble_deep_field", "immunohistochemistry+retina",
                               "rocket+motorcycle", "china+flower")
    assert all(len(np.unique(one.labels[grouped.labels == c])) == 2 for c in range(5))  # two photos in each class


def test_the_other_photo_pool_is_disjoint_and_rgb():
    assert not set(OTHER_PHOTOS) & set(PHOTOS)
    other = embedded_photos(20, size=8, photos="other")
    assert other.images.shape == (20, 8, 8, 3) and other.classes == OTHER_PHOTOS
    color = embedded_photos(20, size=8)
    assert not any((a == b).all() for a in other.images for b in color.images)


@pytest.mark.parametrize("kw, message", [
    (dict(photos="grey"), "unknown photo set 'grey'; valid sets: color, other"),
    (dict(per_class=3), "per_class must divide the 10 photos into equal classes, got 3"),
    (dict(first=20), r"first must be in \[0, n\) = \[0, 4\), got 20"),
    (dict(min_frac=0.7), r"need 0 < min_frac <= max_frac <= 1, got min_frac=0.7, max_frac=0.6"),
    (dict(min_frac=0.0), r"need 0 < min_frac .*got min_frac=0.0"),
    (dict(max_frac=1.5), r"need 0 < min_frac .*max_frac=1.5")])
def test_bad_photo_groupings_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        embedded_photos(4, size=8, **kw)


def test_the_default_thumbnails_are_those_the_embedded_zoo_was_trained_on():
    import json
    from pathlib import Path

    meta = json.loads((Path(__file__).parents[1] / "models/embedded/unet16-edm-m64/samenoise.json").read_text())
    cfg = meta["config"]
    assert embedded_photos(cfg["dataset_size"], size=cfg["image_size"]).hash == meta["dataset_hash"]


def test_to_uint8_rounds_a_samplers_float64_values_to_the_nearer_level():
    """Values 1e-7 above or below each half-step between two levels go to the nearer level; rounded in float32, about
    half of them went to the other (127 and 125 of 255, measured)."""
    import torch

    levels = torch.arange(255, dtype=torch.float64)
    for offset, up in ((1e-7, 1), (-1e-7, 0)):
        x = ((levels + 0.5 + offset) / 127.5 - 1).reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
        assert np.array_equal(to_uint8(x)[0, 0, :, 0], (levels + up).numpy().astype(np.uint8)), offset


def test_to_uint8_inverts_as_tensor_and_clips_outside_the_range():
    s = embedded_photos(8, size=16)
    assert np.array_equal(to_uint8(s.as_tensor()), s.images)
    # values past [-1, 1] saturate: a byte cast alone wraps 258 to 2
    import torch

    assert (to_uint8(torch.full((1, 3, 2, 2), 1.05)) == 255).all()
    assert (to_uint8(torch.full((1, 3, 2, 2), -1.05)) == 0).all()


def _write_cifar10(folder, n_per_batch=4):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n_per_batch))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_pickle_batches(tmp_path):
    _write_cifar10(tmp_path)
    train = load_cifar(tmp_path)
    assert train.images.shape == (20, 32, 32, 3) and train.labels.shape == (20,)
    with open(tmp_path / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    # channel-planar rows (R plane, G plane, B plane) become HWC pixels
    for c in range(3):  # R, G, B: a loader that swapped R and B kept G
        assert np.array_equal(train.images[0, :, :, c], first[b"data"][0, 1024 * c:1024 * (c + 1)].reshape(32, 32))
    assert train.labels[:4].tolist() == list(first[b"labels"])
    assert len(load_cifar(tmp_path, "test")) == 4


def test_cifar100_uses_fine_labels(tmp_path):
    data = np.zeros((3, 3072), dtype=np.uint8)
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 2, 3]}, f)
    assert load_cifar(tmp_path).labels.tolist() == [5, 99, 0]


def test_cifar_errors_name_path_and_layout(tmp_path):
    with pytest.raises(DatasetFormatError, match="no CIFAR train batches found; expected a folder with CIFAR"):
        load_cifar(tmp_path)
    (tmp_path / "train").write_bytes(b"not a pickle")
    with pytest.raises(DatasetFormatError, match=r"train: not a CIFAR pickle batch"):
        load_cifar(tmp_path)


def test_cifar_batches_that_are_not_uint8_or_lack_labels_are_refused_naming_what_was_found(tmp_path):
    """b'data' was cast to uint8: floats in [0, 1] became black images and 300 became 44, without a word; every
    other fault gave one message ("labels or data of the wrong shape") that named neither."""
    for data, message in ((np.full((2, 3072), 0.5), r"b'data' is float64, not uint8"),
                          (np.full((2, 3072), 300), r"b'data' is int64, not uint8"),
                          (np.zeros((2, 1024), dtype=np.uint8), r"b'data' of shape \(2, 1024\) with 2 labels")):
        with open(tmp_path / "train", "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [0, 1]}, f)
        with pytest.raises(DatasetFormatError, match=rf"train: not a CIFAR pickle batch \(.*{message}"):
            load_cifar(tmp_path)
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), dtype=np.uint8), b"coarse_labels": [0, 1]}, f)
    with pytest.raises(DatasetFormatError,
                       match=r"no b'labels' or b'fine_labels' key; keys \[b'coarse_labels', b'data'\]"):
        load_cifar(tmp_path)
    (tmp_path / "train").unlink()
    _write_cifar10(tmp_path)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DatasetFormatError, match=r"no CIFAR train batches found \(CIFAR-10 batches missing: "
                                                 r"data_batch_5\)"):
        load_cifar(tmp_path)


def test_npz_round_trip(tmp_path):
    s = embedded_photos(6, size=16)
    back = load_npz(save_npz(tmp_path / "set.npz", s))
    assert np.array_equal(back.images, s.images) and np.array_equal(back.labels, s.labels)
    unlabeled = load_npz(save_npz(tmp_path / "u.npz", ImageSet(s.images)))
    assert unlabeled.labels is None


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", samples=np.zeros((2, 3, 8, 8), dtype=np.uint8))
    expected = r"'samples' is uint8 \(2, 3, 8, 8\); expected an .npz with key 'samples'"
    with pytest.raises(DatasetFormatError, match=expected):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokey.npz", images=np.zeros((2, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match="nokey.npz: cannot read"):
        load_npz(tmp_path / "nokey.npz")
    with pytest.raises(DatasetFormatError, match="missing.npz: cannot read"):
        load_npz(tmp_path / "missing.npz")


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    s = embedded_photos(4, size=16)
    for i, (img, lab) in enumerate(zip(s.images, [0, 1, 0, 1])):
        (tmp_path / f"c{lab}").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / f"c{lab}" / f"{i}.png")
    got = load_folder(tmp_path)
    assert got.images.shape == (4, 16, 16, 3) and got.labels.tolist() == [0, 0, 1, 1] and got.classes == ("c0", "c1")
    assert np.array_equal(got.images[0], s.images[0])
    with pytest.raises(DatasetFormatError, match="nothing: not a folder"):
        load_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="empty: no images found"):
        load_folder(tmp_path / "empty")


def test_a_set_made_again_is_equal_and_a_callers_writes_do_not_reach_the_next():
    """embedded_photos keeps each set's arrays for the process (a run asks for the same sets many times) and hands out
    copies, so one caller's edits stay its own."""
    first = embedded_photos(12, size=8, per_class=2)
    first.images[:] = 0
    first.labels[:] = -1
    again = embedded_photos(12, size=8, per_class=2)
    assert again.images.any() and (again.labels >= 0).all()
    assert again.hash == embedded_photos(12, size=8, per_class=2).hash
    assert again.hash != embedded_photos(12, size=8, per_class=2, seed=1).hash  # the arguments make the set


def test_thumbnail_sets_kept_on_disk_are_read_back_equal_and_remade_when_damaged(tmp_path, monkeypatch):
    from models import datasets

    made = datasets.embedded_photos(64, size=16)  # in memory only (no folder set)
    datasets._thumbnails.cache_clear()
    monkeypatch.setattr(datasets, "_KEPT_IN", None)
    datasets.keep_thumbnails_in(tmp_path)
    try:
        first = datasets.embedded_photos(64, size=16)
        (kept,) = tmp_path.glob("*.npz")
        datasets._thumbnails.cache_clear()

        def refuse(*args):
            raise AssertionError("made again although kept")

        with monkeypatch.context() as m:
            m.setattr(datasets, "_make_thumbnails", refuse)
            again = datasets.embedded_photos(64, size=16)
        for s in (first, again):
            assert np.array_equal(s.images, made.images) and np.array_equal(s.labels, made.labels)
            assert s.classes == made.classes and s.hash == made.hash
        datasets._thumbnails.cache_clear()
        datasets.embedded_photos(64, size=8)  # other arguments: another file
        assert len(list(tmp_path.glob("*.npz"))) == 2
        data = dict(np.load(kept))
        data["images"] = data["images"].copy()
        data["images"][0, 0, 0, 0] ^= 1  # a flipped bit: its digest no longer matches
        np.savez(kept, **data)
        datasets._thumbnails.cache_clear()
        assert datasets.embedded_photos(64, size=16).hash == made.hash
        kept.write_bytes(b"not a zip")
        datasets._thumbnails.cache_clear()
        assert datasets.embedded_photos(64, size=16).hash == made.hash
        with np.load(kept) as f:  # rewritten whole
            assert np.array_equal(f["images"], made.images)
    finally:
        datasets.keep_thumbnails_in(None)
        datasets._thumbnails.cache_clear()


def test_an_image_folder_leaves_hidden_entries_out_and_refuses_what_it_would_mislabel_or_misread(tmp_path):
    """A hidden .ipynb_checkpoints/ was a class (every real label shifted by one), loose images beside the class
    sub-folders were dropped, a 16-bit image came back white (clipped by PIL's convert), an unreadable file raised
    PIL's own error."""
    from PIL import Image

    s = embedded_photos(4, size=16)
    for i, lab in enumerate([0, 1, 0, 1]):
        (tmp_path / f"c{lab}").mkdir(exist_ok=True)
        Image.fromarray(s.images[i]).save(tmp_path / f"c{lab}" / f"{i}.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "c0" / ".hidden.png").write_bytes(b"")
    got = load_folder(tmp_path)
    assert got.classes == ("c0", "c1") and got.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "c2").mkdir()
    with pytest.raises(DatasetFormatError, match=r"class sub-folders without images: c2"):
        load_folder(tmp_path)
    (tmp_path / "c2").rmdir()
    Image.fromarray(s.images[0]).save(tmp_path / "loose.png")
    with pytest.raises(DatasetFormatError, match=r"images beside class sub-folders \(loose.png beside c0, c1\)"):
        load_folder(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(flat / "deep.png")
    with pytest.raises(DatasetFormatError, match=r"deep.png: PIL mode 'I;16' is not 8-bit"):
        load_folder(flat)
    (flat / "deep.png").write_bytes(b"not an image")
    with pytest.raises(DatasetFormatError, match=r"deep.png: not a readable image \(UnidentifiedImageError"):
        load_folder(flat)

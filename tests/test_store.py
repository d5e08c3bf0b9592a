"""The sample store: round trip, one generation per key (also across processes), refusal of damaged entries."""
import json
import multiprocessing as mp
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from models.store import SampleSet, SampleStore, StoreError, StoreWarning, key_hash, main, prune

KEY = {"model": "m", "sampler": "dpm3", "nfe": 20, "bank": "abc", "label": None}


def images(n=4):
    return np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)


def test_round_trip(tmp_path):
    store = SampleStore(tmp_path)
    assert store.get(KEY) is None
    store.put(KEY, images(), [3, 1, 2, 0], 20)
    got = store.get(dict(KEY))
    assert np.array_equal(got.images, images()) and got.ids.tolist() == [3, 1, 2, 0] and got.nfe == 20
    assert np.array_equal(got.take([0, 3]), images()[[3, 0]])
    with pytest.raises(StoreError, match=r"noise ids \[9\]"):
        got.take([9])


def test_a_key_refuses_arrays_whose_printout_would_hide_their_middle_and_keeps_scalars():
    # numpy prints a long array as its ends: two label arrays that differ only in the middle printed the same
    a, b = np.zeros(2000, dtype=np.int64), np.zeros(2000, dtype=np.int64)
    b[1000] = 1
    assert str(a) == str(b)
    for value in (a, b, torch.zeros(3)):
        with pytest.raises(StoreError, match=r"cannot hold an array .*shape \("):
            key_hash({"labels": value})
    # scalars keep the hash they had (their printout), as do lists
    assert key_hash({"n": np.int64(3)}) == key_hash({"n": "3"})
    assert key_hash({"labels": a[:3].tolist()}) == key_hash({"labels": [0, 0, 0]})


def test_get_or_make_makes_once(tmp_path):
    store, calls = SampleStore(tmp_path), []

    def make():
        calls.append(1)
        return images(), [0, 1, 2, 3], 20

    a = store.get_or_make(KEY, make)
    b = store.get_or_make(KEY, make)
    assert len(calls) == 1 and np.array_equal(a.images, b.images)
    store.get_or_make(KEY | {"nfe": 10}, make)  # another key is another entry
    assert len(calls) == 2


def test_damaged_entries_are_refused_with_the_file_name(tmp_path):
    store = SampleStore(tmp_path)
    store.put(KEY, images(), [0, 1, 2, 3], 20)
    path = store.path(KEY)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match=str(path.name)):
        store.get(KEY)


@pytest.mark.parametrize("member", ["images", "ids", "nfe", "key", "shape"])
def test_the_sha256_covers_images_ids_nfe_and_key(tmp_path, member):
    """Each member edited alone fails the sha256. The key is rewritten as the same key in other bytes (indented JSON):
    another key would be refused earlier, by its hash, and would not show that the sha256 covers the key. The images
    reshaped (4 x 4 to 2 x 8, the same bytes) are other images."""
    store = SampleStore(tmp_path)
    store.put(KEY, images(), [0, 1, 2, 3], 20)
    path = store.path(KEY)
    with np.load(path) as z:
        members = dict(z)
    edited = members["images"].copy()
    edited.flat[0] ^= 1  # one pixel, one bit
    members["images" if member == "shape" else member] = {
        "images": edited, "ids": np.array([1, 0, 2, 3]), "nfe": np.int64(21),
        "key": np.array(json.dumps(KEY, sort_keys=True, indent=1)),
        "shape": members["images"].reshape(4, 2, 8, 3)}[member]
    with open(path, "wb") as f:
        np.savez(f, **members)
    with pytest.raises(StoreError, match="fails its sha256"):
        store.get(KEY)


def test_an_entry_of_another_key_is_refused(tmp_path):
    store = SampleStore(tmp_path)
    store.put(KEY, images(), [0, 1, 2, 3], 20)
    path = store.path(KEY)
    with np.load(path) as z:
        members = dict(z)
    members["key"] = np.array(json.dumps(KEY | {"label": 1}, sort_keys=True))
    with open(path, "wb") as f:
        np.savez(f, **members)
    with pytest.raises(StoreError, match="holds another key"):
        store.get(KEY)


def test_a_damaged_entry_is_reported_once_and_made_again(tmp_path):
    store, calls = SampleStore(tmp_path), []

    def make():
        calls.append(1)
        return images(), [0, 1, 2, 3], 20

    store.get_or_make(KEY, make)
    path = store.path(KEY)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(StoreWarning, match=f"{path.name} cannot be read .*; removed and made again"):
        again = store.get_or_make(KEY, make)
    assert len(calls) == 2 and np.array_equal(again.images, images())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.get_or_make(KEY, make)  # whole again: no second report
    assert len(calls) == 2 and not list(tmp_path.rglob("*.lock"))


def _worker(root, log, barrier):
    barrier.wait()

    def make():
        with open(log, "a") as f:
            f.write("made\n")
        time.sleep(0.5)
        return images(), [0, 1, 2, 3], 20

    SampleStore(root).get_or_make(KEY, make)


def test_concurrent_processes_generate_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_worker, args=(tmp_path / "store", log, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("made") == 1
    assert SampleStore(tmp_path / "store").get(KEY) is not None


def test_the_sampling_code_is_in_every_key_and_a_docstring_edit_keeps_it(tmp_path):
    """A changed sampler must not be served the sets the old one made; an edit of documentation alone changes no
    sample and keeps the store."""
    from fixtures.samples import NOT_SAMPLING, sampling_code
    from models.versions import source_digest

    code = tmp_path / "models" / "sampler.py"
    code.parent.mkdir()
    code.write_text('"""Doc."""\n\n\ndef step(x):\n    """Doc."""\n    return x + 1  # a comment\n')
    before = source_digest([code])
    code.write_text('"""Other doc."""\n\n\ndef step(x):\n    """Other."""\n\n    return x + 1\n')
    assert source_digest([code]) == before
    code.write_text('"""Other doc."""\n\n\ndef step(x):\n    return x + 2\n')
    assert source_digest([code]) != before
    key = sampling_code()
    assert set(key) == {"digest", "versions"}
    assert set(key["versions"]) == {"torch", "diffusers", "numpy", "transformers", "tokenizers"}
    assert "samplers" not in NOT_SAMPLING and "generate" not in NOT_SAMPLING
    # the digest is that of the checkout's own sampling modules: a glob that missed them (another folder, a
    # subfolder) kept every key while the samplers changed
    root = Path(__file__).resolve().parent.parent
    files = [p for p in (root / "models").glob("*.py") if p.stem not in NOT_SAMPLING]
    files += [root / "fixtures" / f"{name}.py" for name in ("samples", "measure", "zoo")]
    stems = {p.stem for p in files}
    assert {"samplers", "generate", "kernels", "grids", "denoisers", "noise", "optimal", "fast", "inverse",
            "stochastic", "unet", "uvit", "zoo", "samples", "measure"} <= stems
    assert key["digest"] == source_digest(files)


def test_a_cpu_sets_key_names_the_cpu(monkeypatch):
    """oneDNN's kernels round differently per instruction set (models/versions.py, cpu_identity): a set made on
    another CPU model or instruction set is made again, as one from another GPU model is."""
    from types import SimpleNamespace

    import torch

    import fixtures.samples as samples
    from cases import Run

    m = SimpleNamespace(fingerprint="f", grid="edm", compiled=False, decodes=False, entry=None)
    source = samples.SampleSource(None, None, torch.device("cpu"))
    first = source._key(Run("m", "dpm3", 20), m)
    assert first["cpu"] == samples.cpu_identity() and first["cpu"]["capability"]
    cpu = samples.cpu_identity()
    monkeypatch.setattr(samples, "cpu_identity", lambda: cpu | {"capability": "AVX2"})
    assert source._key(Run("m", "dpm3", 20), m) != first


def test_kept_code_digests_equal_fresh_ones_and_see_an_edit(tmp_path, monkeypatch):
    """The digests kept across processes (models.versions.keep_digests) give the digest computed afresh; an edited
    file is digested anew, and a damaged digest file is remade rather than trusted or fatal."""
    import models.versions as versions

    monkeypatch.setattr(versions, "_kept", {"file": None, "digests": {}, "used": set()})
    code = tmp_path / "models" / "sampler.py"
    code.parent.mkdir()
    code.write_text("def step(x):\n    return x + 1\n")
    fresh = versions.source_digest([code])
    versions.keep_digests(tmp_path / "cache")
    assert versions.source_digest([code]) == fresh and not (tmp_path / "cache").exists()  # a folder is not made
    versions.keep_digests(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    assert versions.source_digest([code]) == fresh
    kept = tmp_path / "cache" / versions.DIGEST_FILE
    assert len(json.loads(kept.read_text())) == 1
    versions.keep_digests(tmp_path / "cache")  # as a new process: the digest comes from the file, not the tree
    monkeypatch.setattr(versions, "_tree", lambda *a: pytest.fail("a kept text was parsed again"))
    assert versions.source_digest([code]) == fresh
    monkeypatch.undo()
    monkeypatch.setattr(versions, "_kept", {"file": None, "digests": {}, "used": set()})
    code.write_text("def step(x):\n    return x + 2\n")
    versions.keep_digests(tmp_path / "cache")
    edited = versions.source_digest([code])
    assert edited != fresh
    kept.write_text("{not json")
    versions.keep_digests(tmp_path / "cache")
    assert versions.source_digest([code]) == edited and len(json.loads(kept.read_text())) == 1
    # past KEPT_DIGESTS entries, a write keeps only the texts this process asked for
    monkeypatch.setattr(versions, "KEPT_DIGESTS", 2)
    for k in range(2):
        code.write_text(f"def step(x):\n    return x + {k + 3}\n")
        versions.source_digest([code])
    assert len(json.loads(kept.read_text())) == 3  # this process asked for all three
    versions.keep_digests(tmp_path / "cache")  # a new process, which asks for one new text
    code.write_text("def step(x):\n    return x + 6\n")
    versions.source_digest([code])
    assert len(json.loads(kept.read_text())) == 1
    # a block that keeps them elsewhere leaves the folder kept before in place
    with versions.digests_kept_in(tmp_path / "other"):
        assert versions._kept["file"] == tmp_path / "other" / versions.DIGEST_FILE
    assert versions._kept["file"] == kept and len(versions._kept["digests"]) == 1


def rows_of(start, stop):
    """make(start, stop) for a prefix entry: row i's image is filled with i, its id is i."""
    ids = np.arange(start, stop)
    return np.repeat(ids.astype(np.uint8), 4 * 4 * 3).reshape(len(ids), 4, 4, 3), ids, 20


def test_a_prefix_entry_serves_fewer_rows_from_its_first_and_extends_by_the_missing_ones_only(tmp_path):
    store, calls = SampleStore(tmp_path), []

    def make(start, stop):
        calls.append((start, stop))
        return rows_of(start, stop)

    first = store.prefix(KEY, 8, make, align=4)
    assert first.ids.tolist() == list(range(8)) and calls == [(0, 8)]
    fewer = store.prefix(KEY, 4, make, align=4)  # the first 4 of the stored 8, nothing made
    assert calls == [(0, 8)] and fewer.ids.tolist() == [0, 1, 2, 3] and fewer.key == first.key
    assert np.array_equal(fewer.images, first.images[:4])
    more = store.prefix(KEY, 16, make, align=4)  # rows 8..15 only, joined to the stored 8
    assert calls == [(0, 8), (8, 16)] and more.ids.tolist() == list(range(16))
    assert np.array_equal(more.images, rows_of(0, 16)[0]) and len(store.get(KEY).ids) == 16
    assert store.prefix(KEY, 12, make, align=4).ids.tolist() == list(range(12)) and len(calls) == 2


def test_a_prefix_entry_refuses_part_micro_batches_and_remakes_an_entry_it_cannot_extend(tmp_path):
    store = SampleStore(tmp_path)
    with pytest.raises(ValueError, match="6 rows is not a positive multiple"):
        store.prefix(KEY, 6, rows_of, align=4)
    store.put(KEY, *rows_of(0, 6)[:2], 20)  # six rows: a micro-batch of 4 would straddle the join at 6
    calls = []
    store.prefix(KEY, 8, lambda a, b: calls.append((a, b)) or rows_of(a, b), align=4)
    assert calls == [(0, 8)]
    store.put(KEY, images(4), [3, 1, 2, 0], 20)  # not noises 0, 1, 2, ...: removed and made again
    with pytest.warns(StoreWarning, match="noise ids are not 0, 1, 2, ...; removed and made again"):
        assert store.prefix(KEY, 4, rows_of, align=4).ids.tolist() == [0, 1, 2, 3]
    store.put(KEY, *rows_of(0, 4)[:2], 19)  # an extension at another NFE cannot join it: all made again
    calls = []
    with pytest.warns(StoreWarning, match="was made at NFE 19 and its extension at 20; removed and made again"):
        again = store.prefix(KEY, 8, lambda a, b: calls.append((a, b)) or rows_of(a, b), align=4)
    assert calls == [(4, 8), (0, 8)] and again.nfe == 20 and store.get(KEY).nfe == 20
    with pytest.raises(StoreError, match=r"rows 8..11 were made with noise ids \[0, 1, 2, 3\]"):
        store.prefix(KEY, 12, lambda a, b: rows_of(0, 4), align=4)


def test_a_read_marks_the_entry_used_and_prune_removes_what_no_run_used(tmp_path, capsys):
    """A hit sets the entry's modification time; `prune` removes the sample sets, embeddings and model facts older
    than that by the days given, and nothing else in the cache folder."""
    store = SampleStore(tmp_path)
    old_key, used_key = KEY | {"model": "old"}, KEY | {"model": "used"}
    old, used = store.put(old_key, images(), range(4), 20), store.put(used_key, images(), range(4), 20)
    assert old.nfe == used.nfe == 20
    day = 86400
    for path in (store.path(old_key), store.path(used_key)):
        os.utime(path, (time.time() - 40 * day,) * 2)
    store.get(used_key)  # a run reads it: marked used now
    assert store.path(used_key).stat().st_mtime > time.time() - day
    (tmp_path / "embeddings").mkdir()
    stale_emb, fresh_emb = (tmp_path / "embeddings" / f"{c * 64}.npz" for c in "ab")
    stale_emb.write_bytes(b"x" * 10), fresh_emb.write_bytes(b"y" * 20)
    not_an_entry = tmp_path / "embeddings" / "mine.npz"  # not a name either cache gives: not theirs to remove
    not_an_entry.write_bytes(b"w")
    other = tmp_path / "trained" / "model.npz"  # the sweep's trained models are not pruned
    other.parent.mkdir()
    other.write_bytes(b"z")
    (tmp_path / "model-facts").mkdir()
    stale_facts = tmp_path / "model-facts" / f"{'c' * 64}-traced-cpu.json"  # fixtures/zoo.py, facts_path
    stale_facts.write_bytes(b"{}")
    not_facts = tmp_path / "model-facts" / "notes.json"
    not_facts.write_bytes(b"{}")
    for path in (stale_emb, not_an_entry, other, stale_facts, not_facts):
        os.utime(path, (time.time() - 40 * day,) * 2)

    assert main([("prune"), str(tmp_path), "--unused-days", "30", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "samples: would remove 1 entry (0.0 MiB), kept 1 entry (0.0 MiB)",
        "embeddings: would remove 1 entry (0.0 MiB), kept 1 entry (0.0 MiB)",
        "model-facts: would remove 1 entry (0.0 MiB), kept 0 entries (0.0 MiB)"]
    assert store.path(old_key).exists() and stale_emb.exists() and stale_facts.exists()
    got = {r.folder: r for r in prune(tmp_path, 30)}
    counts = [(r.removed, r.kept, r.failed) for r in got.values()]
    assert list(got) == ["samples", "embeddings", "model-facts"] and counts == [(1, 1, []), (1, 1, []), (1, 0, [])]
    assert not stale_facts.exists() and not_facts.exists()
    assert got["embeddings"].removed_bytes == 10 and got["embeddings"].kept_bytes == 20
    assert not store.path(old_key).exists() and not stale_emb.exists()
    assert store.get(used_key) is not None and fresh_emb.exists() and other.exists() and not_an_entry.exists()
    assert store.get(old_key) is None  # made again by the next run that asks
    assert [r.removed for r in prune(tmp_path, 0)] == [1, 1, 0]  # 0 days: everything
    assert not_an_entry.exists() and other.exists() and not_facts.exists()


def test_prune_keeps_and_names_an_entry_it_cannot_remove(tmp_path, monkeypatch, capsys):
    store = SampleStore(tmp_path)
    store.put(KEY, images(), range(4), 20)
    real_unlink = Path.unlink

    def refused(self, missing_ok=False):
        if self == store.path(KEY):
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    r = prune(tmp_path, 0)[0]
    assert (r.removed, r.kept) == (0, 1) and r.failed == [f"{store.path(KEY)}: Permission denied"]
    assert main(["prune", str(tmp_path), "--unused-days", "0"]) == 1
    said = capsys.readouterr().err
    assert f"could not remove 1 entry, kept; the first: {store.path(KEY)}: Permission denied" in said


def test_an_entry_removed_between_its_check_and_its_read_is_absent_not_damaged(tmp_path, monkeypatch):
    store = SampleStore(tmp_path)
    store.put(KEY, images(), range(4), 20)
    read = SampleStore.read

    def pruned_meanwhile(path):
        path.unlink()  # as a prune running beside the run would
        return read(path)

    monkeypatch.setattr(SampleStore, "read", staticmethod(pruned_meanwhile))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get(KEY) is None and store._get_reporting(KEY) is None


def test_prune_refuses_a_missing_folder_a_folder_that_is_no_cache_and_a_bad_number_of_days(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no cache folder at .*nope"):
        prune(tmp_path / "nope", 30)
    with pytest.raises(FileNotFoundError, match="is not a samenoise cache folder: it holds no samples or embeddings"):
        prune(tmp_path, 30)  # e.g. the cache's parent named instead of the cache
    (tmp_path / "samples").mkdir()
    for bad in (-1, float("nan"), "30", True):
        with pytest.raises(ValueError, match=f"unused_days must be a number of days >= 0, got {bad!r}"):
            prune(tmp_path, bad)
    for argv, said in ((["prune", str(tmp_path), "--unused-days=-2"], "a number of days >= 0, got '-2'"),
                       (["prune", str(tmp_path), "--unused-days", "a week"], "a number of days >= 0, got 'a week'"),
                       (["prune", str(tmp_path / "nope"), "--unused-days", "1"], "no cache folder at"),
                       (["prune", str(tmp_path)], "--unused-days")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and "usage: python -m models.store prune" in err, err


def test_a_set_of_other_images_than_uint8_is_refused_and_a_read_marks_the_entry_used_first(tmp_path, monkeypatch):
    """`put` cast images to uint8 (floats in [0, 1) stored as black); an entry was marked used only after its read,
    so a prune during the read (seconds for a large set) could remove what the run was reading."""
    from models import store as store_module
    from models.store import SampleStore, StoreError

    store = SampleStore(tmp_path)
    with pytest.raises(StoreError, match=r"a sample set holds uint8 images, got float32"):
        store.put({"k": 1}, np.zeros((2, 4, 4, 3), np.float32), [0, 1], 1)
    store.put({"k": 1}, np.zeros((2, 4, 4, 3), np.uint8), [0, 1], 1)
    path = store.path({"k": 1})
    old = time.time() - 40 * 86400
    os.utime(path, (old, old))
    seen = []
    read = SampleStore.read

    def prune_during_read(p):
        seen.append(store_module.prune(tmp_path, 30))
        return read(p)

    monkeypatch.setattr(SampleStore, "read", staticmethod(prune_during_read))
    assert store.get({"k": 1}) is not None and path.exists() and seen[0][0].removed == 0


def test_a_noise_id_missing_from_a_set_is_named_with_the_set():
    """A set asked for noise ids it lacks names them, how many it holds and which sampler, NFE and model made it."""
    s = SampleSet(np.zeros((3, 2, 2, 3), np.uint8), np.array([0, 1, 2]), 4,
                  {"fingerprint": "abcdef0123456789", "sampler": "euler", "nfe": 4})
    assert s.rows([2, 0]) == [2, 0]
    with pytest.raises(StoreError, match=r"noise ids \[7\] are not in this sample set: it holds 3 noise ids \(0..2; "
                                         r"stored under euler@4, model fingerprint abcdef012345, store key [0-9a-f]{12}\)"):
        s.take([0, 7])

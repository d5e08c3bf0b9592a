"""Atomic files: locks that exclude across processes and leave nothing behind, and the sweep of stale temporaries."""
import multiprocessing as mp
import os
import time
from pathlib import Path

from models.atomic import STALE_SECONDS, atomic_write, file_lock, sweep_stale


def _hold(path, log, barrier):
    barrier.wait()
    for _ in range(5):
        with file_lock(path):
            with open(log, "a") as f:
                f.write("in\n")
            time.sleep(0.01)
            with open(log, "a") as f:
                f.write("out\n")


def test_a_lock_excludes_other_processes_and_leaves_no_file(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    log, lock = tmp_path / "log", tmp_path / "locks" / "k.lock"
    procs = [ctx.Process(target=_hold, args=(lock, log, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    lines = log.read_text().split()
    assert lines == ["in", "out"] * 15  # never two holders at once
    assert not lock.exists()


def test_the_sweep_removes_only_stale_temporaries(tmp_path):
    """Temporary names as tempfile makes them (`.<name>.<8 random characters>.tmp`); an old hidden .tmp of another
    kind, e.g. the user's own in a folder given as --cache-dir, is left alone."""
    atomic_write(tmp_path / "a" / "kept.json", lambda f: f.write(b"{}"))
    stale, fresh = tmp_path / "a" / ".kept.json.x1ab_9zq.tmp", tmp_path / "a" / ".other.json.x2ab_9zq.tmp"
    stale_dir = tmp_path / "runs" / ".20260101-000000-main.k3j_0a9b.tmp"
    foreign = tmp_path / "a" / ".notes.tmp"
    for p in (stale, fresh, foreign):
        p.write_text("half")
    stale_dir.mkdir(parents=True)
    (stale_dir / "results.json").write_text("{")
    old = time.time() - STALE_SECONDS - 60
    for p in (stale, stale_dir, foreign):
        os.utime(p, (old, old))
    removed = sweep_stale(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert fresh.exists() and foreign.exists() and (tmp_path / "a" / "kept.json").exists()


def _hold_forever(path, ready):
    with file_lock(path):
        ready.set()
        time.sleep(60)


def test_the_sweep_removes_the_lock_files_of_killed_holders_and_no_held_one(tmp_path):
    """A process killed while holding a lock left its file, which nothing removed (keys change with every release,
    so such files piled up in locks/). An old file no process holds goes; a held one stays, however old."""
    ctx = mp.get_context("spawn")
    left, held = tmp_path / "locks" / "left.lock", tmp_path / "locks" / "held.lock"
    left.parent.mkdir()
    left.write_text("")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(held, ready))
    holder.start()
    try:
        assert ready.wait(60)
        old = time.time() - STALE_SECONDS - 60
        for p in (left, held):
            os.utime(p, (old, old))
        assert sweep_stale(tmp_path) == [left]
        assert not left.exists() and held.exists()
    finally:
        holder.kill()
        holder.join(60)
    with file_lock(held):  # the holder's file, left by its kill, is taken as before
        pass
    assert not held.exists()


def test_a_sweep_of_one_files_leftovers_touches_nothing_else_in_its_folder(tmp_path):
    """A golden file or results file lies in a folder of the user's: only that file's stale temporaries go, not
    another file's, and nothing in subfolders."""
    old = time.time() - STALE_SECONDS - 60
    mine, other = tmp_path / ".ref.npz.a1b2c3d4.tmp", tmp_path / ".notes.txt.a1b2c3d4.tmp"
    deeper = tmp_path / "sub" / ".ref.npz.e5f6g7h8.tmp"
    deeper.parent.mkdir()
    for p in (mine, other, deeper):
        p.write_text("half")
        os.utime(p, (old, old))
    assert sweep_stale(tmp_path, of="ref.npz") == [mine]
    assert other.exists() and deeper.exists()
    assert sweep_stale(tmp_path, of="[r]ef.npz") == []  # a name is matched as it is, not as a pattern


def test_a_write_reaches_the_disk_before_its_rename_and_the_rename_before_the_return(tmp_path, monkeypatch):
    """The file's data are synced while it is still the temporary, then its folder after the rename: after a
    power cut the path holds the old file or the whole new one."""
    import stat

    import models.atomic as atomic

    events, replace = [], os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else f"file:{st.st_size}"))

    def replace_logged(src, dst):
        events.append(("replace", os.path.basename(dst)))
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace_logged)
    atomic_write(tmp_path / "x.bin", lambda f: f.write(b"12345"))
    assert events == [("fsync", "file:5"), ("replace", "x.bin"), ("fsync", "dir")]
    assert (tmp_path / "x.bin").read_bytes() == b"12345"


def test_checkpoint_weights_are_written_atomically_and_equal_safetensors_own_file(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    import models.checkpoints as checkpoints
    from models.checkpoints import WEIGHTS, load_checkpoint, save_checkpoint
    from models.unet import build_unet

    written = []

    def logged(path, write):  # every file of the folder goes through atomic_write
        written.append(Path(path).name)
        return atomic_write(path, write)

    monkeypatch.setattr(checkpoints, "atomic_write", logged)
    net = build_unet(image_size=8, base_channels=8)
    save_checkpoint(tmp_path / "ck", net, {"kind": "test"})
    assert sorted(written) == sorted(["config.json", WEIGHTS, "samenoise.json"])
    ref = tmp_path / "ref.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ref))
    assert (tmp_path / "ck" / WEIGHTS).read_bytes() == ref.read_bytes()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted(["config.json", WEIGHTS, "samenoise.json"])
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta == {"kind": "test"}
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)

"""The shared noise bank: the same noise for an id whatever the batch, chunking, process or reload."""
import json
import re
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch

from models.noise import GRID_IDS, NoiseBank, NoiseBankError, draw_noise

SHAPE = (3, 8, 8)


def test_independent_of_batch_and_chunking():
    full = NoiseBank.draw(11, SHAPE, n=100)
    for chunk in (1, 7, 64):
        parts = [NoiseBank.draw(11, SHAPE, ids=range(i, min(i + chunk, 100))).eps for i in range(0, 100, chunk)]
        assert torch.equal(torch.cat(parts), full.eps)
    picked = NoiseBank.draw(11, SHAPE, ids=[97, 3, 50])
    assert torch.equal(picked.eps, full.take([97, 3, 50]))


def _draw_range(args):
    seed, lo, hi = args
    return np.stack([draw_noise(seed, i, SHAPE) for i in range(lo, hi)])


def test_independent_of_worker_processes():
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_draw_range, [(11, 0, 37), (11, 37, 100)]))
    assert np.array_equal(np.concatenate(parts), NoiseBank.draw(11, SHAPE, n=100).eps.numpy())


def test_standard_normal_and_seed_dependent():
    a, b = NoiseBank.draw(0, SHAPE, n=2000), NoiseBank.draw(1, SHAPE, n=2000)
    assert abs(float(a.eps.mean())) < 0.01 and abs(float(a.eps.std()) - 1) < 0.01  # 384k draws: 5 sigma ~ 0.008
    assert not torch.equal(a.eps, b.eps) and a.hash != b.hash


def test_paper_grid_ids():
    assert GRID_IDS == tuple(range(64))


def test_save_load_round_trip(tmp_path):
    bank = NoiseBank.draw(5, SHAPE, ids=[4, 9, 2])
    path = bank.save(tmp_path / "bank.npy")
    loaded = NoiseBank.load(path)
    assert torch.equal(loaded.eps, bank.eps) and torch.equal(loaded.ids, bank.ids)
    assert loaded.hash == bank.hash and loaded.seed == 5
    assert not list(tmp_path.glob("*.tmp"))  # nothing half-written is left behind


def test_tampered_file_is_refused(tmp_path):
    path = NoiseBank.draw(5, SHAPE, n=4).save(tmp_path / "bank.npy")
    eps = np.load(path)
    eps[2, 0, 0, 0] += 1e-3
    np.save(path, eps)
    with pytest.raises(NoiseBankError, match=r"bank.npy fails its hash"):
        NoiseBank.load(path)


def test_edited_ids_are_refused(tmp_path):
    path = NoiseBank.draw(5, SHAPE, n=4).save(tmp_path / "bank.npy")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["ids"] = [0, 1, 2, 5]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(NoiseBankError, match="fails its hash"):
        NoiseBank.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = NoiseBank.draw(5, SHAPE, n=4).save(tmp_path / "bank.npy")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NoiseBankError, match="cannot read noise bank"):
        NoiseBank.load(path)


def test_missing_ids_are_named():
    bank = NoiseBank.draw(0, SHAPE, n=8)
    with pytest.raises(NoiseBankError, match=r"noise ids \[8, 99\] are not in this bank"):
        bank.take([1, 8, 99])


def test_the_hash_covers_the_seed():
    bank = NoiseBank.draw(0, (3, 2, 2), n=4)
    relabelled = NoiseBank(bank.eps.clone(), bank.ids.clone(), seed=1)  # the same numbers under another seed
    assert relabelled.hash != bank.hash and NoiseBank(bank.eps, bank.ids, seed=0).hash == bank.hash


def test_noise_labels_are_per_id_and_independent_of_the_others():
    from models.noise import noise_labels

    all_ = noise_labels(1, range(200), 10)
    assert torch.equal(noise_labels(1, [150, 3], 10), all_[[150, 3]])
    assert set(all_.tolist()) == set(range(10)) and not torch.equal(noise_labels(2, range(200), 10), all_)
    with pytest.raises(ValueError, match=r"random labels need a conditional model .* num_classes=None"):
        noise_labels(1, [0], None)


def test_seeds_and_ids_outside_32_bits_are_refused():
    """numpy's SeedSequence splits an integer of 2**32 or more into 32-bit words and reads missing words as 0: noise
    0 of seed 2**32 was noise 1 of seed 0 (the suite's bank), so a 64-bit seed such as torch.initial_seed() could
    reuse the bank's noises as "independent" ones."""
    from models.noise import noise_labels

    for seed, ids in ((2**32, [0]), (0, [2**32]), (-1, [0])):
        with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*32\).*torch.initial_seed\(\) % 2\*\*32"):
            draw_noise(seed, ids[0], SHAPE)
        with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*32\)"):
            noise_labels(seed, ids, 10)
    with pytest.raises(ValueError, match=r"each in \[0, 2\*\*32\), got \[4294967296\]"):
        NoiseBank.draw(0, SHAPE, ids=[2**32])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*32\), got \[4294967296, 0\]"):
        NoiseBank.draw(2**32, SHAPE, n=1)
    assert np.array_equal(draw_noise(2**32 - 1, 2**32 - 1, SHAPE), draw_noise(2**32 - 1, 2**32 - 1, SHAPE))


def test_seeds_ids_and_counts_that_are_not_whole_numbers_are_refused():
    """int() cut a seed of 1.9 to 1 and an id of 2.7 to 2: the bank drew another noise than it was asked for."""
    from models.stochastic import step_noise

    for call, what in ((lambda: NoiseBank.draw(1.9, SHAPE, ids=[2]), "a noise bank's seed must be a whole number, "
                                                                     "got 1.9"),
                       (lambda: NoiseBank.draw(1, SHAPE, ids=[2.7]), "a noise id must be a whole number, got 2.7"),
                       (lambda: NoiseBank.draw(1, SHAPE, n=True), "a noise bank's n must be a whole number, got True"),
                       (lambda: step_noise(0.5, 1, 2, SHAPE), "a random stream's seed or id must be a whole number"),
                       (lambda: draw_noise(0, torch.tensor(2.0), SHAPE), "must be a whole number, got tensor(2.)")):
        with pytest.raises(ValueError, match=re.escape(what)):
            call()
    # integers of numpy and torch are whole numbers: the same noises as Python ints
    bank = NoiseBank.draw(np.int64(3), SHAPE, ids=torch.arange(2))
    assert bank.seed == 3 and type(bank.seed) is int and torch.equal(bank.eps, NoiseBank.draw(3, SHAPE, n=2).eps)

"""The fast paths change no sample: frozen traces return what the module returns, and sampling on two worker
threads gives bit for bit what one thread gives, on the embedded zoo's architectures and D*."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fixtures.zoo import EMBEDDED_ZOO
from models.datasets import embedded_photos
from models.fast import Runner, intra_op_threads, parallel_map
from models.generate import generate
from models.kernels import make_kernel
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser
from models.zoo import load_denoiser, read_zoo

ARCHS = ("unet16-edm-m64", "uvit-edm-m64", "unet16-edm-cond-l2048")  # both network classes, with and without labels


@pytest.fixture(scope="module")
def zoo():
    return read_zoo(EMBEDDED_ZOO)


@pytest.mark.parametrize("name", ARCHS)
def test_traced_and_threaded_sampling_equal_eager_bit_for_bit(zoo, name):
    eager = load_denoiser(zoo[name])
    fast = load_denoiser(zoo[name]).use("traced")
    bank = NoiseBank.draw(0, eager.sample_shape, n=20)  # a padded last micro-batch too; at 8 rows a batch, one and
    # two intra-op threads would give UNet-16 outputs that differ in the low bits (models/fast.py)
    label = eager.num_classes - 1 if eager.num_classes else None  # the last class
    want = generate(eager, eager.kernel, bank, nfe=6, micro_batch=8, label=label).x
    got = generate(fast, fast.kernel, bank, nfe=6, micro_batch=8, label=label, workers=2).x
    assert torch.equal(got, want)
    assert fast.runner._traces and not fast.runner.refused  # the trace was made and kept, not silently skipped


def test_optimal_denoiser_on_two_workers_equals_one():
    D = OptimalDenoiser(embedded_photos(64, size=16).as_tensor())
    bank = NoiseBank.draw(0, (3, 16, 16), n=12)
    one = generate(D, make_kernel("edm"), bank, nfe=8, micro_batch=4).x
    assert torch.equal(generate(D, make_kernel("edm"), bank, nfe=8, micro_batch=4, workers=2).x, one)


class _Drifting(torch.nn.Module):
    """Returns a different output on every call: a trace cannot reproduce it, so the runner must refuse it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return x * self.calls


def test_a_trace_that_differs_from_the_module_is_refused():
    runner = Runner(_Drifting().eval(), "traced")
    with torch.no_grad():
        runner(torch.ones(2, 3), torch.zeros(2))
    (why,) = runner.refused.values()
    assert "differs from the module" in why and not any(runner._traces.values())


class _Turning(torch.nn.Module):
    """Agrees with its trace for its first calls, then turns (a branch on state the trace baked in)."""

    def __init__(self, turn_at: int):
        super().__init__()
        self.calls, self.turn_at = 0, turn_at

    def forward(self, x, t):
        self.calls += 1
        return x * (2.0 if self.calls >= self.turn_at else 1.0)


def test_a_trace_that_turns_on_a_checked_call_is_dropped_for_the_module():
    net = _Turning(turn_at=4).eval()  # call 1 traces, call 2 checks the trace, calls 3-5 are the checked calls
    runner = Runner(net, "traced")
    x = torch.ones(2, 3)
    with torch.no_grad():
        outs = [runner(x, torch.zeros(2)) for _ in range(3)]
    assert [float(o[0, 0]) for o in outs] == [1.0, 2.0, 2.0]  # the module's own output once they differ
    (why,) = runner.refused.values()
    assert "on a later call" in why and not any(runner._traces.values())


class _ValueBranch(torch.nn.Module):
    """Doubles x once t exceeds 1: a branch on an input's value, which a trace bakes in as the branch it saw (t = 0).
    The module sleeps on that branch, so that a check of it is still running when the next call comes."""

    def forward(self, x, t):
        if float(t.max()) > 1:
            import time

            time.sleep(0.3)
            return x * 2.0
        return x * 1.0


class _PositiveSum(torch.nn.Module):
    """A network whose trace bakes in how many inputs are positive: another count makes the trace raise, while the
    module answers."""

    def forward(self, x, t):
        n = int(x[x > 0].numel())
        return x * 2.0 + x[x > 0].view(n).sum()


@pytest.mark.parametrize("checked", [True, False])
def test_a_trace_that_raises_on_a_later_call_gives_the_modules_answer_and_is_refused(checked, monkeypatch):
    """A trace that raised during one of its checked calls (or after them) aborted sampling, although the module
    itself answers: the call gets the module's output and the signature runs eager from then on."""
    if not checked:
        monkeypatch.setattr("models.fast.CHECKED_CALLS", 0)
    net, t = _PositiveSum().eval(), torch.zeros(1)
    runner = Runner(net, "traced")
    first, other = torch.tensor([[1.0, -1.0, 2.0]]), torch.tensor([[1.0, 1.0, 2.0]])
    with torch.no_grad():
        assert torch.equal(runner(first, t), net(first, t))
        assert torch.equal(runner(other, t), net(other, t))
        assert torch.equal(runner(other, t), net(other, t))
    (why,) = runner.refused.values()
    assert why.startswith("the trace raised") and why.endswith("on a later call")


def test_a_value_branch_turning_on_the_third_new_input_is_caught():
    """The first call repeats the traced input; the checks cover three new inputs after it."""
    runner = Runner(_ValueBranch().eval(), "traced")
    x, calm, turned = torch.ones(2, 3), torch.zeros(2), torch.full((2,), 5.0)
    with torch.no_grad():
        outs = [runner(x, t) for t in (calm, calm, calm, turned)]
    assert float(outs[-1][0, 0]) == 2.0 and "on a later call" in next(iter(runner.refused.values()))


def test_a_call_during_a_running_check_does_not_use_the_unconfirmed_trace():
    """Two workers: the fourth call's check (slow, and about to refuse the trace) is still running when the fifth
    comes; the fifth runs the module, as it would on one worker, not the trace that is being refused."""
    import threading
    import time

    runner = Runner(_ValueBranch().eval(), "traced")
    x, calm, turned = torch.ones(2, 3), torch.zeros(2), torch.full((2,), 5.0)
    outs = {}

    def call(k):
        with torch.no_grad():
            outs[k] = float(runner(x, turned)[0, 0])

    with torch.no_grad():
        for _ in range(3):
            runner(x, calm)
    first = threading.Thread(target=call, args=(4,))
    first.start()
    time.sleep(0.1)  # the fourth call is inside its check, sleeping in the module
    call(5)
    first.join()
    assert outs == {4: 2.0, 5: 2.0} and runner.refused


class _TupleOut(torch.nn.Module):
    def forward(self, x, t):
        return x * 2.0, t


def test_a_network_returning_a_tuple_runs_eager_with_the_reason():
    runner = Runner(_TupleOut().eval(), "traced")
    with torch.no_grad():
        out = runner(torch.ones(2, 3), torch.zeros(2))
    assert isinstance(out, tuple) and torch.equal(out[0], torch.full((2, 3), 2.0))
    assert "returns a tuple, not a tensor" in next(iter(runner.refused.values()))


def test_gradients_go_through_the_module(zoo):
    D = load_denoiser(zoo["unet16-edm-m64"]).use("traced")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    D(x, torch.tensor(1.0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and not D.runner._traces


def test_parallel_map_keeps_order_restores_threads_and_raises():
    before = torch.get_num_threads()
    for workers in (1, 2):  # one intra-op thread per item either way
        assert parallel_map(lambda i: (i, torch.get_num_threads()), range(5), workers) == [(i, 1) for i in range(5)]
        assert torch.get_num_threads() == before

    def boom(i):
        if i == 3:
            raise KeyError("row 3")
        return i

    with pytest.raises(KeyError, match="row 3"):
        parallel_map(boom, range(6), workers=2)
    assert torch.get_num_threads() == before
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_thread_blocks_nest_in_one_thread_and_a_block_of_another_thread_beside_them_is_refused():
    """torch's count is per thread under OpenMP: when thread A's and thread B's blocks closed out of order, the shared
    bookkeeping restored one thread to the other's count (the main thread stayed on 1 thread for good). Blocks nest
    in one thread; another thread's block while one is open is refused, and the opener's count comes back."""
    import threading

    before = torch.get_num_threads()
    with intra_op_threads(1):
        with intra_op_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        errors = []

        def other():
            try:
                with intra_op_threads(1):
                    pass
            except RuntimeError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert errors and "blocks of two threads overlap" in errors[0]
    assert torch.get_num_threads() == before
    errors.clear()
    t = threading.Thread(target=other)  # none open now: any thread may open one
    t.start()
    t.join(30)
    assert not errors and torch.get_num_threads() == before


@pytest.mark.parametrize("bad, match", [("jit", "network runner 'jit' is unknown; valid: eager, traced, compiled")])
def test_bad_runner_and_workers_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        Runner(torch.nn.Identity(), bad)
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        parallel_map(str, [1, 2], workers=0)
    with pytest.raises(ValueError, match="micro_batch must be at least 1, got 0"):
        generate(OptimalDenoiser(torch.zeros(2, 3)), make_kernel("edm"), NoiseBank.draw(0, (3,), n=2), micro_batch=0)


class _Bank:
    hash = "h"

    def __len__(self):
        return 1


def test_compiled_runner_is_close_to_eager_and_keyed_apart(zoo, tmp_path):
    """torch.compile changes the low bits (so --compile samples are stored under their own key), not the result."""
    from fixtures.samples import SampleSource
    from models.store import SampleSet, SampleStore

    eager = load_denoiser(zoo["unet16-edm-m64"])
    compiled = load_denoiser(zoo["unet16-edm-m64"]).use("compiled")
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():  # with gradients on, the runner calls the module itself
        got, want = compiled(x, torch.tensor(2.0)), eager(x, torch.tensor(2.0))
    assert compiled.runner._compiled is not None and torch.allclose(got, want, rtol=0, atol=1e-5)

    keys = []
    store = SampleStore(tmp_path)
    store.get_or_make = lambda key, make: keys.append(key) or SampleSet(np.zeros((1, 1, 1, 3), np.uint8), np.zeros(1),
                                                                      4, key)
    # keyed by the runner the model's network runs under, whichever source asks (a source built without the run's
    # --compile, as the mutation cases' was, stored compiled samples under the traced key)
    from fixtures.zoo import Model, ModelLoader

    traced = load_denoiser(zoo["unet16-edm-m64"]).use("traced")
    for D in (traced, compiled):
        model = lambda name, D=D: Model(name, D, D.kernel, D.sample_shape, "f")  # noqa: E731
        SampleSource(model, store, "cpu")(SimpleNamespace(model="m", sampler="dpm3", nfe=4), _Bank())
    # a suite checkpoint's model keys the runner it will be built with, before building it
    for runner in ("traced", "compiled"):
        loader = ModelLoader(zoo, torch.device("cpu"), tmp_path, runner=runner)
        SampleSource(loader, store, "cpu")(SimpleNamespace(model="unet16-edm-m64", sampler="dpm3", nfe=4), _Bank())
        assert loader("unet16-edm-m64")._D is None
    assert "runner" not in keys[0] and keys[1]["runner"] == "compiled"
    assert "runner" not in keys[2] and keys[3]["runner"] == "compiled"
    # a solve whose every network call runs the module (DPS: gradients on) is the same set under any runner
    dps_like = lambda D, x, label, rows: None  # noqa: E731
    dps_like.module_only = True
    model = lambda name: Model(name, compiled, compiled.kernel, compiled.sample_shape, "f")  # noqa: E731
    SampleSource(model, store, "cpu")(SimpleNamespace(model="m", sampler="dpm3", nfe=4), _Bank(), run_fn=dps_like)
    assert "runner" not in keys[4]
    from fixtures.samples import sampling_code

    assert all(k["code"] == sampling_code() for k in keys)  # the sampling code and its packages key every set


def test_one_label_per_noise_gives_each_noise_what_its_own_label_gives(zoo):
    """Per-noise classes (Appendix A.1's random labels) reach each noise's own rows, across micro-batches."""
    D = load_denoiser(zoo["unet16-edm-cond-l2048"]).use("traced")
    bank = NoiseBank.draw(0, D.sample_shape, n=10)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 0, 1, 1])  # both classes, in runs across the micro-batches
    mixed = generate(D, D.kernel, bank, nfe=4, micro_batch=4, label=labels, workers=2).x
    for c in range(2):
        rows = (labels == c).nonzero().reshape(-1)
        alone = generate(D, D.kernel, bank, ids=bank.ids[rows].tolist(), nfe=4, micro_batch=4, label=c).x
        assert torch.equal(mixed[rows], alone)
    with pytest.raises(ValueError, match=r"one class or one per noise id \(10\), got shape \(3,\)"):
        generate(D, D.kernel, bank, nfe=4, label=torch.tensor([0, 1, 2]))


def test_a_cuda_graphed_runner_hands_out_copies_of_its_output():
    """Under CUDA graphs (`--compile` on a GPU) a call's output lives in the graph's pool and the next replay
    overwrites it, while a multistep solver keeps earlier outputs: the runner copies each one out. Checked with a
    stand-in for the graphed module, as CI has no GPU."""
    pool = torch.zeros(2, 3)

    def replay(x, t):  # what a graph replay does: writes the shared output buffer and returns it
        pool.copy_(x * t)
        return pool

    runner = Runner(torch.nn.Linear(3, 3), "compiled")
    runner._compiled, runner._graphed = replay, True
    with torch.no_grad():
        first = runner(torch.ones(2, 3), torch.tensor(2.0))
        runner(torch.ones(2, 3), torch.tensor(5.0))
    assert torch.equal(first, torch.full((2, 3), 2.0)) and first.data_ptr() != pool.data_ptr()


def test_compiled_runners_of_one_network_class_all_compile(monkeypatch):
    """torch.compile's graphs are kept per function (the class's forward): the ninth model or signature of one class
    ran eagerly with only a log line, while its runner and the store key said "compiled". A counting backend stands
    in for inductor (seconds per graph on 2 cores)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    for name in ("recompile_limit", "fail_on_recompile_limit_hit"):  # dynamo's settings as they were, afterwards
        monkeypatch.setattr(torch._dynamo.config, name, getattr(torch._dynamo.config, name))
    counter, compile_ = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compile_(net, backend=counter, dynamic=kw["dynamic"]))
    torch._dynamo.reset()
    try:
        for width in range(1, 12):  # 11 models of one class, each its own input signature
            runner = Runner(torch.nn.Linear(width, 2), "compiled")
            with torch.no_grad():
                runner(torch.zeros(1, width))
        assert counter.frame_count == 11
    finally:
        torch._dynamo.reset()

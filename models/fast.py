"""Faster network calls for sampling, and sampling on every core.

`Runner` puts a network behind one of three ways of calling it:

- "eager": the module itself.
- "traced": one frozen TorchScript trace per input signature (shapes, dtypes, device). A trace is kept only when it
  returns bit for bit what the module returns on the input it was traced with and on the next CHECKED_CALLS calls;
  otherwise that signature runs eager from then on (and the reason is kept in `refused`). A network whose forward
  branches on input values (not shapes) cannot be traced faithfully; these checks catch it only if the branch turns
  within those calls. A kept trace is the module's own graph with its weights inlined, checked
  to give the module's output, so it is not part of the sample store's key (tests/test_fast.py samples the
  embedded architectures both ways and compares them bit for bit).
- "compiled": `torch.compile` of the module, with CUDA graphs on a GPU (outputs differ from eager in the low bits,
  so the sample store keys it separately; it takes tens of seconds per model and shape to compile on 2 cores). Its
  calls take turns (a compiled module is not thread-safe), so extra workers do not speed it up.

Gradients always go through the module itself (posterior sampling and training need them).

`parallel_map` runs micro-batches on `workers` threads with one intra-op thread each, and with one intra-op thread
when there is a single worker too: a sample is then the same on any number of workers and cores, and the worker
count is not part of the key (tests/test_fast.py). A traced network releases the GIL for the whole forward, so
small networks, which use two intra-op threads poorly, run on both cores.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch

RUNNERS = ("eager", "traced", "compiled")
CHECKED_CALLS = 4  # a trace's first calls are compared with the module too: TorchScript's profiling executor swaps in
# its optimized graph (fusions, on a GPU) after the first call, and that graph must give the module's output as well;
# the first call repeats the input the trace was made with, so three new inputs are checked
T, R = TypeVar("T"), TypeVar("R")


COMPILE_LIMIT = 64  # compiled graphs per network class (torch's default, 8, is shared by every model of one class)


def _allow_recompiles() -> None:
    """torch.compile keeps its compiled graphs per function, here the network class's forward, so every model of one
    class and every input signature share one budget (8 by default); past it dynamo runs the module eagerly with only
    a log line, while the runner and the store key still say "compiled". The budget is raised, and a run past it
    stops with dynamo's error instead of storing eager samples as compiled ones."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, COMPILE_LIMIT)
    config.fail_on_recompile_limit_hit = True


def _unwrap(out):
    """A diffusers output object or the dict a trace returns for it -> the tensor."""
    if isinstance(out, dict):
        return out["sample"]
    return getattr(out, "sample", out)


def _differs(got: torch.Tensor, want: torch.Tensor) -> str:
    return f"trace differs from the module by {float((got - want).abs().max()):.3g}"


def _signature(args: tuple) -> tuple:
    return tuple((tuple(a.shape), a.dtype, str(a.device)) for a in args)


class Runner:
    """Calls `net(*args)` in the way `mode` names; returns a tensor (diffusers' output objects unwrapped)."""

    def __init__(self, net: torch.nn.Module, mode: str = "traced"):
        if mode not in RUNNERS:
            raise ValueError(f"network runner {mode!r} is unknown; valid: {', '.join(RUNNERS)}")
        self.net, self.mode = net, mode
        self._traces: dict[tuple, Optional[torch.jit.ScriptModule]] = {}
        self.refused: dict[tuple, str] = {}  # signature -> why it runs eager
        self._checks: dict[tuple, int] = {}  # signature -> calls still compared with the module
        self._pending: dict[tuple, int] = {}  # signature -> checked calls still running (their trace unconfirmed)
        self._lock = threading.Lock()
        self._compiled, self._graphed = None, False

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.mode == "eager" or torch.is_grad_enabled():
            return _unwrap(self.net(*args))
        if self.mode == "compiled":
            with self._lock:  # a compiled module is not safe to call from two threads: calls take turns
                if self._compiled is None:  # on a GPU with CUDA graphs: one launch per forward, no per-kernel cost
                    self._graphed = next(self.net.parameters()).is_cuda
                    _allow_recompiles()
                    self._compiled = torch.compile(self.net, dynamic=False,
                                                   mode="reduce-overhead" if self._graphed else None)
                out = _unwrap(self._compiled(*args))
                # a CUDA graph's output lives in its pool and the next replay overwrites it, while a multistep
                # solver keeps earlier outputs in its history: each call's output is copied out
                return out.clone() if self._graphed else out
        key = _signature(args)
        with self._lock:  # one trace per signature, even when two workers ask for it at once
            if key not in self._traces:
                self._traces[key] = self._trace(key, args)
                self._checks[key], self._pending[key] = CHECKED_CALLS, 0
            trace, check = self._traces[key], self._checks.get(key, 0) > 0
            if check:
                self._checks[key] -= 1
                self._pending[key] += 1
            # while another worker's check is still running the trace is unconfirmed: this call runs the module, as
            # it would on one worker if that check refused the trace
            unconfirmed = not check and self._pending.get(key, 0) > 0
        if trace is None or unconfirmed:
            return _unwrap(self.net(*args))
        if not check:
            try:
                return _unwrap(trace(*args))
            except Exception as e:  # noqa: BLE001 - a trace that fails where the module may not: the module answers
                with self._lock:
                    self._traces[key] = None
                    self.refused[key] = f"the trace raised {type(e).__name__}: {e} on a later call"
                return _unwrap(self.net(*args))
        same, why, out = False, "the module itself raised an error", None
        try:
            try:
                out = _unwrap(trace(*args))
            except Exception as e:  # noqa: BLE001 - e.g. a shape baked into the trace: the module answers instead
                why = f"the trace raised {type(e).__name__}: {e} on a later call"
            want = _unwrap(self.net(*args))
            if out is not None:
                same = torch.equal(out, want)
                if not same:
                    why = _differs(out, want) + " on a later call"
        finally:
            with self._lock:
                self._pending[key] -= 1
                if not same:
                    self._traces[key] = None
                    self.refused[key] = why
        return out if same else want

    def _trace(self, key: tuple, args: tuple) -> Optional[torch.jit.ScriptModule]:
        import warnings

        if self.net.training:  # freezing needs eval mode, and sampling a network in training mode is a mistake
            self.refused[key] = "the module is in training mode (call .eval() before sampling)"
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings: shape checks baked into this signature's trace
                trace = torch.jit.freeze(torch.jit.trace(self.net, args, strict=False, check_trace=False))
                got, want = _unwrap(trace(*args)), _unwrap(self.net(*args))
        except Exception as e:  # a network TorchScript cannot trace: it runs eager, as before
            self.refused[key] = f"{type(e).__name__}: {e}"
            return None
        if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor):
            self.refused[key] = f"the module returns a {type(want).__name__}, not a tensor: it runs eager"
            return None
        if not torch.equal(got, want):
            self.refused[key] = _differs(got, want)
            return None
        return trace


_THREADS_LOCK = threading.Lock()
_THREADS_OWNER: list[Optional[int]] = [None]  # the thread whose intra_op_threads blocks are open, if any
_THREADS_DEPTH = [0]


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n for the block, then restored. Under OpenMP (this torch's backend) the
    count is the calling thread's own and the one threads started later begin with; threads already running keep
    theirs. So blocks nest within one thread (each restores what it found), and a block opened while another
    thread's is open is refused: closing them out of order would leave one thread on the other's count (the main
    thread stuck at 1 thread, and every later "all cores" measurement on one)."""
    me = threading.get_ident()
    with _THREADS_LOCK:
        if _THREADS_OWNER[0] not in (None, me):
            raise RuntimeError("intra_op_threads blocks of two threads overlap; torch's thread count is per thread: "
                               "open the block in the thread that starts the others (parallel_map does)")
        _THREADS_OWNER[0] = me
        _THREADS_DEPTH[0] += 1
        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            torch.set_num_threads(before)
            _THREADS_DEPTH[0] -= 1
            if not _THREADS_DEPTH[0]:
                _THREADS_OWNER[0] = None


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> list[R]:
    """[fn(item) for item in items] on `workers` threads (in order; the first exception is raised), each item with
    one intra-op thread, whatever `workers` is: so that the result cannot depend on the worker count or on the
    machine's cores (oneDNN's convolutions split work by thread count: on the embedded UNet-16 at 8 rows a batch, one
    and two intra-op threads give outputs that differ in the low bits)."""
    items = list(items)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with intra_op_threads(1):
        if workers == 1 or len(items) < 2:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(fn, items))


def default_workers() -> int:
    """One worker per core torch would use (its intra-op thread count: the cores, or OMP_NUM_THREADS)."""
    return max(1, torch.get_num_threads())

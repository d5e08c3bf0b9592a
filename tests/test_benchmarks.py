"""Interleaved timing (fixtures/benchmarks.py) on a fake clock: turns, warm-up, and rounds that go on until each named
ratio's median is pinned down."""
import pytest

from fixtures import benchmarks
from fixtures.benchmarks import interleaved, ratio, ratio_interval, settled


class Clock:
    """A perf_counter that moves only when a code 'runs': code `name` advances it by the next of its durations."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.order = 0.0, {k: list(v) for k, v in durations.items()}, []

    def __call__(self) -> float:
        return self.now

    def code(self, name: str):
        def run():
            self.order.append(name)
            self.now += self.durations[name].pop(0) if len(self.durations[name]) > 1 else self.durations[name][0]
        return run


def timed(monkeypatch, durations, **kwargs):
    clock = Clock(durations)
    monkeypatch.setattr(benchmarks.time, "perf_counter", clock)
    return interleaved({name: clock.code(name) for name in durations}, **kwargs), clock


def test_codes_run_in_turns_and_warmup_rounds_are_not_kept(monkeypatch):
    times, clock = timed(monkeypatch, {"a": [5.0, 2.0], "b": [7.0, 1.0]}, rounds=3, warmup=1)
    assert clock.order == ["a", "b", "b", "a"] * 2  # every other round reversed: neither code always goes first
    assert times == {"a": [2.0, 2.0, 2.0], "b": [1.0, 1.0, 1.0]} and ratio(times, "a", "b") == 2.0


def test_a_steady_ratio_stops_at_the_fewest_rounds(monkeypatch):
    times, _ = timed(monkeypatch, {"a": [2.0], "b": [1.0]}, rounds=7, until=[("a", "b")])
    assert len(times["a"]) == 7 and ratio_interval(times, "a", "b") == (2.0, 2.0)


def test_a_noisy_ratio_runs_more_rounds_until_its_median_is_pinned_down(monkeypatch):
    # ratios alternate 1.8 and 2.2 (+-10%) for 12 rounds, then settle at 2.0: the interval of the median narrows
    # below 5% only once enough 2.0 rounds sit on both sides of the median
    a = [1.8, 2.2] * 6 + [2.0] * 40
    times, _ = timed(monkeypatch, {"a": a, "b": [1.0]}, rounds=7, warmup=0, until=[("a", "b")])
    n = len(times["a"])
    assert 12 < n < 40 and settled(times, "a", "b")
    assert not settled({k: v[:n - 1] for k, v in times.items()}, "a", "b")  # one round fewer was not enough


def test_a_ratio_is_not_settled_before_its_median_has_a_95_percent_interval(monkeypatch):
    """With 5 rounds the only order-statistics interval is the whole range, whose coverage is 93.75%: a steady ratio
    asked for 5 rounds still runs a sixth before it counts as settled."""
    times, _ = timed(monkeypatch, {"a": [2.0], "b": [1.0]}, rounds=5, until=[("a", "b")])
    assert len(times["a"]) == 6 and not settled({k: v[:5] for k, v in times.items()}, "a", "b")


def test_a_ratio_that_never_settles_stops_at_max_rounds(monkeypatch):
    times, _ = timed(monkeypatch, {"a": [1.0, 3.0] * 30, "b": [1.0]}, rounds=7, warmup=0, until=[("a", "b")],
                     max_rounds=11)
    assert len(times["a"]) == 11 and not settled(times, "a", "b")


def test_bad_arguments_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="not timed: c; timed: a, b"):
        timed(monkeypatch, {"a": [1.0], "b": [1.0]}, until=[("a", "c")])
    with pytest.raises(ValueError, match="rounds=9, max_rounds=8"):
        timed(monkeypatch, {"a": [1.0]}, rounds=9, max_rounds=8)
    with pytest.raises(ValueError, match="rounds=0"):
        timed(monkeypatch, {"a": [1.0]}, rounds=0)


def test_network_flops_count_the_cpus_fused_attention():
    """Q K^T and the weights times V: 2 * 2 * B * H * L * S * E FLOPs (S = L), which torch's own counter leaves at 0
    for the CPU's flash-attention kernel."""
    import torch

    from fixtures.benchmarks import network_flops

    q = torch.randn(2, 4, 16, 8)
    flops = network_flops(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x), q)
    assert flops == 2 * 2 * 2 * 4 * 16 * 16 * 8


def test_a_gpu_run_times_five_rounds_where_a_cpu_run_times_one():
    import torch

    from fixtures.benchmarks import timed_rounds

    assert [timed_rounds(d) for d in ("cpu", torch.device("cpu"), "cuda", "cuda:1", torch.device("meta"))] == \
        [1, 1, 5, 5, 5]
    # a case timed alone keeps its own rounds on a CPU and takes at least five on a GPU
    assert [timed_rounds(d, 3) for d in ("cpu", "cuda")] == [3, 5] and timed_rounds("cuda", 8) == 8

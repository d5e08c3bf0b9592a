"""Claim cases with every outcome, run by tests/test_run_output.py in a pytest of their own (the file name has no
test_ prefix, so `pytest tests` does not collect it)."""
import os
import shutil
from pathlib import Path

import pytest

from cases import Bar, Case, Run
from tests.helpers import proportion


def make(name: str) -> Case:
    return Case("C2", "Sec. 2.1", "rp", (Run(f"{name}-a"), Run(f"{name}-b")), Bar(">=", 0.6, "a test bar"))


HOLDS, MISSES, CRASHES, SKIPS, BREAKS, FORGETS, TEARS = (make(n) for n in ("holds", "misses", "crashes", "skips",
                                                                            "breaks", "forgets", "tears"))


@pytest.fixture
def store_of(request):
    if request.node.callspec.params["case"] is BREAKS:
        raise RuntimeError("the store folder vanished during setup")
    yield
    if request.node.callspec.params["case"] is TEARS:
        raise OSError("the lock file could not be released")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in (HOLDS, MISSES, CRASHES, SKIPS, BREAKS, FORGETS,
                                                                     TEARS)])
def test_outcome(case, store_of, claim, request):
    if case is CRASHES and os.environ.get("SAMENOISE_TEST_INTERRUPT"):  # Ctrl-C while this case measures
        raise KeyboardInterrupt
    if case is CRASHES:
        raise RuntimeError("the sampler diverged at sigma 80")
    if case is SKIPS:
        pytest.skip("nothing to compare")
    if case is FORGETS:
        return  # a bench test that never checks its measurement must not pass as a result
    if os.environ.get("SAMENOISE_TEST_SABOTAGE") and case is MISSES:  # the output folder becomes a file mid-run
        out = Path(request.config.getoption("--report-dir"))
        shutil.rmtree(out, ignore_errors=True)
        out.write_text("in the way")
    claim(case, proportion(1.0 if case in (HOLDS, TEARS) else 0.3, 16, [(3, 0.2), (5, 0.4)]))


def test_the_hub_is_offline_whatever_the_environment_says():
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE

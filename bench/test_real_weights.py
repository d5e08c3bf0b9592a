"""Real published checkpoints (Appendix A.1, A.2, Table 1): run with --zoo models/real.toml and the weights
in place (see README); skipped, with what to provide, when a model is absent."""
import pytest

from cases.catalog import of
from cases.real import REAL_ZOO
from fixtures.measure import as_params
from models.zoo import Unavailable


@pytest.mark.parametrize("case", as_params(of("real")))
def test_real_pair(case, measure, zoo, claim):
    missing = [m for m in case.models if m not in zoo]
    if missing:  # conftest.py turns this into a skip that says what to provide
        raise Unavailable(f"no zoo entry for {', '.join(missing)}: pass --zoo {REAL_ZOO} (or your own zoo file) "
                          f"with the checkpoints in place")
    prompt = case.params.get("prompt")
    if prompt is not None:  # the record names the prompt: the entries must sample that one (an entry of precomputed
        # `prompt_embeddings` cannot be checked: they must encode it, as the README says)
        other = {m: zoo[m].prompt for m in case.models if not zoo[m].prompt_embeddings and zoo[m].prompt != prompt}
        if other:
            raise ValueError(f"{case.id}: the case's prompt is {prompt!r} ({case.source}), but the zoo entries sample "
                             f"{other}; set their `prompt` to it")
    claim(case, *measure.case(case))

"""Controls (Sec. 2.1, Appendix C): without a shared noise, RP must fall below the claims' bar."""
import pytest
import torch

from cases.catalog import of
from fixtures.measure import as_params
from models.noise import NoiseBank

PERMUTATION_SEED = 0


def permuted(bank: NoiseBank) -> NoiseBank:
    """The same noises with their coordinates shuffled by one fixed permutation: a different noise space."""
    flat = bank.eps.reshape(len(bank), -1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(PERMUTATION_SEED))
    return NoiseBank(flat[:, perm].reshape(bank.eps.shape).contiguous(), bank.ids, bank.seed)


@pytest.mark.parametrize("case", as_params(of("control")))
def test_control(case, measure, claim):
    ra, rb = case.runs
    n = measure.n(case)
    a = measure.sample(ra, n)
    if case.params["pairing"] == "shifted":  # id i against id i + 1 of the same model (mod n)
        b = measure.sample(rb, n)
        claim(case, measure.rp(a, b, ids_b=a.ids.take(range(1, n + 1), mode="wrap")))
    else:
        b = measure.sample(rb, n, bank=permuted(measure.bank_for(rb, n)), extra={"permuted": PERMUTATION_SEED})
        claim(case, measure.rp(a, b))

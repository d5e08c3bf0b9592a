"""C3: the memorization and generalization regimes (Sec. 3, Fig. 2, 5, 13) and Theorem 1."""
import pytest

from cases.catalog import of
from fixtures.measure import as_params


@pytest.mark.parametrize("case", as_params(of("C3")))
def test_regime(case, measure, claim):
    claim(case, *measure.case(case))


@pytest.mark.parametrize("case", as_params(of("theorem1")))
def test_theorem1(case, measure, claim):
    claim(case, *measure.case(case))

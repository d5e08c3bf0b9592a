"""Unique encoding (Sec. 2.2, Fig. 4) on the noise hyperplane, and manifold RP along slerp paths
(Appendix A.3, Fig. 11)."""
import pytest

from cases.catalog import of
from fixtures.measure import as_params


@pytest.mark.parametrize("case", as_params(of("encoding")))
def test_hyperplane(case, measure, claim):
    claim(case, *measure.case(case))


@pytest.mark.parametrize("case", as_params(of("manifold")))
def test_manifold(case, measure, claim):
    claim(case, *measure.case(case))

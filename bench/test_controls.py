"""Controls (Sec. 2.1, Appendix C): without a shared noise, RP must fall below the claims' bar."""
import pytest

from cases.catalog import of
from fixtures.measure import as_params


@pytest.mark.parametrize("case", as_params(of("control")))
def test_control(case, measure, claim):
    claim(case, *measure.case(case))

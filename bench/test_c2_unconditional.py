"""C2: unconditional models from the same noise agree across architecture, kernel, prediction/loss,
training procedure and sampler (Sec. 2, Fig. 3, Appendix B); and across NFE (Appendix A.4, Fig. 12)."""
import pytest

from cases.catalog import of
from fixtures.measure import as_params


@pytest.mark.parametrize("case", as_params(of("C2", "NFE")))
def test_pair(case, measure, claim):
    claim(case, *measure.case(case))

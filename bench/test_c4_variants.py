"""C4: conditional models (Sec. 4, Fig. 6, Appendix E), inverse problems by deterministic DPS (Fig. 7,
Appendix F) and partial fine-tuning (Fig. 8, Appendix G)."""
import pytest

from cases.catalog import of
from fixtures.measure import as_params


@pytest.mark.parametrize("case", as_params(of("conditional")))
def test_conditional(case, measure, claim):
    claim(case, *measure.case(case))


@pytest.mark.parametrize("case", as_params(of("inverse")))
def test_inverse(case, measure, claim):
    claim(case, *measure.case(case))


@pytest.mark.parametrize("case", as_params(of("finetune")))
def test_finetune(case, measure, claim):
    claim(case, *measure.case(case))

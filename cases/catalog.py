"""Every claim case of the suite in one list, `ALL`; bench modules take their cases from it by part of the paper."""
from __future__ import annotations

from cases import PARTS, Case
from cases.controls import CONTROLS
from cases.encoding import HYPERPLANE, MANIFOLD
from cases.real import REAL
from cases.regimes import REGIMES, SWEEP, THEOREM
from cases.unconditional import C2, NFE, STOCHASTIC
from cases.variants import CONDITIONAL, FINETUNE, INVERSE

ALL: list[Case] = (C2 + STOCHASTIC + NFE + HYPERPLANE + MANIFOLD + REGIMES + SWEEP + THEOREM + CONDITIONAL + INVERSE
                   + FINETUNE + CONTROLS + REAL)


def of(*parts: str) -> list[Case]:
    """The cases of these parts (keys of cases.PARTS), in ALL's order."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid parts: {', '.join(PARTS)}")
    return [c for c in ALL if c.part in parts]

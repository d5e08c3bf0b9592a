"""The names of the suite's built-in models, built and parsed here and nowhere else:

- 'optimal-<dataset>' (an embedded training set, e.g. 'optimal-m64') or 'optimal-n<N>' (the first N embedded
  thumbnails): the optimal denoiser D* of Theorem 1 on that training set;
- '<family>-n<N>': an embedded family's config (e.g. 'unet16-edm') trained on N thumbnails (the slow sweep).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# embedded thumbnails, 16x16, dataset_seed 0, nested (m4 is the first 4 of m64, m64 the first 64 of l2048)
DATASETS = {"m4": 4, "m64": 64, "l2048": 2048}
OPTIMAL = "optimal"
_SIZE = r"n(?P<size>[1-9]\d*)"  # the training-set tag of a sweep model and of D* on the first N thumbnails
_SIZED = re.compile(rf"^(?P<family>.+)-{_SIZE}$")
# a size tag inside any name: an embedded dataset's ('-m4' in 'unet16-edm-m4-seed1') or a sweep size ('-n256')
_SIZE_TAG = re.compile(rf"-(?:{'|'.join(map(re.escape, DATASETS))}|{_SIZE})(?=-|$)")


@dataclass(frozen=True)
class Builtin:
    kind: str  # 'optimal' (D*) or 'sweep' (a family trained on `size` thumbnails)
    size: int  # training-set size
    family: str = ""  # the embedded config family of a sweep model


def optimal(training_set: str | int) -> str:
    """D*'s name on an embedded dataset ('m64' -> 'optimal-m64') or on the first N thumbnails (64 -> 'optimal-n64')."""
    return f"{OPTIMAL}-n{training_set}" if isinstance(training_set, int) else f"{OPTIMAL}-{training_set}"


def family(name: str) -> str:
    """A model's name without its training-set tag: the line it joins along the size axis. 'unet16-edm-m4' and
    'unet16-edm-n256' are 'unet16-edm', 'unet16-edm-m4-seed1' is 'unet16-edm-seed1'; a name without a tag stays whole."""
    return _SIZE_TAG.sub("", name, count=1)


def sweep(family: str, size: int) -> str:
    """The name of an embedded family trained on `size` thumbnails ('unet16-edm', 128 -> 'unet16-edm-n128')."""
    return f"{family}-n{size}"


def parse(name: str) -> Optional[Builtin]:
    """The built-in model a name stands for, or None (a zoo entry, or no model at all)."""
    if name.startswith(f"{OPTIMAL}-"):
        rest = name[len(OPTIMAL) + 1:]
        if rest in DATASETS:
            return Builtin(OPTIMAL, DATASETS[rest])
        found = _SIZED.match(name)
        return Builtin(OPTIMAL, int(found["size"])) if found and found["family"] == OPTIMAL else None
    found = _SIZED.match(name)
    return Builtin("sweep", int(found["size"]), found["family"]) if found else None

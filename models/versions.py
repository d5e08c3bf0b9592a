"""Installed package versions, as a run's metadata and the keys of what is kept between runs record them."""
from __future__ import annotations

import importlib.metadata as md
from typing import Iterable, Optional


def package_versions(packages: Iterable[str]) -> dict[str, Optional[str]]:
    """Each package's installed version; None for one that is not installed."""
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions

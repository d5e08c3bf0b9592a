"""Installed package versions and the suite's own code, as a run's metadata and the keys of what is kept between
runs record them."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional


def source_digest(paths: Iterable[str | Path]) -> str:
    """sha256 over Python files' syntax trees without their docstrings (comments and layout are not in a tree): what
    the code does, which an edit of its documentation leaves as it is. Files are named by folder and file name."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + _tree(path.read_text(), str(path)) + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=None)
def _tree(source: str, filename: str) -> bytes:
    """A file's syntax tree without docstrings, dumped; kept per source text (and file name, which a syntax error
    names), since a run digests the same files for the sample keys and the report (ast's parse and dump take about
    10 ms a file)."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def package_versions(packages: Iterable[str]) -> dict[str, Optional[str]]:
    """Each package's installed version; None for one that is not installed."""
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions

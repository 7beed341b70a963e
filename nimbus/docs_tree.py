"""Lay out the import tree (``nimbus.spec`` -> ``spec/`` ...) as symlinks for static API docs.

The design card maps top-level folders under the ``nimbus`` root (pyproject ``package-dir``);
static documentation tools (griffe, used by mkdocstrings) look for packages on disk, so
``python -m nimbus.docs_tree build/griffe`` builds ``build/griffe/nimbus`` from symlinks and
``mkdocs.yml`` points the Python handler there.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

__all__ = ["build"]

ROOT = Path(__file__).resolve().parent.parent


def build(dest: Path) -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = dest / "nimbus"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / mapping["nimbus"]).iterdir():
        link = pkg / entry.name
        if not link.exists() and entry.name != "__pycache__":
            link.symlink_to(entry)
    for name, folder in mapping.items():
        if name != "nimbus":
            link = pkg / name.split(".", 1)[1]
            if not link.exists():
                link.symlink_to(ROOT / folder)
    return pkg


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "build/griffe")))

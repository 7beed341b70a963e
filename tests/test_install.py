"""Install smoke test: a regular (non-editable) wheel carries every mapped package and imports
under the single root ``nimbus`` with no generic top-level names."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("nimbus_2pc-*.whl")
    return whl


def test_wheel_maps_the_design_card_folders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("nimbus_2pc-")}
    assert tops == {"nimbus"}, tops
    for pkg in ("spec", "reference", "optimized", "approx", "conformance", "runtime"):
        assert f"nimbus/{pkg}/__init__.py" in names, pkg


def test_every_source_package_is_listed_in_pyproject():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if rel and "tables" not in rel:
                name = ".".join((pkg, *rel))
                if any(name.startswith(m + ".") for m in mapping if m != pkg):
                    continue
                assert name in listed, f"{name} is missing from [tool.setuptools].packages"


def test_regular_install_imports(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import nimbus, nimbus.spec, nimbus.reference.sharing, nimbus.conformance.harness;"
            "print(nimbus.__file__, nimbus.spec.__file__)")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert str(target) in out.split()[0] and str(target) in out.split()[1], out

"""The one registry of generated files, and the command that refreshes or checks them.

``python -m nimbus.generated`` rewrites every generated file; ``--check`` exits non-zero (and says
which) when a committed file differs from what its generator produces now. CI runs ``--check``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["GENERATED", "all_generated", "main"]

#: path (relative to the repository root) -> "module:function" returning the file's text.
GENERATED: dict[str, str] = {
    "conformance/vectors/digests.json": "nimbus.conformance.digests:render",
    "docs/parameters.md": "nimbus.docsgen:parameters_page",
    "docs/protocols/index.md": "nimbus.docsgen:protocols_index",
}

#: Generators that own a whole family of files and have their own ``--check``.
COMMANDS: dict[str, list[str]] = {
    "approximation tables (approx/tables/*.json)": ["-m", "nimbus.approx.regenerate"],
}


def _protocol_pages() -> dict[str, str]:
    """One generated page per registered protocol (derived from the protocol registry)."""
    import nimbus.spec  # noqa: F401  (registers every protocol)
    from nimbus.spec.protocols import PROTOCOLS

    return {f"docs/protocols/{name}.md": f"nimbus.docsgen:render_protocol:{name}" for name in sorted(PROTOCOLS)}

ROOT = Path(__file__).resolve().parent.parent


def _render(spec: str) -> str:
    mod, fn, *args = spec.split(":")
    return getattr(importlib.import_module(mod), fn)(*args)


def all_generated() -> dict[str, str]:
    return {**GENERATED, **_protocol_pages()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.generated", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = ap.parse_args(argv)
    stale = []
    files = all_generated()
    for rel, spec in files.items():
        path = ROOT / rel
        text = _render(spec)
        old = path.read_text() if path.exists() else None
        if old != text:
            if args.check:
                stale.append(rel)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {rel}")
    import subprocess

    for what, cmd in COMMANDS.items():
        rc = subprocess.run([sys.executable, *cmd, *(["--check"] if args.check else [])]).returncode
        if rc != 0:
            stale.append(what)
    if stale:
        print("stale generated files (run `python -m nimbus.generated`):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(files)} generated files are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``nimbus`` command line (also ``python -m nimbus``).

Every subcommand is one function ``cmd_<name>(args) -> exit status`` plus a function that adds its
arguments, registered in the one table :data:`COMMANDS` with :func:`command`. Adding a subcommand
(serve, setup, infer, demo, bench) means writing those two functions, here or in a module named
in :data:`COMMAND_MODULES` (imported when the parser is built), and decorating the first;
:func:`build_parser` and :func:`main` pick it up from the table. Heavy imports go inside the
``cmd_`` function, so ``nimbus --help`` stays fast.

Exit status: 0 success, 1 a check failed (e.g. ``net-check`` outside its tolerances),
2 usage or input error (argparse), 3 a nimbus error (bad parameters, transport failure, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Callable

from nimbus._version import PROTOCOL_VERSION, __version__
from nimbus.spec.errors import NimbusError

__all__ = ["main", "build_parser", "command", "Command", "COMMANDS", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE",
           "EXIT_ERROR"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` returns an exit status."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] | None = None
    description: str | None = None


#: The subcommands, in the order ``nimbus --help`` lists them.
COMMANDS: dict[str, Command] = {}
#: Modules that register further subcommands with :func:`command` when imported.
COMMAND_MODULES: tuple[str, ...] = ("nimbus.commands", "nimbus.bench.bert")


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None,
            description: str | None = None):
    """Decorator: register ``run`` as the subcommand ``name``."""

    def deco(run: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        COMMANDS[name] = Command(name, help, run, configure, description or run.__doc__)
        return run

    return deco


def build_parser() -> argparse.ArgumentParser:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    p = argparse.ArgumentParser(
        prog="nimbus",
        description="nimbus-2pc: secure two-party inference for BERT-family Transformers (Nimbus protocol).",
    )
    p.add_argument("--version", action="version",
                   version=f"nimbus-2pc {__version__} (wire protocol version {PROTOCOL_VERSION})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.help, description=c.description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if c.configure is not None:
            c.configure(sp)
        sp.set_defaults(_run=c.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nimbus`` script (``nimbus = nimbus.cli:main``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except NimbusError as e:
        print(f"nimbus {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"nimbus {args.command}: interrupted", file=sys.stderr)
        return 130


# -- params ----------------------------------------------------------------------------------------
def _describe_preset(ps) -> str:
    desc = getattr(ps, "description", None)
    if desc:
        return str(desc)
    parts = [f"linear Z_2^{ps.linear.bits} (f={ps.linear.frac})",
             f"non-linear Z_2^{ps.nonlinear.bits} (f={ps.nonlinear.frac})"]
    comps = [(n, getattr(ps, n, None)) for n in ("he", "ot")] + list(getattr(ps, "extra", ()))
    insecure = False
    for name, comp in comps:
        if comp is None:
            continue
        insecure = insecure or bool(getattr(comp, "insecure", False))
        short = getattr(comp, "summary", None)
        if callable(short):
            parts.append(f"{name}: {short()}")
            continue
        scalars = []
        if dataclasses.is_dataclass(comp):
            scalars = [f"{f.name}={getattr(comp, f.name)}" for f in dataclasses.fields(comp)
                       if isinstance(getattr(comp, f.name), (str, int)) and f.name != "insecure"][:3]
        parts.append(f"{name}: {type(comp).__name__}" + (f"({', '.join(scalars)})" if scalars else ""))
    if insecure:
        parts.append("INSECURE test parameters")
    return ", ".join(parts)


def _configure_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("params", "list the parameter presets, whether they validate, and what they are", _configure_params)
def cmd_params(args: argparse.Namespace) -> int:
    """List the parameter presets (nimbus.spec.params.PRESETS): name, validation status
    (``validate()`` passes or the reason it does not), the 32-byte id both parties compare in the
    handshake, and a description."""
    import nimbus.spec  # noqa: F401  (registers every preset)
    from nimbus.spec.params import PRESETS

    rows = []
    for name in sorted(PRESETS):
        ps = PRESETS[name]
        try:
            ps.validate()
            ok, err = True, None
        except NimbusError as e:
            ok, err = False, f"{type(e).__name__}: {e}"
        try:
            pid = ps.id.hex()
        except NimbusError as e:
            pid, ok, err = None, False, err or f"{type(e).__name__}: {e}"
        rows.append({"name": name, "valid": ok, "error": err, "id": pid, "description": _describe_preset(ps)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    w = max([len(r["name"]) for r in rows] + [4])
    print(f"{'NAME':<{w}}  {'STATUS':<7}  {'ID':<16}  DESCRIPTION")
    for r in rows:
        status = "valid" if r["valid"] else "INVALID"
        print(f"{r['name']:<{w}}  {status:<7}  {(r['id'] or '-')[:16]:<16}  {r['description']}")
        if r["error"]:
            print(f"{'':<{w}}  {'':<7}  {'':<16}  -> {r['error']}")
    return EXIT_OK if all(r["valid"] for r in rows) else EXIT_FAILED


# -- net-check -------------------------------------------------------------------------------------
def _configure_net_check(p: argparse.ArgumentParser) -> None:
    from nimbus.spec.cost import NETWORKS

    p.add_argument("--network", required=True, choices=sorted(NETWORKS), help="network preset to emulate")
    p.add_argument("--bytes", type=_byte_count, default=50_000_000, metavar="N",
                   help="bulk-transfer size for the bandwidth figure (default 50e6; 0 skips it)")
    p.add_argument("--rounds", type=_positive_int, default=100, metavar="K",
                   help="ping-pong round trips (default 100)")
    p.add_argument("--in-process", action="store_true",
                   help="run the peer as a thread of this process instead of a second process")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds before giving up on the peer")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {s!r}")
    return v


def _byte_count(s: str) -> int:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {s!r}") from None
    if v < 0 or v != int(v):
        raise argparse.ArgumentTypeError(f"byte count must be a non-negative integer: {s!r}")
    return int(v)


@command("net-check", "measure bandwidth and latency of loopback shaped to a network preset", _configure_net_check)
def cmd_net_check(args: argparse.Namespace) -> int:
    """Run two parties (two processes unless --in-process) over loopback, both shaping their
    sending direction to the preset; measure a bulk transfer (bandwidth, timed at the receiver)
    and a ping-pong (one-way latency = total / 2K). Passes when the bandwidth is within 15% of
    the preset and the ping-pong within 20% of 2 K latency."""
    from nimbus.runtime.netem import net_check

    r = net_check(args.network, nbytes=args.bytes, rounds=args.rounds,
                  processes=1 if args.in_process else 2, timeout=args.timeout)
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
    else:
        print(r.report())
    return EXIT_OK if r.ok else EXIT_FAILED


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("sentences", nargs="*", metavar="TEXT", help="sentences to classify (default: three examples)")
    p.add_argument("--network", default="lan", help="network preset to shape loopback to (default lan)")
    p.add_argument("--net-check", action="store_true", help="run the network self-check first")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="checkpoint directory (default: the MiniLM sentiment classifier, built on first use)")
    p.add_argument("--cache", default=None, metavar="DIR", help="client cache directory (default ~/.cache/nimbus/demo-client)")


@command("demo", "secure inference on the MiniLM sentiment classifier, both parties on this machine", _configure_demo)
def cmd_demo(args: argparse.Namespace) -> int:
    """Both parties on this machine, two processes over shaped loopback: the server serves the
    MiniLM sentiment classifier; the client runs the setup once (cached), then classifies a few
    sentences securely and prints secure and plaintext predictions side by side. Fails unless
    every secure result equals the exact fixed-point semantics bit for bit."""
    from nimbus.demo import SENTENCES, run_demo

    return run_demo(args.network, check_network=args.net_check, model_dir=args.model, cache_dir=args.cache,
                    sentences=tuple(args.sentences) or SENTENCES)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

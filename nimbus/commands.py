"""The ``nimbus serve`` / ``nimbus setup`` / ``nimbus infer`` subcommands (registered in
``nimbus.cli.COMMANDS``; the Python API behind them is ``nimbus.api``).

    nimbus serve --model DIR [--host H] [--port P] [--tls-cert C --tls-key K] [--network PRESET]
    nimbus setup --server HOST:PORT --cache DIR [--tls-ca CA]
    nimbus infer --server HOST:PORT --cache DIR [--json] [--report] "text" ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nimbus.cli import EXIT_FAILED, EXIT_OK, command

__all__ = ["cmd_serve", "cmd_setup", "cmd_infer", "parse_address"]

DEFAULT_KEY_FILE = "~/.config/nimbus/server.key"


def parse_address(s: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, default port) -> (host, port)."""
    from nimbus.api import DEFAULT_PORT

    host, sep, port = s.rpartition(":")
    if not sep:
        return s, DEFAULT_PORT
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {s!r}") from None
    if not 0 < p < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {s!r}")
    return host.strip("[]") or "127.0.0.1", p


def _network_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", default=None, metavar="PRESET",
                   help="shape this side's sending direction to a network preset (lan, wan, bolt-lan, bolt-wan)")
    p.add_argument("--params", default="bert-base", help="parameter preset (default bert-base)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds before giving up on the peer")


def _tls_client(args):
    from nimbus.runtime.tcp import TlsConfig

    if not args.tls_ca and not args.tls:
        return None
    return TlsConfig.client(cafile=args.tls_ca, server_hostname=args.tls_hostname)


def _client_tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls", action="store_true", help="use TLS, verifying the server against the system CAs")
    p.add_argument("--tls-ca", metavar="PEM", help="use TLS, verifying the server's certificate against this CA file")
    p.add_argument("--tls-hostname", metavar="NAME", help="the name in the server's certificate (default: HOST)")


# -- serve ----------------------------------------------------------------------------------------------
def _configure_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR",
                   help="Hugging Face checkpoint directory (config.json + model.safetensors [+ tokenizer.json])")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7788, help="port (default 7788)")
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain (enables TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key (default: in --tls-cert)")
    p.add_argument("--key-file", default=DEFAULT_KEY_FILE, metavar="FILE",
                   help=f"the server's long-term secret (created 0600 if missing; default {DEFAULT_KEY_FILE}); "
                        "clients' caches stay valid while it and the model are unchanged")
    p.add_argument("--max-connections", type=int, default=None, metavar="N", help="exit after N connections")
    _network_arg(p)


@command("serve", "serve a model: answer setup and inference connections", _configure_serve)
def cmd_serve(args: argparse.Namespace) -> int:
    """Load a BERT-family checkpoint, convert it to fixed point and answer connections one after
    another: setup (stream the encrypted weights) or inference sessions. Ctrl-C stops."""
    from nimbus.api import Server
    from nimbus.runtime.tcp import TlsConfig

    tls = TlsConfig.server(args.tls_cert, args.tls_key) if args.tls_cert else None
    srv = Server(args.model, params=args.params, key_file=args.key_file)
    srv.serve(args.host, args.port, tls=tls, network=args.network, max_connections=args.max_connections,
              timeout=args.timeout, log=lambda s: print(s, flush=True))
    return EXIT_OK


# -- setup ----------------------------------------------------------------------------------------------
def _configure_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, type=parse_address, metavar="HOST:PORT")
    p.add_argument("--cache", required=True, metavar="DIR", help="cache directory (created)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _client_tls_args(p)
    _network_arg(p)


@command("setup", "fetch a served model's encrypted weights into a local cache (once per model)", _configure_setup)
def cmd_setup(args: argparse.Namespace) -> int:
    """Run the setup phase against a server: its public architecture and tokenizer, then every
    weight matrix encrypted under its key, streamed into the cache directory and verified. An
    interrupted setup leaves no cache: run it again."""
    from nimbus.api import Client

    host, port = args.server
    c = Client(args.cache, params=args.params)
    r = c.setup(host, port, tls=_tls_client(args), network=args.network, progress=not args.no_progress,
                timeout=args.timeout)
    arch = c.arch
    print(f"setup done: {arch.name or 'model'} ({arch.layers} layers, hidden {arch.hidden}), "
          f"{r.bytes_s2c / 1e9:.2f} GB received in {r.seconds:.1f} s; cache {r.cache_bytes / 1e9:.2f} GB at {r.path}")
    return EXIT_OK


# -- infer ----------------------------------------------------------------------------------------------
def _configure_infer(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify or embed (or use --file)")
    p.add_argument("--server", required=True, type=parse_address, metavar="HOST:PORT")
    p.add_argument("--cache", required=True, metavar="DIR", help="the cache directory made by `nimbus setup`")
    p.add_argument("--file", metavar="PATH", help="read texts from a file, one per line")
    p.add_argument("--pad-to", type=int, default=None, metavar="N",
                   help="pad every query to N tokens (the server then learns N, not the true length)")
    p.add_argument("--truncate", action="store_true", help="truncate texts longer than the limit instead of failing")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--report", action="store_true",
                   help="per-category time, bytes and rounds, with projections onto the network presets")
    p.add_argument("--report-json", metavar="PATH", help="write the report as JSON to PATH")
    _client_tls_args(p)
    _network_arg(p)


@command("infer", "secure inference of texts against a served model", _configure_infer)
def cmd_infer(args: argparse.Namespace) -> int:
    """Tokenize locally, run every text through the secure graph with the server, print the label
    and probabilities (a classifier) or the embedding (an embedding model). The server learns
    nothing but each query's (padded) length."""
    from nimbus.api import Client

    texts = list(args.texts)
    if args.file:
        texts += [ln.strip() for ln in Path(args.file).read_text().splitlines() if ln.strip()]
    if not texts:
        print("nimbus infer: nothing to do (give texts or --file)", file=sys.stderr)
        return EXIT_FAILED
    host, port = args.server
    c = Client(args.cache, params=args.params)
    bar = None
    if not args.json and len(texts) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), unit="query", desc="secure inference", disable=None)
    run = c.infer(texts, host, port, tls=_tls_client(args), network=args.network, pad_to=args.pad_to,
                  truncate=args.truncate, timeout=args.timeout, on_result=(lambda k, r: bar.update(1)) if bar else None)
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps({"predictions": [p.to_json() for p in run.predictions], "wall_s": run.wall_s,
                          **({"report": _report_json(run)} if args.report else {})}, indent=1))
    else:
        for p in run.predictions:
            print(_format_prediction(p))
        print(f"({len(texts)} queries in {run.wall_s:.1f} s)")
        if args.report:
            from nimbus.report import render_table

            print(render_table(run.report(), ("lan", "wan", "bolt-lan", "bolt-wan")))
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(_report_json(run), indent=1))
    return EXIT_OK


def _report_json(run) -> dict:
    from nimbus.report import projections

    table = run.report()
    return {c: {**r, "projected_s": projections(r)} for c, r in table.items()}


def _format_prediction(p) -> str:
    text = (p.text or "")[:60]
    if p.logits is not None:
        probs = " ".join(f"{x:.3f}" for x in p.probabilities)
        return f"{p.label:<10} p=[{probs}]  {text!r}"
    v = p.embedding
    return f"embedding[{v.size}] |v|={float((v * v).sum()) ** 0.5:.3f} {' '.join(f'{x:+.3f}' for x in v[:4])} ...  {text!r}"


# -- tls-cert -------------------------------------------------------------------------------------------
def _configure_cert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="the server's host name or IP address, as clients will dial it")
    p.add_argument("--out", default=".", metavar="DIR", help="where to write server.crt and server.key (default .)")


@command("tls-cert", "make a self-signed TLS certificate for `nimbus serve` (copy server.crt to clients)", _configure_cert)
def cmd_tls_cert(args: argparse.Namespace) -> int:
    """Write DIR/server.crt and DIR/server.key (0600): serve with --tls-cert server.crt --tls-key
    server.key; clients verify with --tls-ca server.crt (copy it over a trusted channel)."""
    from nimbus.runtime.certs import self_signed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c, k = self_signed(out / "server.crt", out / "server.key", args.name)
    print(f"wrote {c} (give to clients) and {k} (keep on the server)")
    return EXIT_OK

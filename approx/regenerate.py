"""Write, or check, the generated approximation tables and their certificates.

    python -m nimbus.approx.regenerate            re-fit from the stored calibration histograms
    python -m nimbus.approx.regenerate --capture  first re-capture the histograms (runs the model)
    python -m nimbus.approx.regenerate --check    exit 1 if any generated file is stale
    ... --ring-bits L --frac-bits F --dir DIR     our tables in another format (elsewhere)

Files under approx/tables/: calibration-minilm.json (and calibration-bert-base-random.json),
the tables nimbus-prototype, bumblebee, ours-minilm-global, ours-minilm-layers,
ours-minilm-precise (GELU and exp with several pieces / higher degrees),
ours-bert-base-random-global, and certificates.json. Deterministic; re-fitting takes seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import baselines, calibrate, certify, fit, fxp, tables
from .calibrate import Histogram

__all__ = ["RING_BITS", "FRAC_BITS", "INITIAL_APPROX", "merged", "build_tables", "build_precise_tables",
           "build_all", "main"]

RING_BITS, FRAC_BITS = 32, 13
# Initial approximations for Newton: the caller normalises the input by a power of 2 (4 for
# rsqrt) into this domain first, then runs Newton iterations.
INITIAL_APPROX = {"reciprocal": ((0.5, 1.0), 2), "rsqrt": ((0.25, 1.0), 2)}
_EXP_DOMAIN = (-np.inf, 0.0)


def merged(hists: Sequence[dict]) -> Histogram:
    """The global histogram: all layers pooled."""
    hs = [Histogram.from_json(h) for h in hists]
    out = hs[0]
    for h in hs[1:]:
        out = out.merged(h)
    return out


def _newton_iterations(function: str, rel_err: float, frac_bits: int) -> int:
    """Newton steps until the relative error is below 2^-f (reciprocal: e' = e^2;
    rsqrt: |e'| <= 1.5 e^2 + 0.5 |e|^3). Infinite (-1) when the start does not contract."""
    e, k = rel_err, 0
    while e >= 2.0**-frac_bits:
        e = e * e if function == "reciprocal" else 1.5 * e * e + 0.5 * e**3
        k += 1
        if k > 20:
            return -1
    return k


def _initial(function: str, l: int, f: int) -> tuple[dict, dict, dict]:
    domain, degree = INITIAL_APPROX[function]
    entry, report = fit.fit_single(function, domain, degree, l, f)
    cert = certify.certify_entry(entry, domain)
    rel = cert["bound"] / float(fit.TARGETS[function].np_f(np.array(domain[1])))
    cert["newton_iterations_to_2^-f"] = _newton_iterations(function, rel, f)
    return entry, report, cert


def _fit_one(points, fn: str, l: int, f: int):
    entry, report = fit.fit_entry(points, fit.SPECS[fn], l, f)
    return entry, report, certify.certify_entry(entry, fit.SPECS[fn].domain, points)


def build_tables(name: str, calib: dict, per_layer: bool, l: int = RING_BITS,
                 f: int = FRAC_BITS) -> tuple[dict, dict]:
    """Our tables from one calibration file: (table file, certificates)."""
    entries, reports, certs = {}, {}, {}
    for fn in ("gelu", "exp"):
        if per_layer:
            res = [_fit_one(Histogram.from_json(h).points(), fn, l, f) for h in calib[fn]]
            entries[fn], reports[fn], certs[fn] = (list(t) for t in zip(*res))
        else:
            entries[fn], reports[fn], certs[fn] = _fit_one(merged(calib[fn]).points(), fn, l, f)
    if not per_layer:
        entries["tanh"], reports["tanh"], certs["tanh"] = _fit_one(
            Histogram.from_json(calib["tanh"]).points(), "tanh", l, f)
        for fn in INITIAL_APPROX:
            entries[fn], reports[fn], certs[fn] = _initial(fn, l, f)
    table = {"name": name, "semantics": fxp.SEMANTICS, "source": calib["model"],
             "calibration": {k: calib[k] for k in ("tokens", "snippets", "text", "seed")},
             "input_ranges": _input_ranges(calib), "fit": reports, "entries": entries}
    return table, certs


def build_precise_tables(name: str, calib: dict, l: int = RING_BITS,
                         f: int = FRAC_BITS) -> tuple[dict, dict]:
    """The precise tables (`fit.PRECISE_SPECS`: several polynomial pieces, higher degrees),
    GELU and exp only, pooled over layers: (table file, certificates)."""
    entries, reports, certs = {}, {}, {}
    for fn, spec in fit.PRECISE_SPECS.items():
        points = merged(calib[fn]).points()
        entries[fn], reports[fn] = fit.fit_chain_entry(points, spec, l, f)
        certs[fn] = certify.certify_entry(entries[fn], spec.domain, points)
    table = {"name": name, "semantics": fxp.SEMANTICS, "source": calib["model"],
             "calibration": {k: calib[k] for k in ("tokens", "snippets", "text", "seed")},
             "input_ranges": {k: v for k, v in _input_ranges(calib).items() if k in ("exp", "gelu")},
             "fit": reports, "entries": entries}
    return table, certs


def _input_ranges(calib: dict) -> dict:
    return {"exp": "x = s - rowmax(s) <= 0 (softmax)", "gelu": "any", "tanh": "any (pooler)",
            "reciprocal": "[0.5, 1): softmax row sum (calibrated range below) divided by 2^k",
            "rsqrt": "[0.25, 1): LayerNorm variance + eps (calibrated range below) divided by 4^k",
            "softmax_sum_calibrated": calib["softmax_sum"], "ln_var_calibrated": calib["ln_var"]}


def _baseline(name: str, entries: dict, points: dict) -> tuple[dict, dict]:
    certs = {fn: certify.certify_entry(e, _EXP_DOMAIN if fn == "exp" else None, points[fn])
             for fn, e in entries.items()}
    table = {"name": name, "semantics": fxp.SEMANTICS, "source": baselines.__doc__.strip().split("\n")[0],
             "entries": entries}
    return table, certs


def _read_calibration(table_dir: Path) -> dict:
    out = {}
    for key in ("minilm", "bert-base-random"):
        path = table_dir / f"calibration-{key}.json"
        if path.is_file():
            out[key] = json.loads(path.read_text())
    if "minilm" not in out:
        raise FileNotFoundError("no calibration-minilm.json: run with --capture")
    return out


def build_all(calibs: dict, l: int = RING_BITS, f: int = FRAC_BITS) -> dict[str, dict]:
    """Every generated file (stem -> object), calibration files included; our tables in
    Z_2^l with f fraction bits (the published baselines keep their own formats)."""
    mini = calibs["minilm"]
    points = {fn: merged(mini[fn]).points() for fn in ("gelu", "exp")}
    files, certs = {}, {}
    for stem, entries in (("nimbus-prototype", baselines.prototype_tables()),
                          ("bumblebee", baselines.bumblebee_tables())):
        files[stem], certs[stem] = _baseline(stem, entries, points)
    files["ours-minilm-global"], certs["ours-minilm-global"] = build_tables("ours-minilm-global", mini, False, l, f)
    files["ours-minilm-layers"], certs["ours-minilm-layers"] = build_tables("ours-minilm-layers", mini, True, l, f)
    files["ours-minilm-precise"], certs["ours-minilm-precise"] = build_precise_tables(
        "ours-minilm-precise", mini, l, f)
    if "bert-base-random" in calibs:
        stem = "ours-bert-base-random-global"
        files[stem], certs[stem] = build_tables(stem, calibs["bert-base-random"], False, l, f)
    files["certificates"] = {"name": "certificates", "doc": certify.__doc__.strip().split("\n")[0],
                             "certificates": certs}
    for key, c in calibs.items():
        files[f"calibration-{key}"] = c
    return files


#: Report figures computed in floating point from a least-squares solve (LAPACK/BLAS kernels
#: differ by CPU in the last digits of ill-conditioned fits): compared to this relative
#: tolerance; everything else (coefficients, breakpoints, certificates) must match exactly.
FLOAT_REPORT_KEYS, FLOAT_REPORT_RTOL = ("objective_float",), 1e-3


def _same(old, new, key: str = "") -> bool:
    """Generated content equal, up to FLOAT_REPORT_RTOL on the float report keys."""
    if key in FLOAT_REPORT_KEYS and isinstance(old, str) and isinstance(new, str):
        try:
            a, b = float(old), float(new)
        except ValueError:
            return old == new
        return abs(a - b) <= FLOAT_REPORT_RTOL * max(abs(a), abs(b))
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(_same(old[k], new[k], k) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b, key) for a, b in zip(old, new))
    return old == new


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nimbus.approx.regenerate")
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    ap.add_argument("--capture", action="store_true", help="re-capture calibration histograms")
    ap.add_argument("--no-bert-base", action="store_true", help="with --capture: skip BERT-base")
    ap.add_argument("--dir", type=Path, default=tables.TABLE_DIR)
    ap.add_argument("--ring-bits", type=int, default=RING_BITS, help="ring of our tables (default 32)")
    ap.add_argument("--frac-bits", type=int, default=FRAC_BITS, help="fraction bits (default 13)")
    a = ap.parse_args(argv)
    if a.capture:
        calibs = {"minilm": calibrate.capture_minilm()}
        if not a.no_bert_base:
            calibs["bert-base-random"] = calibrate.capture_bert_base_random()
        calibs = {k: json.loads(tables.dumps(v)) for k, v in calibs.items()}
    else:
        calibs = _read_calibration(a.dir)
    stale = []
    for stem, obj in build_all(calibs, a.ring_bits, a.frac_bits).items():
        path, text = a.dir / f"{stem}.json", tables.dumps(obj)
        if a.check:
            if not path.is_file() or not _same(json.loads(path.read_text()), json.loads(text)):
                stale.append(path.name)
        elif not path.is_file() or not _same(json.loads(path.read_text()), json.loads(text)):
            path.parent.mkdir(parents=True, exist_ok=True)  # (float report noise alone: kept)
            path.write_text(text)
    if stale:
        print("stale generated files: " + ", ".join(stale) +
              "; run python -m nimbus.approx.regenerate", file=sys.stderr)
        return 1
    print(("checked " if a.check else "wrote ") + str(a.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

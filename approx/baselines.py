"""Published approximations as table entries: the Nimbus prototype and the BumbleBee baseline.

- "nimbus-prototype" [NIMBUS24 prototype, read from its C++]: GELU 0 for x < -1.8,
  0.17025471961795552 x^2 + 0.32421075145645123 x - 0.006946478426716862 on [-1.8, 0.5), x above;
  exp (after max subtraction) 0 for x < -3.9, else the cubic
  ((0.0291786417536755 x + 0.26332572942924737) x + 0.8318065569430768) x + 0.9708981428645548.
  Evaluated in Z_2^32 with 13 fraction bits, as the prototype does.
- "bumblebee" (as the Nimbus authors describe their baseline): GELU 0 for x < -5, a cubic on
  [-5, -1.97), a degree-6 even-plus-linear polynomial on [-1.97, 3), x above; the polynomial
  coefficients are the published PUMA / SPU ones (seg1 = -0.5054031199708174
  - 0.42226581151983866 x - 0.11807612951181953 x^2 - 0.011034134030615728 x^3, seg2 =
  0.008526321541038084 + 0.5 x + 0.3603292692789629 x^2 - 0.037688200365904236 x^4
  + 0.0018067462606141187 x^6). exp(x) = (1 + x/2^8)^(2^8) for x >= -14, 0 below. Evaluated in
  Z_2^64 with 18 fraction bits, SPU's setting.

Real breakpoints b become integer breakpoints ceil(b * 2^f), so "x < b" is exact in fixed point;
decimal coefficients are converted exactly (`Fraction(str)`) and rounded half-to-even.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["PROTOTYPE", "BUMBLEBEE", "breakpoint", "poly_piece", "prototype_tables", "bumblebee_tables"]

PROTOTYPE = {
    "gelu": {"breaks": ("-1.8", "0.5"),
             "coeffs": ("-0.006946478426716862", "0.32421075145645123", "0.17025471961795552")},
    "exp": {"breaks": ("-3.9",),
            "coeffs": ("0.9708981428645548", "0.8318065569430768", "0.26332572942924737",
                       "0.0291786417536755")},
}
BUMBLEBEE = {
    "gelu": {"breaks": ("-5", "-1.97", "3"),
             "seg1": ("-0.5054031199708174", "-0.42226581151983866", "-0.11807612951181953",
                      "-0.011034134030615728"),
             "seg2": ("0.008526321541038084", "0.5", "0.3603292692789629", "0", "-0.037688200365904236",
                      "0", "0.0018067462606141187")},
    "exp": {"breaks": ("-14",), "n": 8},
}


def breakpoint(b: str, frac_bits: int) -> int:
    """ceil(b * 2^f): the integer t with x < b  <=>  x_int < t."""
    return math.ceil(Fraction(b) * (1 << frac_bits))


def poly_piece(coeffs, frac_bits: int, lo=None, hi=None) -> dict:
    piece = {"kind": "poly", "coeffs": [round(Fraction(c) * (1 << frac_bits)) for c in coeffs],
             "coeffs_exact": [str(Fraction(c)) for c in coeffs]}
    if lo is not None:
        piece["lo"] = lo
    if hi is not None:
        piece["hi"] = hi
    return piece


def _entry(function: str, l: int, f: int, pieces: list) -> dict:
    return {"function": function, "ring_bits": l, "frac_bits": f, "pieces": pieces}


def prototype_tables(l: int = 32, f: int = 13) -> dict:
    g, e = PROTOTYPE["gelu"], PROTOTYPE["exp"]
    a, b = (breakpoint(x, f) for x in g["breaks"])
    c = breakpoint(e["breaks"][0], f)
    return {
        "gelu": _entry("gelu", l, f, [{"kind": "zero", "hi": a}, poly_piece(g["coeffs"], f, a, b),
                                      {"kind": "identity", "lo": b}]),
        "exp": _entry("exp", l, f, [{"kind": "zero", "hi": c}, poly_piece(e["coeffs"], f, c)]),
    }


def bumblebee_tables(l: int = 64, f: int = 18) -> dict:
    g, e = BUMBLEBEE["gelu"], BUMBLEBEE["exp"]
    a, b, c = (breakpoint(x, f) for x in g["breaks"])
    z = breakpoint(e["breaks"][0], f)
    return {
        "gelu": _entry("gelu", l, f, [{"kind": "zero", "hi": a}, poly_piece(g["seg1"], f, a, b),
                                      poly_piece(g["seg2"], f, b, c), {"kind": "identity", "lo": c}]),
        "exp": _entry("exp", l, f, [{"kind": "zero", "hi": z}, {"kind": "pow2chain", "n": e["n"], "lo": z}]),
    }

"""Distribution-aware polynomial approximations of the non-linear functions, with certificates.

Modules: `fxp` (THE fixed-point evaluation semantics of a table entry), `functions` (the target
functions and their derivative bounds), `calibrate` (capture of input histograms on real text),
`fit` (weighted least-squares search over breakpoints and degrees, exact rationals, quantisation),
`certify` (rigorous error bounds with sympy/mpmath), `baselines` (prototype and BumbleBee tables),
`tables` (JSON I/O), `regenerate` (writes / checks the generated tables), `study` (accuracy study).
"""

__all__: list[str] = []

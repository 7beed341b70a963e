"""Re-export of THE fixed-point evaluation semantics, defined in :mod:`nimbus.spec.polyfxp`.

The spec owns the semantics (the protocols' ideal functionalities call it); approx fits and
certifies tables against it.
"""

from nimbus.spec.polyfxp import *  # noqa: F401,F403
from nimbus.spec.polyfxp import __all__  # noqa: F401
from nimbus.spec.polyfxp import _lift_a  # noqa: F401  (used by certification code)

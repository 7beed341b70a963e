"""Re-export of the table I/O, defined in :mod:`nimbus.spec.approx_tables` (the spec reads the
generated tables as data; approx writes them)."""

from nimbus.spec.approx_tables import *  # noqa: F401,F403
from nimbus.spec.approx_tables import __all__  # noqa: F401

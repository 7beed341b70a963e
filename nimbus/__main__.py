"""``python -m nimbus``: the same as the ``nimbus`` command (see ``nimbus.cli``)."""

import sys

from nimbus.cli import main

sys.exit(main())

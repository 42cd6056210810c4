"""``python -m aunshare``: the ``aunshare`` command (see :mod:`aunshare.cli`)."""

import sys

from .cli import main

sys.exit(main())

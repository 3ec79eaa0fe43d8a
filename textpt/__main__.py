"""``python -m textpt``: the ``textpt`` command line."""

import sys

from .cli import main

sys.exit(main())

"""``python -m vpt``: the ``vpt`` command line."""

import sys

from .cli import main

sys.exit(main())

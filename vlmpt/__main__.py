"""``python -m vlmpt``: the ``vlmpt`` command line."""

import sys

from .cli import main

sys.exit(main())

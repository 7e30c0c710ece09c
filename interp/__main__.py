"""``python -m interp``: the same as the ``interp`` console script (useful from a source checkout)."""

import sys

from interp.cli import main

sys.exit(main())

"""`python -m interp ...`: the same command line as the `interp` script (`interp.batch.cli`)."""

import sys

from .batch.cli import main

sys.exit(main())

"""`python -m interp ...`: the same command line as the `interp` script (`interp.batch.cli`)."""

import sys

from .batch.cli import main

if __name__ == "__main__":  # (not when imported, e.g. by pydoc)
    sys.exit(main())

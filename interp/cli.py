"""`python -m interp.cli` (or `python -m interp`) and older imports: the command line lives in `interp.batch.cli`."""

import sys

from .batch.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

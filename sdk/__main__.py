"""`python -m sdk keygen` and `python -m sdk ping`: see `sdk._cli`."""

from __future__ import annotations

import sys

from sdk._cli import main

if __name__ == "__main__":
    sys.exit(main())

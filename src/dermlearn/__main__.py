"""``python -m dermlearn ...``: the ``dermlearn`` command (as ``python -m dermlearn.cli``)."""
import sys

from dermlearn.cli import main

if __name__ == "__main__":
    sys.exit(main())

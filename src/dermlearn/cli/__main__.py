"""``python -m dermlearn.cli ...``: the ``dermlearn`` command."""
import sys

from dermlearn.cli import main

if __name__ == "__main__":
    sys.exit(main())

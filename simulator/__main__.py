"""``python -m simulator``: run a simulated GPU node until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys

from simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Django's command-line utility; the `clawdbot` console script is the same thing."""

from __future__ import annotations

from clawdbot_site.cli import main

if __name__ == "__main__":
    main()

"""``python -m felhom_agent`` is the same program as the ``felhom-agent`` script."""

from __future__ import annotations

import sys

from felhom_agent.cli import main

sys.exit(main())

"""`python -m realtime`: see realtime.cli."""

import sys

from .cli import main

sys.exit(main())

"""``python -m runsmon``."""

import sys

from runsmon.cli import main

sys.exit(main())

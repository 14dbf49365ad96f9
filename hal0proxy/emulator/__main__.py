"""``python -m hal0proxy.emulator``."""

import sys

from hal0proxy.emulator.cli import main

sys.exit(main())

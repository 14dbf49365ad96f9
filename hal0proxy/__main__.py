import sys

from hal0proxy.cli import main

sys.exit(main())

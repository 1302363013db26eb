"""`python -m controller.cli`: the `serving` command, for child processes and tests."""

import sys

from controller.cli import main

sys.exit(main())

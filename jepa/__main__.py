"""`python -m jepa COMMAND ...`: the `jepa` command (jepa/cli)."""

import sys

from jepa.cli import main

sys.exit(main())

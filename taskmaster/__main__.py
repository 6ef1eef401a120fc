"""`python -m taskmaster` is the `taskmaster` command."""

import sys

from taskmaster.cli import main

sys.exit(main())

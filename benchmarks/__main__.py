"""`python -m benchmarks`: run the benchmark suite."""

import sys

from benchmarks.cli import main

sys.exit(main())

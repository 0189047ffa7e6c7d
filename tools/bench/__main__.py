"""``python -m tools.bench``: the benchmark's command line (see :mod:`tools.bench.cli`)."""

import sys

from .cli import main

sys.exit(main())

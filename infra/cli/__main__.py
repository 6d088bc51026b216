"""`python -m infra.cli ARGS` runs the `billing` command (what workers spawned by tests use)."""

import sys

from infra.cli.main import main

sys.exit(main())

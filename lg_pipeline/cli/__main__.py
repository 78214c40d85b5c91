"""`python -m lg_pipeline.cli`."""

import sys

from lg_pipeline.cli import main

sys.exit(main())

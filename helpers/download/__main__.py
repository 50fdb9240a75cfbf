"""`python -m helpers.download ...`: runs the command line of `helpers.download.cli`."""

import sys

from .cli import main

sys.exit(main())

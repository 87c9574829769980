"""`python -m reuserun`: the command-line interface."""
import sys

from reuserun.cli import main

sys.exit(main())

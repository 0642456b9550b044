"""python -m covid_sweep: the covid-sweep command line."""

import sys

from covid_sweep.cli import main

sys.exit(main())

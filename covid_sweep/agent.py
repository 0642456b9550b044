"""`python -m covid_sweep.agent` and the `covid-sweep-agent` script: the trial entrypoint's public name.

sweeps/*.yaml, docker/ and W&B agents already in the field run this module; the code lives in
covid_sweep/sweep/agent.py, in the sweep layer, because the embedded controller starts it too.
"""

import sys

from covid_sweep.sweep.agent import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

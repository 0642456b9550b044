"""`python -m covid_sweep.agent` and the `covid-sweep-agent` script: the trial entrypoint's public name.

sweeps/*.yaml, docker/ and W&B agents already in the field run this module; the code lives in
covid_sweep/sweep/control/trial_entry.py, in the sweep control layer, because the embedded controller
starts it too.

The SIGTERM handler goes in before anything else is imported: `wandb agent` may stop a trial while it is
still importing torch (seconds), and without a handler that SIGTERM kills it with no `stopped` state.
"""

import sys

from covid_sweep.core.stop_request import SIGTERM_STOP


def main(argv: list[str] | None = None) -> int:
    SIGTERM_STOP.install()
    from covid_sweep.sweep.control.trial_entry import main as trial_main

    return trial_main(argv)


if __name__ == "__main__":
    sys.exit(main())

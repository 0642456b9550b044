"""Real trials on tiny generated data, for fixtures that share one trained artifact among many tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.data import make_dataset

TINY = {"backbone": "resnet18", "input_size": 32, "batch_size": 4, "amp": False, "device": "cpu"}


def tiny_trial(root: Path, values: dict, n_train: int, n_test: int, seed: int, name: str):
    """(data dir, TrialResult): a real trial of TINY + values on a data set made under root, with its own cache."""
    from covid_sweep.core.config import build_config
    from covid_sweep.training.trial import run_trial

    with pytest.MonkeyPatch.context() as mp:  # module-scoped callers run outside each test's isolated_state
        mp.setenv("COVID_SWEEP_CACHE", str(root / "cache"))
        mp.setenv("WANDB_MODE", "disabled")
        data = make_dataset(root / "data", n_train=n_train, n_test=n_test, seed=seed)
        config = build_config({**TINY, **values, "data_dir": str(data)})
        result = run_trial(config, root / "artifact", progress=False, trial_name=name)
    assert result.state == "finished"
    return data, result

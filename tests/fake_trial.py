"""A cheap stand-in for a trial process, speaking the embedded protocol (store + signals) for real.

Params: quality (metric level), epochs, crash_at (epoch at which the process dies), epoch_s, data (a data
folder: the trial records its train/ fingerprint in an artifact folder, as a real trial does), gate (a file: after
its first epoch the trial waits until that file exists, so a test can catch trials mid-run however slowly
they start).
The metric climbs towards `quality`, so a low-quality trial lags the others at every epoch.
"""

import json
import os
import sys
import time
from pathlib import Path

from covid_sweep.sweep.control import protocol
from covid_sweep.sweep.control.child import TrialProcess
from covid_sweep.sweep.store import Store


def main(argv=None) -> int:
    invocation = protocol.parse(sys.argv[1:] if argv is None else argv)
    embedded = invocation.embedded
    store = Store(embedded.store)
    trial = store.trial(embedded.trial_id)
    process = TrialProcess(store, trial, store.sweep(trial.sweep_id))
    process.start()
    params = trial.params
    quality = float(params.get("quality", 0.5))
    gate = params.get("gate")
    for epoch in range(1, int(params.get("epochs", 4)) + 1):
        deadline = time.time() + float(params.get("epoch_s", 0.3))
        if not _wait(process, lambda: time.time() >= deadline):
            return 0
        if params.get("crash_at") == epoch:
            os._exit(3)  # like a CUDA OOM or a segfault: no goodbye
        process.on_epoch({"epoch": epoch, "val_auc": quality * (1 - 0.5 ** epoch)})
        if epoch == 1 and gate is not None and not _wait(process, Path(gate).exists):
            return 0
    process.end(loop_stopped=False, artifact=_data_record(params.get("data"), invocation.home, trial.name))
    return 0


def _wait(process: TrialProcess, done) -> bool:
    """Wait until done() holds (True), or until the trial is told to stop, which it then ends (False)."""
    while not done():
        if process.should_stop():
            process.end(loop_stopped=True, artifact=None)
            return False
        time.sleep(0.02)
    return True


def _data_record(data: str | None, home: Path, name: str) -> str | None:
    """An artifact folder holding only metadata.json with the fingerprint of DATA/train as it is now."""
    if data is None:
        return None
    from covid_sweep.sweep.control.data_versions import current_fingerprint

    folder = Path(home) / "artifacts" / name
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"data_fingerprint": current_fingerprint(data)}))
    return str(folder)


if __name__ == "__main__":
    sys.exit(main())


def report_preloaded(argv: list[str]) -> int:
    """Entry that writes which heavy modules the fork server had already imported when this trial began."""
    heavy = ("torch", "torchvision", "albumentations", "covid_sweep.training.trial")
    Path(argv[0]).write_text(json.dumps({name: name in sys.modules for name in heavy}))
    return 0


def report_threads(argv: list[str]) -> int:
    """Entry that writes the thread pools' sizes this trial got: torch, OpenCV and each BLAS/OpenMP runtime."""
    import cv2
    import threadpoolctl
    import torch

    pools = {f"{i['internal_api']}:{i['filepath']}": i["num_threads"] for i in threadpoolctl.threadpool_info()}
    Path(argv[0]).write_text(json.dumps({"torch": torch.get_num_threads(), "cv2": cv2.getNumThreads(), **pools}))
    return 0

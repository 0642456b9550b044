#!/usr/bin/env python3
"""Pipeline benchmark for "Performance: trials at the speed of the GPU".

Measures in ONE run on ONE machine, and prints side by side:

  throughput   training img/s per backbone and input size of
               (a) limit:  synthetic tensors already on the device, the bare train step
                           (fused Adam; channels_last; bf16 autocast where the device runs it natively:
                           CUDA, a CPU with AVX512-BF16/AMX; else fp32),
               (b) seed:   the seed's pipeline: a Dataset that cv2-decodes every PNG every epoch,
                           albumentations Resize + toggles + Normalize + ToTensorV2 (fp32 on the
                           CPU), DataLoader(workers=0, and optionally workers=N), fp32 model,
               (c) covid:  covid_sweep's own code: data.cached_images + train.fit (its batches and
                           BatchInput: augmentation where augment_on=auto puts it, bf16 as in (a)),
                           timed per epoch from fit's records with the evaluation time separated out,
                           and again with the augmentation on the other side,
               with each one's ratio to (a), alternated --rounds times (best round kept);
  augmentation fit's batch path alone: albumentations in the loader (workers 0 and N) vs device ops;
  trial        one real trial per --trial-backbones (the embedded controller forks a trial process)
               vs its compute floor (train images x epochs / limit img/s + val images x epochs /
               eval-limit img/s), with the phases the trial recorded in the store;
  sweep        trials/hour of `covid-sweep sweep` on a generated smoke-recipe sweep with each
               --agents K (and, with --sweep-warm, the largest with --warm-workers), vs a seed-style agent
               (the same trials run one after another in-process: decode every epoch, fp32, a wandb offline
               run per trial).

Each section's table is printed as soon as it ends, with the seconds it took, and --json rewritten after each
section and after each sweep runner.

Every number is measured in this run. The decoded-image cache and the sweep state live in a
temporary COVID_SWEEP_CACHE / COVID_SWEEP_HOME; the cache is built (and timed) before the trial
and sweep measurements, so those see a warm cache and the one-time decode is reported on its own.

    python benchmarks/pipeline.py --quick                 # CPU, a few minutes
    python benchmarks/pipeline.py --gpu-default --json gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "covid-ct"
SMOKE_YAML = REPO / "sweeps" / "smoke.yaml"
CLI = "import sys; from covid_sweep.cli import main; sys.exit(main())"

# presets: explicit options override them
# planned for <= 5 minutes on a 2-core CPU box (issue 13): throughput at the smoke recipe's 64 px and at the CPU
# accuracy recipe's 128 px (sweeps/cpu-accuracy.yaml), where a trial spends its time; trial and sweep at 64 px
QUICK = dict(backbones="resnet18", sizes="64,128", batch=32, epochs=2, workers=0, warmup_steps=2, limit_steps=8, rounds=2,
             trial_backbones="resnet18", trial_size=64, trial_batch=32, trial_epochs=2,
             sweep_trials=3, agents="2", sweep_size=64, sweep_epochs=2, sweep_batch=32, sweep_backbones=None,
             sweep_warm=True)
# planned for <= 4 minutes on one H100/H200 (issue 13): the two backbones of the issue at 224 px, batch 32;
# a realistic 30-epoch trial of each for wall/floor; a 16-trial sweep with 8 agents vs the seed-style loop.
# Measured on an H200 (2026-11-27): 236 s with an 8-trial sweep of 4 agents, 257 s with 16 trials of 8, each
# sweep also run with --warm-workers (~30 s, most of it the command's start-up): that run is now --sweep-warm only
GPU_DEFAULT = dict(backbones="vgg16,resnet50", sizes="224", batch=32, epochs=3, workers=8, warmup_steps=10,
                   limit_steps=40, rounds=1, trial_backbones="vgg16,resnet50", trial_size=224, trial_batch=32, trial_epochs=30,
                   sweep_trials=16, agents="8", sweep_size=64, sweep_epochs=2, sweep_batch=32, sweep_backbones=None,
                   sweep_warm=False)
# every toggle with a device op (CLAHE, CPU-only in both paths, aside): the heaviest augmentation a sweep draws
DEVICE_TOGGLES = ("hflip", "rotate", "random_resized_crop", "blur", "brightness_contrast", "gamma", "sepia", "cutout")

# the columns every result row carries (tests/test_benchmarks.py checks them)
THROUGHPUT_COLUMNS = ("backbone", "size", "batch", "limit_img_s", "limit_eval_img_s", "seed_img_s", "seed_ratio",
                      "covid_img_s", "covid_ratio", "covid_vs_seed", "covid_steady_img_s", "covid_eval_img_s",
                      "cache_build_s", "covid_augment_on", "covid_alt_img_s")
AUGMENT_COLUMNS = ("toggles", "size", "batch", "cpu_w0_img_s", "cpu_workers", "cpu_wn_img_s", "device_img_s", "chosen")
TRIAL_COLUMNS = ("backbone", "size", "batch", "epochs", "fork_server_s", "trial_wall_s", "trial_process_s", "fit_epochs_s",
                 "floor_s", "wall_over_floor", "process_over_floor", "fit_over_floor", "phases")
SWEEP_COLUMNS = ("runner", "agents", "trials", "finished", "wall_s", "trials_per_hour", "vs_seed")
# what the embedded trial records (core/phases.py), in the order they run
PHASES = ("process_start", "imports", "wandb_init", "data_fingerprint", "cache_load", "grouping", "model_build",
          "warmup", "fit", "artifact_write", "wandb_log", "wandb_finish")


# --------------------------------------------------------------------------------------------
# environment


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_info(device) -> dict:
    import torch

    info = {"type": device.type, "cpu": cpu_name(), "cores": cpu_cores(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = f"{info['cpu']} ({info['cores']} cores)"
    return info


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_device_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """torch.backends.cudnn.benchmark set for a block, then restored: the seed-style runs and fit find torch's
    default, off. Off is fit's choice too: on an H200 the search bought nothing at 224 px (vgg16 2568 vs 2567
    img/s, resnet50 1407 vs 1395) and cost seconds in every new trial process (vgg16's warmup 6.2 s, googlenet's 11 s)."""
    import torch

    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _positive(x: float | None) -> float | None:
    return x if x is not None and x > 0 and math.isfinite(x) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# --------------------------------------------------------------------------------------------
# (a) the limit: the bare train step on tensors already on the device


def measure_limit(backbone: str, size: int, batch: int, device, warmup: int, steps: int) -> dict:
    import torch
    from torch import nn

    from covid_sweep.model.networks import build_model
    from covid_sweep.model.runtime import bf16_autocast

    torch.manual_seed(0)
    model = build_model(backbone).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as train._optimizer
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)

    def train_step():
        with bf16_autocast(device):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(step) -> float:
        """Seconds for `steps` calls after `warmup` untimed ones, device work included."""
        for _ in range(warmup):
            step()
        sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        return time.perf_counter() - started

    model.train()
    with cudnn_benchmark(False):  # as fit: torch's default
        train_s = timed(train_step)
    tuned_s = None
    if device.type == "cuda":  # what cudnn's algorithm search would buy on this GPU, its own cost excluded
        with cudnn_benchmark(True):
            tuned_s = timed(train_step)

    model.eval()
    with torch.no_grad():
        def eval_step():  # fp32, as fit's validation
            model(x)

        eval_s = timed(eval_step)
    # drop the references (not `del`: the step closures above still name them) before freeing device memory
    model = optimizer = x = y = None
    free_device_memory(device)
    return {"limit_img_s": batch * steps / train_s, "limit_eval_img_s": batch * steps / eval_s,
            "limit_tuned_img_s": batch * steps / tuned_s if tuned_s else None,
            "limit_steps": steps, "limit_warmup_steps": warmup}


# --------------------------------------------------------------------------------------------
# (b) the seed's way: decode every image every epoch, float work per sample on the CPU, fp32


def seed_transform(config, train: bool):
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from covid_sweep.training import augment

    size = config.input_size
    ops = augment._toggle_ops(config) if train else []  # the same toggles the trial uses
    return A.Compose([A.Resize(size, size), *ops, A.Normalize(), ToTensorV2()])


class SeedStyleImages:
    """cv2-decodes the PNG on every access, then the whole albumentations pipeline, fp32 out (map-style dataset)."""

    def __init__(self, paths: list[Path], labels: list[int], transform):
        self.paths, self.labels, self.transform = [str(p) for p in paths], list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import cv2

        image = cv2.cvtColor(cv2.imread(self.paths[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.transform(image=image)["image"], int(self.labels[i])


def seed_loader(paths, labels, transform, batch: int, workers: int, shuffle: bool):
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(SeedStyleImages(paths, labels, transform), batch_size=batch, shuffle=shuffle,
                      num_workers=workers, generator=torch.Generator().manual_seed(0))


def seed_train_epoch(model, loader, optimizer, loss_fn, device) -> tuple[float, int]:
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)  # the seed's running loss: one sync per step
        count += len(y)
    return total / max(1, count), count


def seed_evaluate(model, loader, device) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    model.eval()
    probs, ys = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(torch.softmax(model(x.to(device)), dim=1)[:, 1].cpu())
            ys.append(y)
    p, y = torch.cat(probs).numpy(), torch.cat(ys).numpy()
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {"val_auc": auc, "val_acc": float(((p >= 0.5) == y).mean())}


def measure_seed_style(backbone: str, config, paths, labels, device, epochs: int, workers: int) -> dict:
    import torch
    from torch import nn

    from covid_sweep.model.networks import build_model

    torch.manual_seed(0)
    model = build_model(backbone).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = seed_loader(paths, labels, seed_transform(config, train=True), config.batch_size, workers, shuffle=True)
    times, images = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        _, n = seed_train_epoch(model, loader, optimizer, nn.CrossEntropyLoss(), device)
        sync(device)
        times.append(time.perf_counter() - started)
        images.append(n)
    del model, optimizer, loader
    free_device_memory(device)
    return {"img_s": sum(images) / sum(times), "epoch_s": times,
            "steady_img_s": sum(images[1:]) / sum(times[1:]) if epochs > 1 else None}


# --------------------------------------------------------------------------------------------
# (c) covid_sweep's own trial pipeline: cached_images + fit


@contextlib.contextmanager
def timed_evaluation() -> Iterator[list[float]]:
    """Time each call of fit's per-epoch evaluation, so the training part of epoch_time can be separated."""
    import covid_sweep.training.train as train_module

    original = train_module._evaluate
    durations: list[float] = []

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - started)

    train_module._evaluate = timed
    try:
        yield durations
    finally:
        train_module._evaluate = original


def measure_covid(backbone: str, config, images, labels, train_idx, val_idx, augment_on: str = "auto") -> dict:
    import numpy as np

    from covid_sweep.model.networks import build_model
    from covid_sweep.training.train import fit

    # exactly what covid_sweep.training.trial.run_trial hands to fit
    train_images, train_labels = images[train_idx], labels[train_idx]
    val_images, val_labels = images[val_idx], labels[val_idx]
    model = build_model(backbone, config.pretrained)
    config = config.model_copy(update={"augment_on": augment_on})
    n = len(train_idx)
    batch = min(config.batch_size, n)
    per_epoch = (n // batch) * batch if n > config.batch_size else n  # fit's loader drops the ragged tail
    with timed_evaluation() as eval_s:
        result = fit(config, model, train_images, train_labels, val_images, val_labels, progress=False)
    epoch_s = [r["epoch_time"] for r in result.history]
    train_s = [e - v for e, v in zip(epoch_s, eval_s)]
    epochs = len(result.history)
    del model, result
    return {"img_s": per_epoch * epochs / sum(train_s), "train_epoch_s": train_s, "eval_epoch_s": list(eval_s),
            "steady_img_s": per_epoch * (epochs - 1) / sum(train_s[1:]) if epochs > 1 else None,
            "eval_img_s": len(val_idx) * epochs / sum(eval_s), "images_per_epoch": per_epoch,
            "val_images": int(np.asarray(val_idx).size)}


# --------------------------------------------------------------------------------------------
# augmentation alone: albumentations per image in the loader (workers 0 and N) vs batched on the device


def loader_workers(cores: int, agents: int) -> int:
    """DataLoader workers per trial when `agents` trials share `cores`: one core each for the trial itself."""
    return max(1, cores // max(1, agents) - 1)


def augmentation_img_s(config, images, labels, device, augment_on: str, workers: int) -> float:
    """img/s of fit's own batch path (loader + BatchInput: augmented, normalised, on the device), no model;
    the images on the GPU when they fit there, as fit puts them. The first batch (worker start, first touch of
    the cache) is not timed."""
    from covid_sweep.model.runtime import RESIDENT_BYTES
    from covid_sweep.training import train

    config = config.model_copy(update={"augment_on": augment_on, "num_workers": workers})
    loader = train.batches(config, images, labels, device, RESIDENT_BYTES)
    prepare = train.BatchInput(config, device)
    count, started = 0, None
    for batch, y in loader:
        prepare(batch)
        if started is None:
            sync(device)
            started = time.perf_counter()
        else:
            count += len(y)
    sync(device)
    del loader  # persistent workers end here
    return count / (time.perf_counter() - started) if count else float("nan")


def measure_augmentation(base, images, labels, device, toggles: tuple[str, ...], workers: int, rounds: int = 2) -> dict:
    """The three ways side by side, alternated `rounds` times (each sees the same contention); best round kept."""
    config = base.model_copy(update={t: True for t in toggles})
    ways = {"cpu_w0_img_s": ("cpu", 0), "cpu_wn_img_s": ("cpu", workers), "device_img_s": ("device", 0)}
    best = {key: 0.0 for key in ways}
    for _ in range(rounds):
        for key, (where, n) in ways.items():
            best[key] = max(best[key], augmentation_img_s(config, images, labels, device, where, n))
    from covid_sweep.training.train import augment_on

    return {"toggles": ",".join(toggles), "size": config.input_size, "batch": config.batch_size,
            "cpu_workers": workers, **best, "chosen": augment_on(config.model_copy(update={"augment_on": "auto"}), device),
            "rounds": rounds}


# --------------------------------------------------------------------------------------------
# trial and sweep: the real command lines


def write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def trial_sweep_config(backbone: str, size: int, batch: int, epochs: int, toggles: list[str], device: str) -> dict:
    params: dict[str, Any] = {"backbone": {"value": backbone}, "input_size": {"value": size},
                              "batch_size": {"value": batch}, "epochs": {"value": epochs},
                              "patience": {"value": epochs}, "optimizer": {"value": "adam"}}
    params.update({t: {"value": True} for t in toggles})
    if device != "auto":
        params["device"] = {"value": device}
    return {"name": "bench-trial", "method": "grid", "metric": {"name": "val_auc", "goal": "maximize"},
            "command": ["${env}", "${interpreter}", "-m", "covid_sweep.agent", "${args}"], "parameters": params}


def smoke_sweep_config(trials: int, size: int, epochs: int, batch: int, backbones: list[str] | None, device: str) -> dict:
    """The smoke recipe (sweeps/smoke.yaml) as a seeded *random* search: the same trials for every --agents K."""
    import yaml

    if SMOKE_YAML.is_file():
        config = yaml.safe_load(SMOKE_YAML.read_text())
    else:
        config = {"metric": {"name": "val_auc", "goal": "maximize"},
                  "parameters": {"backbone": {"values": ["resnet18", "mobilenet_v3_small", "googlenet"]},
                                 "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-3},
                                 "hflip": {"values": [False, True]}, "rotate": {"values": [False, True]}}}
    params = config["parameters"]
    params.update({"input_size": {"value": size}, "epochs": {"value": epochs}, "patience": {"value": epochs},
                   "batch_size": {"value": batch}})
    if backbones:
        params["backbone"] = {"values": backbones}
    if device != "auto":
        params["device"] = {"value": device}
    config.update({"name": "bench-sweep", "method": "random", "run_cap": trials})
    config.pop("early_terminate", None)
    config.setdefault("command", ["${env}", "${interpreter}", "-m", "covid_sweep.agent", "${args}"])
    return config


def run_sweep_command(yaml_path: Path, data: Path, home: Path, cache: Path, count: int, agents: int,
                      wandb_mode: str, timeout: float, warm: bool = False) -> tuple[float, list, str]:
    """`covid-sweep sweep YAML --count N --agents K [--warm-workers]` in a fresh HOME; -> (wall s, trials from its
    store, output)."""
    from covid_sweep.sweep.store import Store

    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update({"COVID_SWEEP_HOME": str(home), "COVID_SWEEP_CACHE": str(cache), "WANDB_MODE": wandb_mode,
                "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"})
    argv = [sys.executable, "-c", CLI, "sweep", str(yaml_path), "--data", str(data), "--count", str(count),
            "--agents", str(agents), "--seed", "0", "--home", str(home)] + (["--warm-workers"] if warm else [])
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=home.parent, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"covid-sweep sweep exited {proc.returncode}:\n{output[-3000:]}")
    store = Store(home / "sweeps.db")
    try:
        sweep = store.latest_sweep()
        trials = [(t, store.history(t.id)) for t in store.trials(sweep.id)]
    finally:
        store.close()
    return wall, trials, output


def _failed(trials: list, home: Path) -> str:
    lines = []
    for trial, _ in trials:
        if trial.state != "finished":
            lines.append(f"{trial.name}: {trial.state}: {trial.error or ''}"[-1500:])
    return "\n".join(lines)


def time_fork_server_start(launcher) -> float:
    """Seconds until the launcher's fork server runs with its preloads imported (a no-op child forked from it):
    what the first trial of a controller waits for, once; later trials of a sweep find it running."""
    started = time.perf_counter()
    child = launcher.context.Process(target=os.getpid)
    child.start()
    child.join()
    return time.perf_counter() - started


def measure_trial(args, backbone: str, data: Path, work: Path, cache: Path, limit: dict, split_sizes: dict) -> dict:
    """One real trial: the embedded controller (in this process) forks a trial process running covid_sweep.agent.main
    from its fork server, started beforehand and timed apart (once per controller, not per trial); its phases
    (where its time went) come from the store, as the trial recorded them."""
    from covid_sweep.sweep.control.controller import Controller, new_sweep
    from covid_sweep.sweep.control.spec import load_spec
    from covid_sweep.sweep.store import Store

    size, batch_size, epochs = args.trial_size, args.trial_batch, args.trial_epochs
    home = work / f"home-trial-{backbone}"
    yaml_path = write_yaml(work / f"bench-trial-{backbone}.yaml",
                           trial_sweep_config(backbone, size, batch_size, epochs, args.toggles, args.device))
    store = Store(home / "sweeps.db")
    try:
        sweep = new_sweep(store, load_spec(yaml_path), str(yaml_path), str(data), seed=0)
        controller = Controller(store, sweep, home, agents=1, count=1, poll_s=0.02, log=lambda *_: None)
        with patched_env({"COVID_SWEEP_CACHE": str(cache), "WANDB_MODE": args.wandb_mode, "WANDB_SILENT": "true"}):
            fork_server = time_fork_server_start(controller.launcher)
            started = time.perf_counter()
            controller.run()
            wall = time.perf_counter() - started
        trials = [(t, store.history(t.id)) for t in store.trials(sweep.id)]
    finally:
        store.close()
    if len(trials) != 1 or trials[0][0].state != "finished":
        log = home / "logs" / sweep.id
        tail = "".join(f.read_text(errors="replace")[-2000:] for f in log.glob("*.log")) if log.is_dir() else ""
        raise RuntimeError(f"benchmark trial did not finish:\n{_failed(trials, home)}\n{tail}")
    trial, history = trials[0]
    n_train, n_val = split_sizes["train"], split_sizes["val"]
    batch = min(batch_size, n_train)
    per_epoch = (n_train // batch) * batch if n_train > batch_size else n_train
    epochs_run = len(history)
    floor = None
    if limit.get("limit_img_s") and limit.get("limit_eval_img_s"):
        floor = per_epoch * epochs_run / limit["limit_img_s"] + n_val * epochs_run / limit["limit_eval_img_s"]
    process_s = trial.ended - trial.started if trial.ended and trial.started else None
    fit_s = sum(h.get("epoch_time", 0.0) for h in history)
    return {"backbone": backbone, "size": size, "batch": batch_size, "epochs": epochs_run, "fork_server_s": fork_server,
            "trial_wall_s": wall, "trial_process_s": process_s, "fit_epochs_s": fit_s, "floor_s": floor,
            "wall_over_floor": _ratio(wall, floor), "process_over_floor": _ratio(process_s, floor),
            "fit_over_floor": _ratio(fit_s, floor), "train_images_per_epoch": per_epoch, "val_images": n_val,
            "phases": dict(trial.phases),
            "note": "fork_server_s: starting the controller's fork server and its preload imports (once per "
                    "controller; ~0 when an earlier trial of this run started it); "
                    "trial_wall_s: the embedded controller's claim + fork of the trial process "
                    "until its exit is seen (poll 0.02 s); trial_process_s: the store's started->ended of the "
                    "trial process (after its imports, before wandb's finish); fit_epochs_s: sum of fit's "
                    "epoch_time (train + eval); floor_s: train images x epochs / limit img/s + val images x "
                    "epochs / eval-limit img/s; phases: the trial's own record (seconds)"}


def outside_fit_s(phases: dict) -> float | None:
    """A trial's recorded time outside fit's steady epochs: everything but the `fit` phase."""
    return sum(v for k, v in phases.items() if k != "fit") if phases else None


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def seed_style_agent(trial_params: list[dict], data: Path, device, work: Path, use_wandb: bool) -> dict:
    """The seed's way: trials one after another in one process, decode every epoch, fp32, wandb offline per trial."""
    import numpy as np
    import torch
    from torch import nn

    from covid_sweep.core.config import build_config
    from covid_sweep.data.layout import load_split
    from covid_sweep.data.splits import stratified_split
    from covid_sweep.model.networks import build_model

    wandb = None
    if use_wandb:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import wandb
    wandb_dir = work / "seed-wandb"
    wandb_dir.mkdir(exist_ok=True)
    ckpt_dir = work / "seed-checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    per_trial = []
    started_all = time.perf_counter()
    for i, params in enumerate(trial_params):
        started = time.perf_counter()
        config = build_config({**params, "data_dir": str(data)})
        run = None
        if wandb is not None:
            run = wandb.init(mode="offline", dir=str(wandb_dir), project="seed-style", config=params,
                             name=f"seed-{i + 1}", settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True))
        split = load_split(data, "train")
        labels = np.asarray(split.labels)
        train_idx, val_idx = stratified_split(labels, config.val_fraction, config.seed)
        paths = split.paths
        torch.manual_seed(config.seed)
        model = build_model(config.backbone, config.pretrained).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        loss_fn = nn.CrossEntropyLoss()
        train_loader = seed_loader([paths[j] for j in train_idx], labels[train_idx].tolist(),
                                   seed_transform(config, True), config.batch_size, config.num_workers, True)
        val_loader = seed_loader([paths[j] for j in val_idx], labels[val_idx].tolist(),
                                 seed_transform(config, False), config.batch_size, config.num_workers, False)
        best = -1.0
        for epoch in range(1, config.epochs + 1):
            train_loss, _ = seed_train_epoch(model, train_loader, optimizer, loss_fn, device)
            metrics = seed_evaluate(model, val_loader, device)
            if run is not None:
                run.log({"epoch": epoch, "train_loss": train_loss, **metrics}, step=epoch)
            if metrics["val_auc"] > best or not math.isfinite(best):
                best = metrics["val_auc"]
                torch.save(model.state_dict(), ckpt_dir / f"seed-{i + 1}.pt")
        if run is not None:
            run.summary["val_auc"] = best
            run.finish()
            wandb.teardown()
        del model, optimizer
        free_device_memory(device)
        per_trial.append(time.perf_counter() - started)
    return {"wall_s": time.perf_counter() - started_all, "trial_s": per_trial, "wandb": use_wandb}


def measure_sweeps(args, data: Path, work: Path, cache: Path, device, on_runner=lambda rows: None) -> list[dict]:
    """Each runner's row is handed to on_runner(rows so far) as soon as it ends."""
    config = smoke_sweep_config(args.sweep_trials, args.sweep_size, args.sweep_epochs, args.sweep_batch,
                                args.sweep_backbones, args.device)
    yaml_path = write_yaml(work / "bench-sweep.yaml", config)
    rows, first_params = [], None
    # every --agents value with a fresh process per trial, then (--sweep-warm) the largest with warm trial workers
    runners = [(k, False) for k in args.agents] + ([(max(args.agents), True)] if args.sweep_warm else [])
    for agents, warm in runners:
        home = work / f"home-sweep-k{agents}{'-warm' if warm else ''}"
        home.mkdir()
        print(f"[sweep] covid-sweep sweep --agents {agents}{' --warm-workers' if warm else ''} ...", file=sys.stderr,
              flush=True)
        wall, trials, output = run_sweep_command(yaml_path, data, home, cache, args.sweep_trials, agents,
                                                 args.wandb_mode, args.timeout, warm)
        finished = sum(1 for t, _ in trials if t.state == "finished")
        if finished < len(trials):
            print(f"warning: --agents {agents}: {len(trials) - finished} trials did not finish:\n{_failed(trials, home)}",
                  file=sys.stderr)
        if first_params is None:
            first_params = [t.params for t, _ in trials]
        process_s = [t.ended - t.started for t, _ in trials if t.ended and t.started]
        # the trials' own span (store clock): the command's start, its fork server's imports and the first trial's
        # process start left out, as the seed-style loop (in this already-imported process) pays none of them
        span = (max(t.ended for t, _ in trials if t.ended) - min(t.started for t, _ in trials if t.started)
                if process_s else None)
        runner = "covid-sweep sweep --warm-workers" if warm else "covid-sweep sweep"
        rows.append({"runner": runner, "agents": agents, "trials": len(trials), "finished": finished,
                     "wall_s": wall, "trials_per_hour": finished / wall * 3600, "span_s": span,
                     "span_trials_per_hour": finished / span * 3600 if span else None,
                     "mean_trial_process_s": sum(process_s) / len(process_s) if process_s else None,
                     "median_outside_fit_s": _median([outside_fit_s(t.phases) for t, _ in trials]),
                     "phases": [t.phases for t, _ in trials], "params": [t.params for t, _ in trials]})
        on_runner(rows)
    print("[sweep] the seed-style loop, the same trials ...", file=sys.stderr, flush=True)
    seed = seed_style_agent(first_params or [], data, device, work, args.seed_wandb)
    n = len(first_params or [])
    seed_row = {"runner": "seed-style loop", "agents": 1, "trials": n, "finished": n, "wall_s": seed["wall_s"],
                "trials_per_hour": n / seed["wall_s"] * 3600 if seed["wall_s"] else None, "span_s": seed["wall_s"],
                "span_trials_per_hour": n / seed["wall_s"] * 3600 if seed["wall_s"] else None,
                "mean_trial_process_s": sum(seed["trial_s"]) / n if n else None, "wandb_offline_per_trial": seed["wandb"],
                "params": first_params}
    rows.append(seed_row)
    for row in rows:
        row["vs_seed"] = _ratio(row["trials_per_hour"], seed_row["trials_per_hour"])
        row["span_vs_seed"] = _ratio(row["span_trials_per_hour"], seed_row["span_trials_per_hour"])
    return rows


# --------------------------------------------------------------------------------------------
# printing


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_header(result: dict) -> str:
    dev, s = result["device"], result["settings"]
    return "\n".join([
        f"covid_sweep pipeline benchmark  {result['started']}",
        f"device: {dev['type']}: {dev['name']}  | CPU {dev['cpu']}, {dev['cores']} cores, torch {dev['torch']} "
        f"({dev['torch_threads']} threads), python {dev['python']}",
        f"settings: toggles {','.join(s['toggles']) or 'none'}; throughput batch {s['batch']}, {s['epochs']} epochs; "
        f"trial {s['trial_size']}px batch {s['trial_batch']}, {s['trial_epochs']} epochs", ""])


def render_data(result: dict) -> str:
    d = result["data"]
    return "\n".join([
        f"data:   {d['path']}: {d['n_images']} train.csv images -> {d['n_train']} train / {d['n_val']} val",
        "cache:  decode+resize once per size (cold build s): "
        + ", ".join(f"{k}px {_fmt(v['build_s'], 2)}s (warm hit {_fmt(v['hit_s'], 3)}s)" for k, v in d["cache"].items()),
        ""])


def render_throughput(result: dict) -> str:
    w = result["settings"]["workers"]
    tuned = any(r.get("limit_tuned_img_s") for r in result["throughput"])
    headers = ["backbone", "size", "batch", "(a) limit"] + (["a tuned"] if tuned else []) + ["eval-limit", "(b) seed", "b/a"]
    if w:
        headers += [f"seed w{w}", f"w{w}/a"]
    headers += ["(c) covid", "aug on", "c/a", "c/b", "c steady", "c eval", "c other aug", "cache s"]
    rows = []
    for r in result["throughput"]:
        if r.get("error"):
            rows.append([r["backbone"], str(r["size"]), str(r["batch"]), "error: " + r["error"][:60]]
                        + [""] * (len(headers) - 4))
            continue
        cells = [r["backbone"], str(r["size"]), str(r["batch"]), _fmt(r["limit_img_s"])]
        cells += [_fmt(r.get("limit_tuned_img_s"))] if tuned else []
        cells += [_fmt(r["limit_eval_img_s"]), _fmt(r["seed_img_s"]), _fmt(r["seed_ratio"], 2)]
        if w:
            cells += [_fmt(r.get("seed_workers_img_s")), _fmt(r.get("seed_workers_ratio"), 2)]
        cells += [_fmt(r["covid_img_s"]), r["covid_augment_on"], _fmt(r["covid_ratio"], 2),
                  _fmt(r["covid_vs_seed"], 2) + "x", _fmt(r["covid_steady_img_s"]), _fmt(r["covid_eval_img_s"]),
                  _fmt(r["covid_alt_img_s"]), _fmt(r["cache_build_s"], 2)]
        rows.append(cells)
    return "\n".join([
        "Training throughput, img/s (ratios: b/a, c/a = share of the limit; c/b = covid_sweep vs seed; "
        f"best of {result['settings']['rounds']} alternated rounds of (a), (b), (c)"
        + (f"; before the rows, one untimed epoch of (b) and (c) on resnet18 warmed the process: "
           f"{_fmt(result['process_warmup_s'], 1)} s)" if "process_warmup_s" in result else ")"),
        format_table(headers, rows),
        "  (a) synthetic tensors on the device, warm-up excluded; eval-limit = inference img/s, same batch, fp32"
        + ("; 'a tuned' = (a) with cudnn.benchmark (its search excluded; fit leaves it off)" if tuned else ""),
        "  (b) decode every PNG every epoch + albumentations incl. Normalize/ToTensorV2, fp32, workers=0"
        + (f" (w{w}: workers={w})" if w else ""),
        "  (c) covid_sweep.training.train.fit on data.cached_images, augment_on=auto ('aug on' = where that put it);"
        " train time = epoch_time - timed evaluation; 'c steady' excludes epoch 1, 'c eval' = fit's val img/s;"
        " 'c other aug' = (c) with the augmentation on the other side (cpu: albumentations, workers 0)", ""])


def render_augmentation(result: dict) -> str:
    rows = [[r["toggles"], str(r["size"]), str(r["batch"]), _fmt(r["cpu_w0_img_s"]), str(r["cpu_workers"]),
             _fmt(r["cpu_wn_img_s"]), _fmt(r["device_img_s"]), r["chosen"]] for r in result["augmentation"]]
    return "\n".join([
        "Augmentation alone, img/s (fit's batch path to a normalised batch on the device, no model; best of "
        f"{result['augmentation'][0]['rounds']} alternated rounds)",
        format_table(["toggles", "size", "batch", "albu w0", "N", "albu wN", "device", "auto picks"], rows),
        "  albu: training/augment.py per image in the DataLoader (N workers = cores // max agents - 1);"
        " device: training/device_augment.py on the batch; auto picks: train.AUTO_AUGMENT_ON for this device type",
        ""])


def render_trials(result: dict) -> str:
    out = ["Trial wall time (one real trial each: the embedded controller forks a covid_sweep.agent trial process)"]
    trials = result["trial"]
    errors = [t for t in trials if t.get("error")]
    good = [t for t in trials if not t.get("error")]
    if good:
        out.append(format_table(
            ["backbone", "size", "batch", "epochs", "fork server s", "trial wall s", "in-process s", "fit epochs s",
             "floor s", "wall/floor", "in-process/floor", "fit/floor"],
            [[t["backbone"], str(t["size"]), str(t["batch"]), str(t["epochs"]), _fmt(t["fork_server_s"], 2),
              _fmt(t["trial_wall_s"]),
              _fmt(t["trial_process_s"]), _fmt(t["fit_epochs_s"]), _fmt(t["floor_s"], 2),
              _fmt(t["wall_over_floor"], 2) + "x", _fmt(t["process_over_floor"], 2) + "x",
              _fmt(t["fit_over_floor"], 2) + "x"] for t in good]))
        out += ["  fork server = its start and preload imports, once per controller (before the trial, timed apart;"
                " ~0 when an earlier trial of this run started it)",
                "  trial wall = claim + fork to exit (wandb, data, model, fit, artifact); in-process = the store's"
                " started->ended; fit epochs = sum of fit's epoch_time (train + eval)",
                "  floor = train images x epochs / limit + val images x epochs / eval-limit (the compute alone)",
                "", "Where each trial's time went, s (the phases it recorded in the store; core/phases.py)",
                format_table(["backbone", *PHASES, "sum", "wall"],
                             [[t["backbone"], *(_fmt(t["phases"].get(p), 2) for p in PHASES),
                               _fmt(sum(t["phases"].values()), 1), _fmt(t["trial_wall_s"])] for t in good]),
                "  warmup = fit's set-up and first training step; fit = the rest of fit (all epochs and evaluations)"]
    out += [f"  {t.get('backbone', '?')}: error: {t['error']}" for t in errors]
    return "\n".join(out + [""])


def render_sweep(result: dict) -> str:
    sw, ss = result["sweep"], result["settings"]
    if isinstance(sw, dict) and sw.get("error"):
        return f"Sweep throughput: error: {sw['error']}\n"
    return "\n".join([
        f"Sweep throughput ({ss['sweep_trials']} trials of the smoke recipe as a seeded random search: "
        f"{ss['sweep_size']}px, {ss['sweep_epochs']} epochs, batch {ss['sweep_batch']})",
        format_table(["runner", "agents", "trials", "finished", "wall s", "mean trial s", "median outside fit s",
                      "trials/h", "x seed", "span s", "span trials/h", "span x seed"],
                     [[r["runner"], str(r["agents"]), str(r["trials"]), str(r["finished"]), _fmt(r["wall_s"]),
                       _fmt(r.get("mean_trial_process_s")), _fmt(r.get("median_outside_fit_s"), 2),
                       _fmt(r["trials_per_hour"]), _fmt(r["vs_seed"], 2) + "x", _fmt(r.get("span_s")),
                       _fmt(r.get("span_trials_per_hour")), _fmt(r.get("span_vs_seed"), 2) + "x"] for r in sw]),
        "  seed-style loop: the same trials in one process, decode every epoch, fp32, "
        + ("a wandb offline run per trial" if sw[-1].get("wandb_offline_per_trial") else "no wandb")
        + "; median outside fit = a trial's recorded phases but `fit`",
        "  wall = the whole command; span = first trial's start to last trial's end (store clock): without the"
        " command's start-up and its fork server's imports, once per sweep (the seed-style loop: its wall)", ""])


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true",
                        help="CPU preset (the default): resnet18 at 64 px, 2 epochs, 2 rounds, "
                             "a 2-epoch trial, 3-trial sweep, 2 agents")
    preset.add_argument("--gpu-default", action="store_true",
                        help="GPU preset (<= 4 min on one GPU): vgg16,resnet50 at 224, batch 32, 3 epochs, seed workers=8, "
                             "a 30-epoch trial of each, 8-trial sweep with --agents 4")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"competition-layout data (default {DEFAULT_DATA})")
    p.add_argument("--backbones", help="comma list")
    p.add_argument("--sizes", help="comma list of input sizes")
    p.add_argument("--batch", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, help="also run (b) with a DataLoader of N workers (0 = only workers=0)")
    p.add_argument("--toggles", default="hflip,rotate", help="augmentation toggles for (b), (c) and the trial")
    p.add_argument("--trial-backbones", help="comma list: one real trial of each (wall time vs floor, phases)")
    p.add_argument("--trial-size", type=int)
    p.add_argument("--trial-batch", type=int)
    p.add_argument("--trial-epochs", type=int)
    p.add_argument("--warmup-steps", type=int, help="(a): steps before the clock starts")
    p.add_argument("--limit-steps", type=int, help="(a): timed steps")
    p.add_argument("--rounds", type=int, help="(a), (b), (c) alternated this many times, the best round of each kept "
                                              "(a shared CPU's contention comes in bursts)")
    p.add_argument("--sweep-trials", type=int)
    p.add_argument("--agents", help="comma list of --agents values for the sweep, e.g. 1,2")
    p.add_argument("--sweep-size", type=int)
    p.add_argument("--sweep-epochs", type=int)
    p.add_argument("--sweep-batch", type=int)
    p.add_argument("--sweep-backbones", help="comma list (default the smoke recipe's backbones)")
    p.add_argument("--sweep-warm", action=argparse.BooleanOptionalAction, default=None,
                   help="also sweep with --warm-workers at the largest --agents (default: on with --quick, off with "
                        "--gpu-default, to keep it within 4 minutes)")
    p.add_argument("--no-seed-wandb", dest="seed_wandb", action="store_false",
                   help="seed-style agent without a wandb offline run per trial")
    p.add_argument("--wandb-mode", default="offline", choices=["offline", "disabled"],
                   help="WANDB_MODE of the covid-sweep trial processes (default offline, as a real sweep)")
    p.add_argument("--skip-augmentation", action="store_true")
    p.add_argument("--skip-trial", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--timeout", type=float, default=3600, help="per covid-sweep command, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (cache, homes, logs)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    defaults = GPU_DEFAULT if args.gpu_default else QUICK
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    args.trial_backbones = [b.strip() for b in args.trial_backbones.split(",") if b.strip()]
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.agents = [int(a) for a in str(args.agents).split(",") if a.strip()]
    args.toggles = [t.strip() for t in args.toggles.split(",") if t.strip()]
    args.sweep_backbones = [b.strip() for b in args.sweep_backbones.split(",")] if args.sweep_backbones else None
    return args


class Report:
    """The result so far: each section is printed as soon as it ends and the JSON rewritten, so a run cut
    short (a lent GPU's minutes running out) still leaves everything it measured."""

    def __init__(self, result: dict, json_path: Path | None, started: float):
        self.result, self.json_path, self.started = result, json_path, started
        self.last = started

    def section(self, text: str, name: str | None = None) -> None:
        """Print a section's text (with the seconds since the previous section, when named) and save."""
        now = time.perf_counter()
        if name:
            self.result.setdefault("section_s", {})[name] = now - self.last
            text = f"{text.rstrip()}\n  ({name}: {now - self.last:.0f} s)\n"
        self.last = now
        print(text, flush=True)
        self.save()

    def save(self) -> None:
        self.result["total_s"] = time.perf_counter() - self.started
        if self.json_path:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.json_path.with_name(f".{self.json_path.name}.tmp")
            tmp.write_text(json.dumps(self.result, indent=2, default=str))
            os.replace(tmp, self.json_path)  # a reader never sees half a file


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    t_start = time.perf_counter()

    import torch

    from covid_sweep.core.errors import UserError
    from covid_sweep.model.runtime import pick_device

    try:
        device = pick_device(args.device)
    except UserError as err:
        raise SystemExit(f"--device: {err}") from None
    data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="covid-bench-"))
    result: dict[str, Any] = {"started": _dt.datetime.now().isoformat(timespec="seconds"),
                              "device": device_info(device), "settings": {
                                  k: v for k, v in vars(args).items() if k not in ("json", "data")} | {"data": str(data)}}
    result["settings"].update(batch=args.batch, epochs=args.epochs)
    report = Report(result, args.json, t_start)
    report.section(render_header(result))
    try:
        with patched_env({"COVID_SWEEP_CACHE": str(work / "cache"), "COVID_SWEEP_HOME": str(work / "home")}):
            run_sections(args, data, work, device, report, torch)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.section(f"total benchmark time {time.perf_counter() - t_start:.0f}s")
    return result


def run_sections(args, data: Path, work: Path, device, report: Report, torch) -> None:
    import numpy as np

    from covid_sweep.core.config import build_config
    from covid_sweep.data.groups import THUMB_SIZE
    from covid_sweep.data.layout import cached_images, load_split
    from covid_sweep.data.splits import stratified_split

    result = report.result
    cache = work / "cache"
    split = load_split(data, "train")
    labels = np.asarray(split.labels)
    base = build_config({"batch_size": args.batch, "epochs": args.epochs, "patience": args.epochs,
                         "optimizer": "adam", "device": args.device, **{t: True for t in args.toggles}})
    train_idx, val_idx = stratified_split(labels, base.val_fraction, base.seed)
    result["data"] = {"path": str(data), "n_images": len(labels), "n_train": len(train_idx),
                      "n_val": len(val_idx), "cache": {}}

    def cache_for(size: int):
        key = str(size)
        if key not in result["data"]["cache"]:
            started = time.perf_counter()
            cached_images(split, size)  # cold: decode + resize + write the .npy
            build = time.perf_counter() - started
            started = time.perf_counter()
            cached_images(split, size)  # warm: what every later trial pays
            result["data"]["cache"][key] = {"build_s": build, "hit_s": time.perf_counter() - started}
        return cached_images(split, size)

    # THUMB_SIZE: the thumbnails a trial's grouping reads (near-duplicates), also built once per data set
    for size in dict.fromkeys([*args.sizes, args.trial_size, args.sweep_size, THUMB_SIZE]):
        cache_for(size)
    report.section(render_data(result), "data")

    limits: dict[tuple, dict] = {}
    result["throughput"] = rows = []
    if args.rounds == 1:  # with more rounds, the first is the warm-up and the best round is kept
        size = args.sizes[0]
        print(f"[throughput] warming the process: one epoch of (b) and (c), resnet18 {size}px, untimed ...",
              file=sys.stderr, flush=True)
        result["process_warmup_s"] = warm_process(base.model_copy(update={"input_size": size}), split, labels,
                                                  train_idx, val_idx, cache_for(size), device)
    for backbone in args.backbones:
        for size in args.sizes:
            print(f"[throughput] {backbone} {size}px ...", file=sys.stderr, flush=True)
            row = throughput_row(args, backbone, size, base, split, labels, train_idx, val_idx, cache_for(size),
                                 device, limits, torch)
            rows.append(row | {"cache_build_s": result["data"]["cache"][str(size)]["build_s"]})
    report.section(render_throughput(result), "throughput")

    if not args.skip_augmentation:
        print("[augmentation] albumentations (workers 0 and N) vs device, alternated ...", file=sys.stderr, flush=True)
        size = args.sizes[0]
        train_images, train_labels = np.asarray(cache_for(size))[train_idx], labels[train_idx]
        workers = loader_workers(cpu_cores(), max(args.agents))
        config = base.model_copy(update={"input_size": size})
        result["augmentation"] = [
            measure_augmentation(config, train_images, train_labels, device, toggles, workers)
            for toggles in dict.fromkeys([tuple(args.toggles), DEVICE_TOGGLES])]
        report.section(render_augmentation(result), "augmentation")

    split_sizes = {"train": len(train_idx), "val": len(val_idx)}
    if not args.skip_trial:
        result["trial"] = []
        for backbone in args.trial_backbones:
            print(f"[trial] {backbone}: one real trial under the embedded controller ...", file=sys.stderr, flush=True)
            try:
                limit = limits.get((backbone, args.trial_size, args.trial_batch)) or measure_limit(
                    backbone, args.trial_size, args.trial_batch, device, args.warmup_steps, args.limit_steps)
                result["trial"].append(measure_trial(args, backbone, data, work, cache, limit, split_sizes))
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                result["trial"].append({"backbone": backbone, "error": str(err)})
            free_device_memory(device)
        report.section(render_trials(result), "trial")
    if not args.skip_sweep:
        print(f"[sweep] {args.sweep_trials} trials with --agents {args.agents} and the seed-style loop ...",
              file=sys.stderr, flush=True)

        def runner_done(rows: list[dict]) -> None:
            row = rows[-1]
            print(f"[sweep] {row['runner']} --agents {row['agents']}: {row['finished']}/{row['trials']} finished, "
                  f"wall {row['wall_s']:.1f} s, span {_fmt(row['span_s'])} s", file=sys.stderr, flush=True)
            result["sweep"] = list(rows)  # saved now: a run cut short keeps the runners that ended
            report.save()

        try:
            result["sweep"] = measure_sweeps(args, data, work, cache, device, runner_done)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            result["sweep"] = {"error": str(err), "runners_done": result.get("sweep")}
        report.section(render_sweep(result), "sweep")


def warm_process(config, split, labels, train_idx, val_idx, images, device) -> float:
    """Seconds of one epoch of the seed-style pipeline and of fit, on resnet18, before any row is timed.

    The first use of each path in this process pays once for all rows (on CUDA: loading the kernels of the
    augmentation, the fp32 convolutions, the allocator's first blocks); that would land in whichever backbone
    runs first and make the rows depend on their order. A trial pays it in its own process: the trial table's
    `warmup` phase shows it."""
    from covid_sweep.training.train import augment_on

    started = time.perf_counter()
    config = config.model_copy(update={"backbone": "resnet18", "epochs": 1, "patience": 1})
    measure_seed_style("resnet18", config, [split.paths[i] for i in train_idx], labels[train_idx].tolist(), device, 1, 0)
    measure_covid("resnet18", config, images, labels, train_idx, val_idx, augment_on(config, device))
    free_device_memory(device)
    return time.perf_counter() - started


def throughput_row(args, backbone, size, base, split, labels, train_idx, val_idx, images, device, limits,
                   torch) -> dict:
    """(a), (b) and (c) for one backbone and size, alternated --rounds times so each sees the same contention
    (the best round of each kept); a CUDA OOM is the row's error and the run goes on."""
    from covid_sweep.training.train import augment_on

    row: dict[str, Any] = {"backbone": backbone, "size": size, "batch": args.batch, "rounds": args.rounds}
    config = base.model_copy(update={"backbone": backbone, "input_size": size})
    chosen = augment_on(config, device)
    train_paths, train_labels = [split.paths[i] for i in train_idx], labels[train_idx].tolist()
    ways = {
        "limit": lambda: measure_limit(backbone, size, args.batch, device, args.warmup_steps, args.limit_steps),
        "seed": lambda: measure_seed_style(backbone, config, train_paths, train_labels, device, args.epochs, 0),
        "covid": lambda: measure_covid(backbone, config, images, labels, train_idx, val_idx, chosen),
        "other": lambda: measure_covid(backbone, config, images, labels, train_idx, val_idx,
                                       "cpu" if chosen == "device" else "device"),
    }
    if args.workers:
        ways["seed_w"] = lambda: measure_seed_style(backbone, config, train_paths, train_labels, device, args.epochs,
                                                    args.workers)
    best: dict[str, dict] = {}
    try:
        for _ in range(args.rounds):
            for key, measure in ways.items():
                got = measure()
                speed = got["limit_img_s"] if key == "limit" else got["img_s"]
                if key not in best or speed > best[key]["speed"]:
                    best[key] = {**got, "speed": speed}
    except torch.cuda.OutOfMemoryError as err:
        free_device_memory(device)
        return row | {"error": f"CUDA OOM: {str(err).splitlines()[0]}"}
    limit, seed, covid = best["limit"], best["seed"], best["covid"]
    row.update({k: v for k, v in limit.items() if k != "speed"})
    limits[(backbone, size, args.batch)] = row
    row.update(seed_img_s=seed["img_s"], seed_steady_img_s=seed["steady_img_s"], seed_epoch_s=seed["epoch_s"])
    if args.workers:
        row.update(seed_workers=args.workers, seed_workers_img_s=best["seed_w"]["img_s"],
                   seed_workers_ratio=_ratio(best["seed_w"]["img_s"], row["limit_img_s"]))
    row.update(covid_img_s=covid["img_s"], covid_steady_img_s=covid["steady_img_s"] or covid["img_s"],
               covid_eval_img_s=covid["eval_img_s"], covid_train_epoch_s=covid["train_epoch_s"],
               covid_eval_epoch_s=covid["eval_epoch_s"], covid_eval_included=False, covid_augment_on=chosen,
               covid_alt_img_s=best["other"]["img_s"], seed_ratio=_ratio(seed["img_s"], row["limit_img_s"]),
               covid_ratio=_ratio(covid["img_s"], row["limit_img_s"]), covid_vs_seed=_ratio(covid["img_s"], seed["img_s"]))
    return row


if __name__ == "__main__":
    main()

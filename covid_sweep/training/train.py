"""The training loop: early stopping, LR schedule, bf16 autocast. Knows nothing of W&B or the store."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from covid_sweep.core.config import TrialConfig
from covid_sweep.core.errors import UserError
from covid_sweep.core.goals import improves
from covid_sweep.core.metrics import binary_metrics
from covid_sweep.core.phases import PhaseTimer
from covid_sweep.model.preprocessing import normalize, to_model_input
from covid_sweep.model.runtime import RESIDENT_BYTES, bf16_autocast, pick_device, predict_probs, resident_images
from covid_sweep.training import augment
from covid_sweep.training.batches import CachedBatches
from covid_sweep.training.device_augment import DeviceAugment

# augment_on=auto, per device type (benchmarks/pipeline.py's "Augmentation alone" table and (c) vs "c other aug").
# CPU: the reference albumentations path. On the 2-core box both paths ran at thousands of img/s at 64 px against a
# training step of tens to ~150 img/s, so neither limits a CPU trial, and which was faster flipped between runs
# (shared, bursty cores). CUDA: device; not measured here: the CPU path capped a trial near 400 img/s on an
# H200 (issue 13) whatever the GPU does, and the device ops cost a GPU little next to a backbone's step.
AUTO_AUGMENT_ON = {"cuda": "device", "cpu": "cpu"}


class TrainingError(UserError, RuntimeError):
    """The trial cannot go on (NaN loss...); the sweep marks it failed and carries on."""


class StopRequested(Exception):
    """Raised inside the loop when should_stop() turns true (SIGTERM from hyperband or the agent)."""


EpochCallback = Callable[[dict], None]


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best: dict
    best_state: dict
    val_labels: np.ndarray
    val_probs: np.ndarray
    stopped: bool = False
    # every scored epoch's validation probabilities (E, N), in val_labels' order: the selection's replay needs them
    epoch_probs: np.ndarray | None = None


class AugmentedImages(Dataset):
    """uint8 images (N, H, W, 3), e.g. a memory-mapped cache, with per-sample albumentations."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = augment.apply(self.transform, self.images[i])
        # an op-free pipeline hands back the (read-only, memory-mapped) cache row itself
        return torch.from_numpy(np.require(image, requirements=["W", "C"])), int(self.labels[i])


def augment_on(config: TrialConfig, device: torch.device) -> str:
    """cpu or device: where this trial's random augmentation runs."""
    if config.augment_on != "auto":
        return config.augment_on
    return AUTO_AUGMENT_ON.get(device.type, "cpu")


class BatchInput:
    """A training batch as the loader gives it -> the model's input on the device: (augmented and) normalised."""

    def __init__(self, config: TrialConfig, device: torch.device):
        self.device = device
        self.augment = DeviceAugment(config) if augment_on(config, device) == "device" else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.to(self.device, non_blocking=True)
        if self.augment is None:
            return to_model_input(batch)
        return normalize(self.augment(batch))


def batches(config: TrialConfig, images: np.ndarray, labels: np.ndarray, device: torch.device,
            resident_limit: int = 0):
    """The training batches: uint8 only (device augmentation) or albumentations per image (cpu).
    resident_limit: bytes the images may take on the GPU, where device augmentation then gathers each batch."""
    if augment_on(config, device) == "device":
        if not config.clahe:  # CLAHE needs each batch on the CPU
            images = resident_images(images, device, resident_limit)
        return CachedBatches(config, images, labels, pin_memory=device.type == "cuda")
    return train_loader(config, images, labels, device)


def train_loader(config: TrialConfig, images: np.ndarray, labels: np.ndarray, device: torch.device) -> DataLoader:
    dataset = AugmentedImages(images, labels, augment.train_transform(config))
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=min(config.batch_size, len(dataset)),
        shuffle=True,
        # a fixed batch shape lets cudnn tune once; the dropped tail is reshuffled into later epochs
        drop_last=len(dataset) > config.batch_size,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=device.type == "cuda",
        generator=generator,
    )


def _optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    # fused: one kernel over all parameters instead of a Python loop per tensor (on the CPU the
    # default is that loop; fused Adam/AdamW was 3-10 % faster per step here, SGD gained nothing)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def _scheduler(config: TrialConfig, optimizer, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    warmup = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "none":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _mixer(config: TrialConfig):
    if config.mixup <= 0:
        return None
    return v2.RandomApply([v2.RandomChoice([v2.MixUp(num_classes=2), v2.CutMix(num_classes=2)])], p=config.mixup)


def _evaluate(model, images, labels, config, device) -> tuple[dict, np.ndarray]:
    # fp32 even when training in bf16: the threshold is chosen on the very numbers that predict and
    # the exported model will give
    probs = predict_probs(model, images, config.batch_size, device)
    p = torch.from_numpy(np.clip(probs, 1e-7, 1 - 1e-7))
    y = torch.from_numpy(labels.astype(np.float32))
    val_loss = float(nn.functional.binary_cross_entropy(p.double(), y.double()))
    metrics = {f"val_{k}": v for k, v in binary_metrics(labels, probs).items()}
    return {"val_loss": val_loss, **metrics}, probs


class FoldRun:
    """One model being trained on one train/val split: its optimizer, schedule, EMA and best state."""

    def __init__(self, config: TrialConfig, model: nn.Module, split: tuple, device: torch.device,
                 resident_limit: int = RESIDENT_BYTES):
        """resident_limit: bytes of this fold's images that may stay on the GPU for the whole fit (validation
        first, then the training images): sent once, not once per epoch or batch."""
        train_images, train_labels, val_images, val_labels = split
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
                    if config.ema > 0 else None)
        self.val_images = resident_images(val_images, device, resident_limit)
        left = resident_limit - (val_images.nbytes if isinstance(self.val_images, torch.Tensor) else 0)
        self.loader = batches(config, train_images, train_labels, device, left)
        self.prepare = BatchInput(config, device)
        self.optimizer = _optimizer(config, self.model)
        self.scheduler = _scheduler(config, self.optimizer, len(self.loader))
        self.val_labels = np.asarray(val_labels)
        self.best_state: dict | None = None
        self.best_probs: np.ndarray | None = None
        self.probs: np.ndarray | None = None

    @property
    def scored(self) -> nn.Module:
        """What is evaluated and kept: the EMA weights when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def keep_best(self) -> None:
        # a copy on the training device: on a GPU that is a device-to-device copy instead of a trip to the CPU
        # (537 MB for vgg16) at every improvement; the best weights go to the CPU once, at the end
        self.best_state = {k: v.detach().clone() for k, v in self.scored.state_dict().items()}
        self.best_probs = self.probs


def _mean_records(records: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in records])) for k in records[0]}


def fit(
    config: TrialConfig,
    model: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = True,
) -> FitResult:
    """Train one model on one train/val split."""
    return fit_folds(config, [model], [(train_images, train_labels, val_images, val_labels)],
                     on_epoch=on_epoch, should_stop=should_stop, progress=progress)


def fit_folds(
    config: TrialConfig,
    models: list[nn.Module],
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = True,
    timer: PhaseTimer | None = None,
) -> FitResult:
    """Train one model per split in lockstep, one epoch of each at a time.

    Each epoch's record holds the mean of the folds' validation metrics, so a K-fold trial still logs
    the sweep metric exactly once per epoch (hyperband counts epochs) and early-stops on the mean.
    Every fold keeps its weights from the epoch with the best mean: together they are the ensemble.
    timer gets two phases: warmup (set-up and the first training step, where CUDA loads its kernels and the
    allocator grows) and fit (the rest).
    """
    timer = timer or PhaseTimer()
    warm = FirstStep(time.perf_counter())
    try:
        with timer.phase("fit"):
            return _fit_folds(config, models, splits, on_epoch, should_stop, progress, warm)
    finally:
        # no first step (stopped, or failed before it): all of it was set-up
        timer.move("fit", "warmup", warm.seconds if warm.seconds is not None else math.inf)


class FirstStep:
    """Seconds from `started` to the end of the first optimizer step, the device's work included."""

    def __init__(self, started: float):
        self.started = started
        self.seconds: float | None = None

    def done(self, device: torch.device) -> None:
        if self.seconds is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per trial: the step's kernels, not just their launch
            self.seconds = time.perf_counter() - self.started


def _fit_folds(config, models, splits, on_epoch, should_stop, progress, warm: FirstStep) -> FitResult:
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    # one budget of GPU memory for the images of all folds
    folds = [FoldRun(config, model, split, device, RESIDENT_BYTES // len(splits)) for model, split in zip(models, splits)]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    mixer = _mixer(config)

    history: list[dict] = []
    epoch_probs: list[np.ndarray] = []
    best, best_epoch, bad_epochs, stopped = None, 0, 0, False
    epochs = tqdm(range(1, config.epochs + 1), desc=f"{config.backbone}", unit="epoch", disable=not progress, leave=False)
    try:
        for epoch in epochs:
            started = time.perf_counter()
            records = []
            for fold in folds:
                train_loss = _train_one_epoch(fold.model, fold.ema, fold.loader, fold.prepare, fold.optimizer,
                                              fold.scheduler, loss_fn, mixer, config, device, should_stop, warm)
                if not math.isfinite(train_loss):
                    raise TrainingError(f"training loss became {train_loss} at epoch {epoch}; try a lower lr (now {config.lr})")
                metrics, fold.probs = _evaluate(fold.scored, fold.val_images, fold.val_labels, config, device)
                records.append({"train_loss": train_loss, **metrics})
            record = {"epoch": epoch, **_mean_records(records), "lr": folds[0].optimizer.param_groups[0]["lr"],
                      "epoch_time": time.perf_counter() - started}
            history.append(record)
            epoch_probs.append(np.concatenate([fold.probs for fold in folds]).astype(np.float32))
            value = record[config.monitor]
            if improves(value, best, config.monitor_goal):
                best, best_epoch, bad_epochs = value, epoch, 0
                for fold in folds:
                    fold.keep_best()
            else:
                bad_epochs += 1
            if on_epoch:
                on_epoch(record)
            epochs.set_postfix({config.monitor: f"{value:.4f}", "best": f"{best:.4f}" if best is not None else "-"})
            if bad_epochs >= config.patience:
                break
    except StopRequested:
        stopped = True
    for fold in folds:
        if fold.best_state is None:
            # stopped before the first epoch was scored: keep the weights as they are
            fold.keep_best()
            fold.best_probs = np.full(len(fold.val_labels), np.nan)
    best_record = next((h for h in history if h["epoch"] == best_epoch), {})
    if len(folds) == 1:
        state = {k: v.cpu() for k, v in folds[0].best_state.items()}
    else:
        state = {f"members.{i}.{k}": v.cpu() for i, fold in enumerate(folds) for k, v in fold.best_state.items()}
    # out-of-fold predictions: with K folds every training image is scored once, by the model that never saw it
    return FitResult(history=history, best_epoch=best_epoch, best=best_record, best_state=state,
                     val_labels=np.concatenate([f.val_labels for f in folds]),
                     val_probs=np.concatenate([f.best_probs for f in folds]), stopped=stopped,
                     epoch_probs=np.stack(epoch_probs) if epoch_probs else None)


def _train_one_epoch(model, ema, loader, prepare, optimizer, scheduler, loss_fn, mixer, config, device, should_stop,
                     warm: FirstStep | None = None) -> float:
    model.train()
    # summed on the device: a float() per step would sync the GPU every batch
    total = torch.zeros((), device=device)
    count = 0
    for images, labels in loader:
        if should_stop():
            raise StopRequested()
        x = prepare(images)
        y = labels.to(device, non_blocking=True)
        if mixer is not None:
            x, y = mixer(x, y)
        with bf16_autocast(device, config.amp):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if warm is not None:
            warm.done(device)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.detach().float() * len(labels)
        count += len(labels)
    return float(total) / max(1, count)

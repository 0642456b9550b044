#!/usr/bin/env python3
"""Where a trial process's first training step goes, stage by stage, on this device.

A trial's `warmup` phase (fit's set-up and first step) was 1.3-1.4 s on an H200 for vgg16 and resnet50 at
224 px, batch 32, fresh process each, and still 0.9 s per trial in a warm worker (issue 13). This splits it,
in ONE fresh process, each stage timed with the device synchronised and printed as soon as it is measured:

  context    the first tensor on the device (CUDA: the driver and the context; ~0 on a CPU)
  libraries  a tiny conv + linear, forward and backward in bf16 autocast: cuDNN and cuBLAS loaded, handles made
  build      build_model(backbone, device), channels_last, fused Adam (as fit)
  augment    DeviceAugment on a uint8 batch (hflip, rotate), first call then second
  step       a real training step at (batch, size), 1st, 2nd, 3rd: the 1st pays each new shape's kernels and
             cuDNN's plans, the 3rd is the steady step
  eval       fit's validation forward (no_grad, fp32) of the same batch, 1st then 2nd

then the same for each further backbone in the same process, which is what a warm worker pays for its next
trial (context and libraries already there). Every number is measured here; nothing is compared with a
hard-coded value.

    python benchmarks/first_step.py --backbones vgg16,resnet50 --size 224 --batch 32 --json first_step.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, work) -> float:
    sync(device)
    started = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - started


def process_stages(device) -> list[tuple[str, float]]:
    """What a fresh process pays once, whatever the model: the device's context, then its conv/matmul libraries."""
    import torch
    from torch import nn

    from covid_sweep.model.runtime import bf16_autocast

    stages = [("context", timed(device, lambda: torch.ones(1, device=device)))]
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).to(device)

    def tiny_step():
        with bf16_autocast(device):
            loss = tiny(torch.randn(2, 3, 8, 8, device=device)).float().sum()
        loss.backward()

    stages.append(("libraries", timed(device, tiny_step)))
    return stages


def model_stages(backbone: str, size: int, batch: int, device) -> list[tuple[str, float]]:
    """A trial's first steps for one backbone, in the order fit takes them."""
    import torch
    from torch import nn

    from covid_sweep.core.config import build_config
    from covid_sweep.model.networks import build_model
    from covid_sweep.model.preprocessing import normalize
    from covid_sweep.model.runtime import bf16_autocast
    from covid_sweep.training.device_augment import DeviceAugment

    torch.manual_seed(0)
    built = {}

    def build():
        model = build_model(backbone, device=device).to(memory_format=torch.channels_last)
        built.update(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True))

    stages = [("build", timed(device, build))]
    model, optimizer = built["model"], built["optimizer"]
    augment = DeviceAugment(build_config({"input_size": size, "hflip": True, "rotate": True}))
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    x = {}

    def augmented():
        x["batch"] = normalize(augment(images))

    def step():
        with bf16_autocast(device):
            loss = loss_fn(model(x["batch"]), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def evaluate():
        with torch.no_grad():
            model(x["batch"])

    stages += [("augment 1", timed(device, augmented)), ("augment 2", timed(device, augmented))]
    model.train()
    stages += [(f"step {i}", timed(device, step)) for i in (1, 2, 3)]
    model.eval()
    stages += [(f"eval {i}", timed(device, evaluate)) for i in (1, 2)]
    return stages


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="resnet18", help="comma list, measured in this order in one process")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", type=Path, help="also write the stages as JSON here")
    args = p.parse_args(argv)

    import torch

    from covid_sweep.model.runtime import pick_device

    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"first steps on {device.type}: {name}, torch {torch.__version__}, {args.size} px, batch {args.batch}; "
          "seconds, device synchronised", flush=True)
    result: dict = {"device": name, "size": args.size, "batch": args.batch, "process": [], "backbones": {}}

    def show(owner: str, stages: list[tuple[str, float]]) -> None:
        for stage, seconds in stages:
            print(f"  {owner:<10} {stage:<10} {seconds:8.3f}", flush=True)

    result["process"] = process_stages(device)
    show("process", result["process"])
    for backbone in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        stages = model_stages(backbone, args.size, args.batch, device)
        show(backbone, stages)
        result["backbones"][backbone] = stages
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

"""TrialConfig: the one description of a training trial.

The CLI, the `wandb agent` entrypoint, the embedded controller and the model artifact all build
or store this same object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from covid_sweep.core.backbones import BACKBONE_NAMES
from covid_sweep.core.errors import UserError

# Early-stop / sweep metrics: name -> goal. Loss goes down, everything else goes up.
METRIC_GOALS: dict[str, Literal["minimize", "maximize"]] = {
    "val_loss": "minimize",
    "val_acc": "maximize",
    "val_auc": "maximize",
    "val_f1": "maximize",
}

BackboneName = Literal[BACKBONE_NAMES]  # type: ignore[valid-type]


class ConfigError(UserError, ValueError):
    """A trial configuration the user wrote is invalid; the message names each bad field."""


class TrialConfig(BaseModel):
    # strict key set: a typo in a sweep parameter must fail, not silently train the default
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    backbone: BackboneName = "resnet18"
    pretrained: bool = False
    lr: float = Field(3e-4, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"
    epochs: int = Field(30, ge=1, le=1000)
    patience: int = Field(5, ge=1, le=1000)
    monitor: Literal["val_loss", "val_acc", "val_auc", "val_f1"] = "val_auc"
    input_size: int = Field(224, ge=32, le=1024)
    batch_size: int = Field(32, ge=2, le=4096)
    blur: bool = False
    clahe: bool = False
    cutout: bool = False
    rotate: bool = False
    sepia: bool = False
    hflip: bool = False
    # from-scratch recipe knobs: all off by default
    random_resized_crop: bool = False
    brightness_contrast: bool = False
    gamma: bool = False
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    mixup: float = Field(0.0, ge=0, le=1, description="probability of mixup/cutmix on a batch")
    warmup_epochs: int = Field(0, ge=0, le=100)
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of weights; 0 = off")
    seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=0.9)
    folds: int = Field(1, ge=1, le=20, description="K-fold cross-validation: K>1 trains K models (an ensemble); "
                                                   "1 = one stratified holdout of val_fraction")
    grouping: Literal["auto", "groups_csv", "near_duplicates", "none"] = Field(
        "auto", description="what no split may cut through: auto = DATA/groups.csv (patient ids) merged with "
                            "near-duplicate clusters, or near-duplicates alone without it; none = ungrouped")
    amp: bool = Field(True, description="bf16 autocast where the device runs bf16 natively "
                                        "(CUDA; a CPU with AVX512-BF16 or AMX)")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader workers of the CPU augmentation path")
    augment_on: Literal["auto", "cpu", "device"] = Field(
        "auto", description="where the random augmentation runs: cpu = albumentations per image in the loader; "
                            "device = batched torch ops on the training device (CLAHE stays on the CPU); "
                            "auto = the faster one measured for the device type (benchmarks/README.md)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_dir: Path | None = None

    @field_validator("backbone", mode="before")
    @classmethod
    def _lower_backbone(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def monitor_goal(self) -> Literal["minimize", "maximize"]:
        return METRIC_GOALS[self.monitor]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def format_validation_error(err: ValidationError, source: str = "TrialConfig") -> str:
    parts = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(config)"
        if item["type"] == "extra_forbidden":
            parts.append(f"{field}: unknown field (valid fields: {', '.join(TrialConfig.model_fields)})")
        else:
            parts.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def build_config(values: Mapping[str, Any], source: str = "TrialConfig") -> TrialConfig:
    """Validate a mapping (JSON, wandb.config, parsed CLI args) into a TrialConfig or raise ConfigError."""
    try:
        return TrialConfig.model_validate(dict(values))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def parse_agent_args(argv: Sequence[str]) -> dict[str, str]:
    """Parse the `--key=value` strings that `wandb agent` passes (values stay strings; pydantic types them)."""
    params: dict[str, str] = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"agent argument {arg!r}: expected --key=value")
        key, value = arg[2:].split("=", 1)
        params[key.replace("-", "_")] = value
    return params

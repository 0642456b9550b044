import json
from pathlib import Path

import pytest

from covid_sweep.core.config import ConfigError, TrialConfig, build_config, parse_agent_args


def test_defaults_are_valid_and_round_trip_json():
    config = TrialConfig()
    assert build_config(json.loads(config.to_json())) == config
    custom = build_config({"backbone": "densenet121", "lr": 1e-3, "hflip": True, "data_dir": "/data"})
    again = build_config(json.loads(custom.to_json()))
    assert again == custom and again.data_dir == Path("/data")


# every parameter type, written the way `wandb agent` writes it on the command line
AGENT_ARGS = [
    "--backbone=VGG16", "--pretrained=False", "--lr=4.8e-05", "--weight_decay=0", "--optimizer=sgd",
    "--scheduler=onecycle", "--epochs=12", "--patience=3", "--monitor=val_loss", "--input_size=384",
    "--batch_size=16", "--blur=True", "--clahe=false", "--cutout=1", "--rotate=0", "--sepia=True",
    "--hflip=False", "--random_resized_crop=true", "--brightness_contrast=False", "--gamma=True",
    "--label_smoothing=0.1", "--mixup=0.5", "--warmup_epochs=2", "--ema=0.999", "--seed=7",
    "--val_fraction=0.25", "--folds=3", "--grouping=near_duplicates", "--amp=False", "--num_workers=2", "--augment_on=device",
    "--device=cpu",
    "--data_dir=/mnt/data",
]


def test_agent_strings_parse_into_typed_fields():
    config = build_config(parse_agent_args(AGENT_ARGS))
    assert config.backbone == "vgg16"
    assert config.pretrained is False and config.blur is True and config.clahe is False
    assert config.cutout is True and config.rotate is False and config.hflip is False
    assert config.lr == pytest.approx(4.8e-05) and isinstance(config.input_size, int) and config.input_size == 384
    assert config.epochs == 12 and config.weight_decay == 0.0 and config.optimizer == "sgd"
    assert config.ema == pytest.approx(0.999) and config.data_dir == Path("/mnt/data")
    assert config.monitor_goal == "minimize" and config.grouping == "near_duplicates"
    assert config.augment_on == "device" and config.num_workers == 2
    # every field was exercised
    assert {a[2:].split("=")[0] for a in AGENT_ARGS} == set(TrialConfig.model_fields)


@pytest.mark.parametrize("values, field", [
    ({"lr": -1}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"input_size": "big"}, "input_size"),
    ({"input_size": 8}, "input_size"),
    ({"grouping": "patients"}, "grouping"),
    ({"backbone": "alexnet9000"}, "backbone"),
    ({"hflip": "maybe"}, "hflip"),
    ({"val_fraction": 0}, "val_fraction"),
    ({"monitor": "train_loss"}, "monitor"),
])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as err:
        build_config(values)
    assert f"{field}:" in str(err.value)


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="learning_rate: unknown field"):
        build_config({"learning_rate": 0.1})


def test_malformed_agent_argument():
    with pytest.raises(ConfigError, match="expected --key=value"):
        parse_agent_args(["--lr", "0.1"])


def test_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="epochs"):
        build_config({"epochs": 0})

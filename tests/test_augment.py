import albumentations as A
import numpy as np
import pytest
import torch

from covid_sweep.core.config import TrialConfig, build_config
from covid_sweep.model.preprocessing import MEAN, STD, to_model_input
from covid_sweep.training import augment

EXPECTED_OP = {
    "blur": A.Blur, "clahe": A.CLAHE, "cutout": A.CoarseDropout, "rotate": A.Rotate, "sepia": A.ToSepia,
    "hflip": A.HorizontalFlip, "random_resized_crop": A.RandomResizedCrop,
    "brightness_contrast": A.RandomBrightnessContrast, "gamma": A.RandomGamma,
}

# bool fields of TrialConfig that are not augmentation toggles
NOT_TOGGLES = {"pretrained", "amp"}


def test_every_bool_field_is_a_tested_toggle():
    bools = {name for name, field in TrialConfig.model_fields.items() if field.annotation is bool}
    assert bools - NOT_TOGGLES == set(EXPECTED_OP)


@pytest.mark.parametrize("toggle", list(EXPECTED_OP))
def test_each_toggle_adds_its_albumentations_op(toggle):
    off = augment.train_transform(build_config({"input_size": 48}))
    on = augment.train_transform(build_config({"input_size": 48, toggle: True}))
    op = EXPECTED_OP[toggle]
    assert not any(isinstance(t, op) for t in off.transforms)
    assert any(isinstance(t, op) for t in on.transforms)
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    out = augment.apply(on, image)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8


def test_train_ends_with_resize_to_input_size():
    transform = augment.train_transform(build_config({"input_size": 40, "rotate": True}))
    out = augment.apply(transform, np.zeros((70, 90, 3), np.uint8))
    assert out.shape == (40, 40, 3)


def test_model_input_is_normalised_nchw():
    batch = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x = to_model_input(batch)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(x[0, :, 0, 0], expected)

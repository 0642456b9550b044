"""Device-side batched augmentation against its reference, albumentations (training/augment.py): each op with
the same parameters gives the same image within a tolerance; the random ops give the same range of outputs,
drawn independently per image."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from covid_sweep.core.config import build_config
from covid_sweep.training import augment, device_augment
from covid_sweep.training.batches import CachedBatches
from covid_sweep.training.device_augment import DeviceAugment, sample_params

SIZE = 64


def ct_like(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A smooth RGB test image with edges (bilinear error is largest on noise, which CT slices are not)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 255, (8, 8, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    base[size // 4:size // 2, size // 3:2 * size // 3] = 230
    return base.clip(0, 255).astype(np.uint8)


def to_device_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def assert_close(device_out: torch.Tensor, albu_out: np.ndarray, mean_tol: float = 0.6, p99_tol: float = 3.0):
    """Both in 0..255 units: albumentations rounds to uint8 after each op (and cv2.warpAffine interpolates in
    1/32 pixel steps), the device ops do not, so equal means 'within a grey level or so'."""
    ours = device_out[0].permute(1, 2, 0).numpy() * 255
    diff = np.abs(ours - albu_out.astype(np.float64))
    assert diff.mean() < mean_tol and np.percentile(diff, 99) < p99_tol, (diff.mean(), np.percentile(diff, 99))


def one(value, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([value], dtype=dtype)


FULL = one([0.0, 0.0, SIZE, SIZE])


@pytest.mark.parametrize("angle", [12.5, -9.0, 0.7])
def test_rotation_matches_albumentations(angle):
    image = ct_like()
    albu = A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)(image=image)["image"]
    ours = device_augment.geometry(to_device_input(image), FULL, one(False, torch.bool), one(angle), SIZE)
    assert_close(ours, albu)


def test_horizontal_flip_matches_albumentations():
    image = ct_like()
    ours = device_augment.geometry(to_device_input(image), FULL, one(True, torch.bool), one(0.0), SIZE)
    assert_close(ours, A.HorizontalFlip(p=1.0)(image=image)["image"], mean_tol=1e-3, p99_tol=1e-3)


@pytest.mark.parametrize("box", [(3, 5, 50, 46), (0, 0, 45, 47), (19, 17, 45, 47)])
def test_random_resized_crop_matches_albumentations_for_the_same_box(box):
    image = ct_like()
    x0, y0, w, h = box
    albu = A.RandomResizedCrop(size=(SIZE, SIZE), p=1.0).apply(image, crop_coords=(x0, y0, x0 + w, y0 + h))
    ours = device_augment.geometry(to_device_input(image), one([float(v) for v in box]), one(False, torch.bool),
                                   one(0.0), SIZE)
    assert_close(ours, albu)


def test_crop_then_flip_then_rotate_in_one_resampling_matches_the_three_ops_in_turn():
    image = ct_like(3)
    x0, y0, w, h = 6, 2, 52, 55
    step = A.RandomResizedCrop(size=(SIZE, SIZE), p=1.0).apply(image, crop_coords=(x0, y0, x0 + w, y0 + h))
    step = A.HorizontalFlip(p=1.0)(image=step)["image"]
    albu = A.Rotate(limit=(-13, -13), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0)(image=step)["image"]
    crop, flip = one([x0, y0, w, h]), one(True, torch.bool)
    # done in turn on the device, the same composition: the same image
    in_turn = device_augment.geometry(device_augment.geometry(to_device_input(image), crop, flip, one(0.0), SIZE),
                                      FULL, one(False, torch.bool), one(-13.0), SIZE)
    assert_close(in_turn, albu)
    # in one resampling: the same geometry, only sharper at edges (one interpolation instead of two)
    fused = device_augment.geometry(to_device_input(image), crop, flip, one(-13.0), SIZE)
    smooth = lambda a: cv2.GaussianBlur(np.ascontiguousarray(a, np.float32), (5, 5), 1.5)  # noqa: E731
    assert_close(torch.from_numpy(smooth(fused[0].permute(1, 2, 0).numpy())).permute(2, 0, 1)[None],
                 smooth(albu / 255) * 255)


@pytest.mark.parametrize("kernel", [3, 5])
def test_box_blur_matches_albumentations(kernel):
    image = ct_like()
    albu = A.Blur(blur_limit=(kernel, kernel), p=1.0)(image=image)["image"]
    assert_close(device_augment.box_blur(to_device_input(image), one(kernel, torch.long)), albu)


@pytest.mark.parametrize("contrast,brightness", [(0.12, -0.1), (-0.15, 0.15), (0.0, 0.05)])
def test_brightness_contrast_matches_albumentations(contrast, brightness):
    image = ct_like()
    albu = A.RandomBrightnessContrast(brightness_limit=(brightness, brightness), contrast_limit=(contrast, contrast),
                                      p=1.0)(image=image)["image"]
    ours = device_augment.brightness_contrast(to_device_input(image), one(1 + contrast), one(brightness))
    assert_close(ours, albu, mean_tol=1.0)  # albumentations' uint8 lookup table truncates


@pytest.mark.parametrize("gamma", [0.8, 1.13])
def test_gamma_matches_albumentations(gamma):
    image = ct_like()
    albu = A.RandomGamma(gamma_limit=(gamma * 100, gamma * 100), p=1.0)(image=image)["image"]
    assert_close(device_augment.gamma(to_device_input(image), one(gamma)), albu, mean_tol=1.0)  # LUT truncates


def test_sepia_matches_albumentations():
    image = ct_like()
    assert_close(device_augment.sepia(to_device_input(image), one(True, torch.bool)), A.ToSepia(p=1.0)(image=image)["image"])


def test_cutout_matches_albumentations_for_the_same_holes():
    image = ct_like()
    holes = np.array([[3, 4, 10, 9], [40, 50, 48, 60]])
    albu = A.CoarseDropout(fill=0, p=1.0).apply(image, holes=holes, seed=0)
    padded = torch.zeros(1, device_augment.MAX_HOLES, 4, dtype=torch.long)
    padded[0, :2] = torch.from_numpy(holes)
    assert_close(device_augment.cutout(to_device_input(image), padded), albu, mean_tol=1e-3, p99_tol=1e-3)


TOGGLES = ["hflip", "rotate", "random_resized_crop", "blur", "brightness_contrast", "gamma", "sepia", "cutout"]


def change_per_image(outputs: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Mean |output - input| of each image, in grey levels."""
    return np.abs(outputs.astype(np.float64) - image.astype(np.float64)[None]).reshape(len(outputs), -1).mean(1)


@pytest.mark.parametrize("toggle", TOGGLES)
def test_random_op_changes_as_many_images_as_much_as_albumentations_each_image_its_own_draw(toggle):
    n, image = 240, ct_like(5)
    config = build_config({"input_size": SIZE, toggle: True, "seed": 1})
    transform = augment.train_transform(config)
    albu = np.stack([augment.apply(transform, image) for _ in range(n)])
    batch = torch.from_numpy(np.repeat(image[None], n, axis=0))
    ours = (DeviceAugment(config)(batch).permute(0, 2, 3, 1).numpy() * 255)
    albu_change, our_change = change_per_image(albu, image), change_per_image(ours, image)
    # the probability of the op: the share of images it changed (binomial noise at n=240: sd <= 0.033)
    albu_hit, our_hit = albu_change > 0.5, our_change > 0.5
    assert abs(albu_hit.mean() - our_hit.mean()) < 0.13, (albu_hit.mean(), our_hit.mean())
    # the strength: the range of changes among the changed images
    for q in (10, 50, 90):
        a, o = np.percentile(albu_change[albu_hit], q), np.percentile(our_change[our_hit], q)
        assert abs(a - o) <= 0.35 * a + 0.5, (q, a, o)
    # per image, not per batch: copies of one image in one batch come out both changed and not, and differently
    assert 0 < our_hit.mean() < 1
    if toggle not in ("hflip", "sepia", "blur"):  # the ops without a continuous parameter (blur: box 3 or 5)
        assert len(np.unique(our_change[our_hit].round(4))) > our_hit.sum() // 2


def test_same_seed_same_batches_other_seed_other_batches():
    batch = torch.from_numpy(np.repeat(ct_like()[None], 16, axis=0))
    values = {t: True for t in TOGGLES} | {"input_size": SIZE}
    first = DeviceAugment(build_config(values | {"seed": 3}))(batch)
    again = DeviceAugment(build_config(values | {"seed": 3}))(batch)
    other = DeviceAugment(build_config(values | {"seed": 4}))(batch)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (16, 3, SIZE, SIZE) and 0 <= first.min() and first.max() <= 1


def test_ops_that_are_off_leave_the_batch_as_it_was():
    batch = torch.from_numpy(np.stack([ct_like(i) for i in range(4)]))
    out = DeviceAugment(build_config({"input_size": SIZE}))(batch)
    assert torch.equal(out, batch.permute(0, 3, 1, 2).float() / 255)
    params = sample_params(build_config({"input_size": SIZE}), 4, SIZE, SIZE, torch.Generator())
    assert not params.flip.any() and (params.angle == 0).all() and (params.holes == 0).all()


def _numbered(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images, image i filled with i, labelled i % 2: a batch shows which images it holds, in which order."""
    return np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(n)]), np.arange(n) % 2


def test_cached_batches_cover_every_image_once_per_epoch_with_its_own_label():
    images, labels = _numbered(37)
    loader = CachedBatches(build_config({"batch_size": 8, "input_size": 32}), images, labels)
    assert len(loader) == 4  # the ragged tail is dropped, as the DataLoader path does
    seen = []
    for batch, y in loader:
        assert batch.shape == (8, 4, 4, 3) and batch.dtype == torch.uint8
        assert torch.equal(y, batch[:, 0, 0, 0].long() % 2)
        seen += batch[:, 0, 0, 0].tolist()
    assert len(set(seen)) == 32
    assert [b[:, 0, 0, 0].tolist() for b, _ in loader] != [b[:, 0, 0, 0].tolist() for b, _ in loader]  # reshuffled


def test_cached_batches_apply_clahe_on_the_cpu_to_about_half_the_images():
    images = np.repeat(ct_like(2)[None], 64, axis=0)
    loader = CachedBatches(build_config({"batch_size": 64, "input_size": SIZE, "clahe": True}), images, np.zeros(64))
    (batch, _), = list(loader)
    changed = (batch.numpy() != images).reshape(64, -1).any(1)
    assert 0.3 < changed.mean() < 0.7
    assert not images.flags.writeable or (images == ct_like(2)[None]).all()  # the cache itself untouched


def _epochs(loader, n: int = 2) -> list[tuple[list[int], list[int]]]:
    return [(b[:, 0, 0, 0].tolist(), y.tolist()) for _ in range(n) for b, y in loader]


def test_cached_batches_from_images_on_the_device_are_the_batches_of_the_array():
    images, labels = _numbered(37)
    config = build_config({"batch_size": 8, "input_size": 32})
    on_device = CachedBatches(config, torch.from_numpy(images), labels)  # a CPU tensor stands in for the GPU's
    assert _epochs(on_device) == _epochs(CachedBatches(config, images, labels))
    batch, y = next(iter(on_device))
    assert batch.dtype == torch.uint8 and y.dtype == torch.int64


def test_cached_batches_refuse_images_on_the_device_when_clahe_needs_them_on_the_cpu():
    images, labels = _numbered(8)
    with pytest.raises(ValueError, match="CLAHE"):
        CachedBatches(build_config({"batch_size": 4, "input_size": 32, "clahe": True}), torch.from_numpy(images), labels)


@pytest.mark.parametrize("clahe, limit, resident", [(False, 1 << 20, True), (False, 100, False), (True, 1 << 20, False)])
def test_training_images_go_to_the_device_once_when_they_fit_and_clahe_is_off(clahe, limit, resident):
    from covid_sweep.training.train import batches

    images, labels = _numbered(16)  # 768 bytes
    config = build_config({"batch_size": 4, "input_size": 32, "augment_on": "device", "clahe": clahe})
    loader = batches(config, images, labels, torch.device("meta"), limit)  # meta: a device without its memory
    assert isinstance(loader.images, torch.Tensor) is resident
    assert not resident or loader.images.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_batches_from_images_on_cuda_are_the_batches_of_the_array():
    images, labels = _numbered(37)
    config = build_config({"batch_size": 8, "input_size": 32})
    on_gpu = CachedBatches(config, torch.from_numpy(images).cuda(), labels)
    assert _epochs(on_gpu) == _epochs(CachedBatches(config, images, labels))
    batch, y = next(iter(on_gpu))
    assert batch.device.type == "cuda" and y.device.type == "cuda"

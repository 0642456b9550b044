import math

import numpy as np
import pytest
import torch
from torch import nn

from covid_sweep.core.config import build_config
from covid_sweep.data.layout import cached_images, load_split
from covid_sweep.model import runtime as inference
from covid_sweep.model.networks import build_model
from covid_sweep.model.preprocessing import to_model_input
from covid_sweep.training.train import TrainingError, fit


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18")


def _fingerprint(result) -> tuple:
    return tuple(r["train_loss"] for r in result.history), tuple(np.round(result.val_probs, 6))


@pytest.fixture
def arrays(tiny_data):
    split = load_split(tiny_data, "train")
    images = np.asarray(cached_images(split, 32))
    labels = np.asarray(split.labels)
    return images[:16], labels[:16], images[16:], labels[16:]


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_only_where_the_device_runs_it_natively(monkeypatch, native):
    monkeypatch.setattr(inference, "native_bf16", lambda device: native)
    layer, x = nn.Linear(4, 2), torch.randn(3, 4)
    with inference.bf16_autocast(torch.device("cpu")):
        on = layer(x).dtype
    with inference.bf16_autocast(torch.device("cpu"), enabled=False):  # amp=False in the TrialConfig
        off = layer(x).dtype
    assert on == (torch.bfloat16 if native else torch.float32) and off == torch.float32


@pytest.mark.parametrize("cuda_answer", [True, False])
def test_native_bf16_asks_the_hardware(monkeypatch, cuda_answer):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_answer)
    assert inference.native_bf16(torch.device("cuda")) is cuda_answer
    assert inference.native_bf16(torch.device("cpu")) is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert inference.native_bf16(torch.device("meta")) is False


def test_bf16_on_a_native_cpu_predicts_nearly_what_fp32_does(arrays):
    if not inference.native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX): autocast stays off here")
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    x = to_model_input(torch.from_numpy(np.array(arrays[0])))  # a writable copy of the cache rows
    with torch.no_grad():
        fp32 = torch.softmax(model(x), dim=1)[:, 1].numpy()
        with inference.bf16_autocast(torch.device("cpu")):
            bf16 = torch.softmax(model(x).float(), dim=1)[:, 1].numpy()
    assert not np.array_equal(fp32, bf16)        # bf16 really ran
    assert np.abs(fp32 - bf16).max() < 0.05      # and rounds, not changes, the answer


def test_validation_is_scored_in_fp32_like_predict_even_when_training_in_bf16(arrays):
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 1, "batch_size": 8, "amp": True,
                           "device": "cpu"})
    result = fit(config, build_model("resnet18"), *arrays, progress=False)
    model = build_model("resnet18")
    model.load_state_dict(result.best_state)
    again = inference.predict_probs(model, arrays[2], 8, torch.device("cpu"))
    assert np.allclose(result.val_probs, again, atol=1e-6)


def test_validation_images_go_to_the_gpu_once_when_they_fit_and_score_the_same(arrays):
    val = arrays[2]
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert isinstance(inference.resident_images(val, cpu), np.ndarray)  # the CPU scores the array itself
    assert isinstance(inference.resident_images(val, gpu, limit=val.nbytes - 1), np.ndarray)  # too big: per batch
    model = _model().eval()
    from_array = inference.predict_probs(model, val, 3, cpu)  # 8 images: batches of 3, 3 and 2
    from_tensor = inference.predict_probs(model, torch.from_numpy(np.array(val)), 3, cpu)
    assert from_array.dtype == np.float32 and from_array.shape == (8,)
    assert np.array_equal(from_array, from_tensor)
    assert inference.predict_probs(model, val[:0], 3, cpu).shape == (0,)  # no images: no probabilities, no error


def test_fit_on_images_kept_on_the_device_trains_as_on_the_arrays(arrays, monkeypatch):
    """On a GPU fit keeps its images there (training batches gathered, validation scored there); on the CPU the
    arrays are used as they are. CPU tensors stand in for the GPU's: the same batches, the same training."""
    from covid_sweep.training import train

    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 4, "device": "cpu",
                           "augment_on": "device", "hflip": True, "rotate": True, "amp": False})
    on_arrays = fit(config, _model(), *arrays, progress=False)
    kept = []

    def to_device(images, device, limit=0):
        kept.append(torch.from_numpy(np.array(images)))
        return kept[-1]

    monkeypatch.setattr(train, "resident_images", to_device)
    on_device = fit(config, _model(), *arrays, progress=False)
    assert [k.shape[0] for k in kept] == [len(arrays[2]), len(arrays[0])]  # validation, then training
    assert _fingerprint(on_device) == _fingerprint(on_arrays)
    assert all(torch.equal(on_device.best_state[k], v) for k, v in on_arrays.best_state.items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_validation_images_resident_on_cuda_score_as_on_the_cpu(arrays):
    val, gpu = arrays[2], torch.device("cuda")
    kept = inference.resident_images(val, gpu)
    assert isinstance(kept, torch.Tensor) and kept.device.type == "cuda" and kept.dtype == torch.uint8
    model = _model().eval()
    on_cpu = inference.predict_probs(model, val, 3, torch.device("cpu"))
    on_gpu = inference.predict_probs(model.to(gpu), kept, 3, gpu)
    assert np.allclose(on_cpu, on_gpu, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_keeps_the_best_weights_on_the_cpu_in_the_result(arrays):
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8, "device": "cuda"})
    result = fit(config, build_model("resnet18", device="cuda"), *arrays, progress=False)
    assert {v.device.type for v in result.best_state.values()} == {"cpu"}
    model = build_model("resnet18")
    model.load_state_dict(result.best_state)  # what the artifact is written from


def test_history_has_every_metric_each_epoch(arrays):
    seen = []
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8})
    result = fit(config, build_model("resnet18"), *arrays, on_epoch=seen.append, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2] and seen == result.history
    for record in result.history:
        for key in ("train_loss", "val_loss", "val_acc", "val_auc", "val_f1", "val_sensitivity", "val_specificity", "lr"):
            assert key in record and math.isfinite(record[key])
    assert result.best["epoch"] == result.best_epoch
    assert result.val_probs.shape == (8,) and set(result.best_state) == set(build_model("resnet18").state_dict())


def test_early_stop_after_patience_epochs_without_improvement(arrays, monkeypatch):
    # val_loss scripted to get worse after epoch 1: BatchNorm statistics move even at a zero learning
    # rate, so a real val_loss can still improve by a hair
    import covid_sweep.training.train as train_module

    losses, evaluate = iter([0.5 + 0.1 * i for i in range(10)]), train_module._evaluate

    def scripted(*args, **kwargs):
        metrics, probs = evaluate(*args, **kwargs)
        return {**metrics, "val_loss": next(losses)}, probs

    monkeypatch.setattr(train_module, "_evaluate", scripted)
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 10, "batch_size": 8,
                           "patience": 2, "monitor": "val_loss"})
    result = fit(config, build_model("resnet18"), *arrays, progress=False)
    assert len(result.history) == 3 and result.best_epoch == 1


def test_stop_request_ends_cleanly_and_keeps_history(arrays):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3  # two batches per epoch: stop inside epoch 2

    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 5, "batch_size": 8})
    result = fit(config, build_model("resnet18"), *arrays, should_stop=should_stop, progress=False)
    assert result.stopped and len(result.history) == 1


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3))[:, None] * self.w).repeat(1, 2) * float("nan")


def test_nan_loss_is_a_training_error(arrays):
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8})
    with pytest.raises(TrainingError, match="training loss became nan at epoch 1"):
        fit(config, NaNNet(), *arrays, progress=False)


@pytest.mark.parametrize("knobs", [
    {"label_smoothing": 0.1}, {"mixup": 1.0}, {"ema": 0.9}, {"warmup_epochs": 1}, {"scheduler": "onecycle"},
    {"optimizer": "sgd"}, {"optimizer": "adam"},
    {"random_resized_crop": True, "brightness_contrast": True, "gamma": True, "cutout": True, "clahe": True},
])
def test_recipe_knobs_change_training(arrays, knobs):
    # same seed, same initial weights: only the knob differs, so a knob fit ignores gives the baseline's numbers
    base = {"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8}
    plain = fit(build_config(base), _model(), *arrays, progress=False)
    tuned = fit(build_config({**base, **knobs}), _model(), *arrays, progress=False)
    assert len(tuned.history) == 2 and all(math.isfinite(r["train_loss"]) for r in tuned.history)
    assert _fingerprint(tuned) != _fingerprint(plain)


def test_same_seed_and_weights_train_the_same(arrays):
    # what makes the knob comparison above meaningful: without a knob, two fits agree exactly
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 2, "batch_size": 8, "mixup": 1.0,
                           "hflip": True})
    first = fit(config, _model(), *arrays, progress=False)
    assert _fingerprint(fit(config, _model(), *arrays, progress=False)) == _fingerprint(first)


def test_warmup_ramps_the_learning_rate(arrays):
    config = build_config({"backbone": "resnet18", "input_size": 32, "epochs": 3, "batch_size": 8,
                           "warmup_epochs": 2, "lr": 1e-3, "patience": 5})
    lrs = [r["lr"] for r in fit(config, build_model("resnet18"), *arrays, progress=False).history]
    assert lrs[0] < lrs[1] <= 1e-3


def test_ema_model_is_what_gets_scored(arrays):
    # same initial weights and seed: the raw weights train identically, so scores differ only if EMA's are scored
    base = {"backbone": "resnet18", "input_size": 32, "epochs": 1, "batch_size": 8}
    plain = fit(build_config(base), _model(), *arrays, progress=False)
    smoothed = fit(build_config({**base, "ema": 0.5}), _model(), *arrays, progress=False)
    assert not np.allclose(plain.val_probs, smoothed.val_probs)
    kept = build_model("resnet18")
    kept.load_state_dict(smoothed.best_state)
    assert np.allclose(inference.predict_probs(kept, arrays[2], 8, torch.device("cpu")), smoothed.val_probs, atol=1e-6)


@pytest.mark.parametrize("where", ["cpu", "device"])
def test_both_augmentation_paths_train_reproducibly_with_every_toggle(arrays, where):
    toggles = {t: True for t in ("hflip", "rotate", "random_resized_crop", "blur", "clahe", "brightness_contrast",
                                 "gamma", "sepia", "cutout")}
    config = build_config({"input_size": 32, "epochs": 1, "batch_size": 8, "augment_on": where, **toggles})
    first = fit(config, _model(), *arrays, progress=False)
    assert math.isfinite(first.history[0]["train_loss"])
    assert _fingerprint(fit(config, _model(), *arrays, progress=False)) == _fingerprint(first)

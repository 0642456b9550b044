import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from covid_sweep.cli import main
from covid_sweep.core.config import build_config
from covid_sweep.inference.explain import grad_cam, most_confident
from covid_sweep.model.artifact import load_artifact
from covid_sweep.model.networks import build_model
from covid_sweep.training.trial import run_trial


def test_most_confident_right_and_wrong():
    probs = np.array([0.99, 0.6, 0.02, 0.9, 0.1])
    labels = np.array([1, 1, 0, 0, 1])
    assert most_confident(probs, labels, 0.5, 2) == [0, 2, 3, 4]


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_grad_cam_maps_are_normalised_per_image(name):
    images = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    maps = grad_cam(build_model(name), images)
    assert maps.shape == (2, 48, 48) and maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_explain_cli_writes_overlays(tiny_config_values, tiny_data, tmp_path):
    result = run_trial(build_config(tiny_config_values), tmp_path / "model", progress=False)
    out = tmp_path / "cams"
    cli = CliRunner().invoke(main, ["explain", "--model", str(result.artifact), "--data", str(tiny_data),
                                    "--out", str(out), "-n", "2"])
    assert cli.exit_code == 0, cli.output
    files = sorted(out.glob("*.png"))
    assert 2 <= len(files) <= 4 and any(f.name.startswith("right-") for f in files)
    image = cv2.imread(str(files[0]))
    assert image.shape == (32, 64, 3)  # the input beside its overlay
    (tiny_data / "test_labels.csv").unlink()
    missing = CliRunner().invoke(main, ["explain", "--model", str(result.artifact), "--data", str(tiny_data),
                                        "--out", str(out)])
    assert missing.exit_code == 1 and "test_labels.csv: no labels" in missing.output


def test_export_skips_overlays_without_test_labels(tiny_config_values, tiny_data, tmp_path):
    from covid_sweep.inference.export.gradcam import explain_if_labelled, gradcam_section

    artifact = load_artifact(run_trial(build_config(tiny_config_values), tmp_path / "m", progress=False).artifact)
    (tiny_data / "test_labels.csv").unlink()
    explained = explain_if_labelled(artifact, tiny_data, tmp_path / "cams")
    assert explained == [] and not (tmp_path / "cams").exists()
    # and the card says why there are none, instead of an empty section
    section = "\n".join(gradcam_section(explained))
    assert "No overlays" in section and "![" not in section

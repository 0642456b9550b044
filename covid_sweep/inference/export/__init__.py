"""Exporting a trained model: the model (safetensors + TorchScript), its model card, and the export folder they live in.

torchscript: the self-contained prediction file; model_card: model_card.md and its loading code; gradcam: the
card's Grad-CAM section; bundle: the export folder, staged and installed.
"""

from covid_sweep.inference.export.bundle import ExportResult, check_out_dir, export_bundle, install
from covid_sweep.inference.export.errors import ExportError
from covid_sweep.inference.export.model_card import Provenance, loading_code, model_card
from covid_sweep.inference.export.torchscript import EXTRA_FILE, TORCHSCRIPT, export_torchscript, write_model_dir

__all__ = ["EXTRA_FILE", "TORCHSCRIPT", "ExportError", "ExportResult", "Provenance", "check_out_dir", "export_bundle",
           "export_torchscript", "install", "loading_code", "model_card", "write_model_dir"]

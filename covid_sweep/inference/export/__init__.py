"""Exporting a trained model: the model (safetensors + TorchScript), its model card and the export folder.

All in bundle.py for now.
"""

from covid_sweep.inference.export.bundle import (
    EXTRA_FILE,
    TORCHSCRIPT,
    ExportError,
    ExportResult,
    Provenance,
    check_out_dir,
    export_bundle,
    export_torchscript,
    install,
    loading_code,
    model_card,
    write_model_dir,
)

__all__ = ["EXTRA_FILE", "TORCHSCRIPT", "ExportError", "ExportResult", "Provenance", "check_out_dir", "export_bundle",
           "export_torchscript", "install", "loading_code", "model_card", "write_model_dir"]

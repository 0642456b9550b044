"""An exported TorchScript file, loaded and run as a user would: torch.jit.load, no covid_sweep."""

from __future__ import annotations


def scripted_probs(path, images):
    """Probabilities of an exported TorchScript file for uint8 NHWC images (an ensemble's: a list of batches, one
    per input size), as a user would load it."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, not ours
        scripted = torch.jit.load(str(path))
    with torch.no_grad():
        if isinstance(images, list):
            return scripted([torch.from_numpy(batch) for batch in images]).numpy()
        return scripted(torch.from_numpy(images)).numpy()

"""Inference: predictions, submissions, TTA reports, Grad-CAM, estimates and export from a trained artifact.
Imports core, data and model; never training."""

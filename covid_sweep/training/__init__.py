"""Training: augmentation, the training loop and one whole trial. Imports core, data, model and tracking."""

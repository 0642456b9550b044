"""Tracking: W&B runs (tracker) and the W&B public API (wandb_api); the only place that talks to W&B.
Imports core and data."""

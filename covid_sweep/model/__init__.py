"""Model: networks, the device/precision/forward helpers, preprocessing and the saved artifact.
Imports core and data."""

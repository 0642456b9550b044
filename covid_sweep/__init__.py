"""covid-sweep: W&B sweeps for COVID-19 chest-CT slice classifiers, online or air-gapped."""

import os

# albumentations asks PyPI for a newer version on import: a warning and a DNS wait on air-gapped GPU boxes,
# and a network call in every trial process. Set before any submodule imports it; children inherit it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

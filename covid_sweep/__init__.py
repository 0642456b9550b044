"""covid-sweep: W&B sweeps for COVID-19 chest-CT slice classifiers, online or air-gapped."""

__version__ = "0.1.0"

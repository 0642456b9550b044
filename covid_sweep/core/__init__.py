"""Core: what every layer shares: errors, paths, atomic files, trial states, goals, backbone names, the trial
config and binary metrics. Torch-free; imports no other layer."""

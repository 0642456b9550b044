"""Data: the competition layout on disk, patient groups, validation splits, leakage checks and fetching public
data sets. Imports core only."""

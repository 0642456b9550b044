"""Sweeps, in three packages that import each other only downward:

store/    where a sweep lives: sweeps, trials, per-epoch metrics, aliases (SQLite or PostgreSQL)
control/  what runs it: the sweep spec, W&B's engine, the controller, the launcher, the trial entry, promotion
views/    what shows it: status, the live view, the HTML report, parameter importance

control/ and views/ both stand on store/ and never import each other.
"""

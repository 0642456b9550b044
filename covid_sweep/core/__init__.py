"""Layer 0: what every layer shares and nothing else imports into: errors, paths, atomic files, trial states,
goals, backbone names, the trial config and binary metrics. Imports no other layer."""

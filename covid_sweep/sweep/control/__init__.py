"""Running a sweep: the spec (spec.py), W&B's engine (engine.py), the controller and its launcher, the trial
entry and its side of the protocol (trial_entry.py, protocol.py, child.py), and promotion (promote.py)."""

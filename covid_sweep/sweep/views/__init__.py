"""What a person sees of a sweep: the status table (status.py), the live view (live.py), the HTML report
(report_*.py) and parameter importance (importance.py)."""

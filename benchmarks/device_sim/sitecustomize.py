"""Put this folder on PYTHONPATH to run as if on the lent GPU machine, where these packages are not installed
(/work/.library/device/KINDS.md, "Python packages already there") and .device/ does not bring them
(../shared/tools/device-bundle: only what the benchmark and the trials need).

Python imports `sitecustomize` at start-up in every process, so the block reaches the `covid-sweep sweep`
subprocesses, the fork server and the trials forked from it. `sys.modules[name] = None` is what Python itself
uses for "known missing": `import name` raises ModuleNotFoundError and importlib.util.find_spec(name) is None,
as on that machine. benchmarks/gpu_check.sh uses it for its CPU dry run (GPU_CHECK_SIMULATE=1), and
tests/test_imports.py to keep the trial and sweep path free of these imports.
"""

import sys

# covid-sweep's dependencies (and theirs) that only fetch-data, the HTML report, a PostgreSQL store or the tests
# use, plus sniffio (cwevals, under wandb, declares it and never imports it)
LACKING = ("plotly", "sqlalchemy", "psycopg", "psycopg_binary", "openpyxl", "et_xmlfile", "pyte", "sniffio")

for _name in LACKING:
    sys.modules[_name] = None

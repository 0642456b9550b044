"""fetch-data: public data sets, fetched once and written in the competition layout (all in download.py for now)."""

from covid_sweep.data.fetch.download import (
    BASE_URL_ENV,
    DATASETS,
    DEFAULT_BASE_URL,
    MARKER,
    SOURCE_FILES,
    UCSD,
    FetchError,
    cache_root,
    fetch,
    resolve_data,
    summary,
)

__all__ = ["BASE_URL_ENV", "DATASETS", "DEFAULT_BASE_URL", "MARKER", "SOURCE_FILES", "UCSD", "FetchError", "cache_root",
           "fetch", "resolve_data", "summary"]

"""The data package's user-facing error; its own module so that the image and cache modules can raise it
without importing the layout (which imports them)."""

from __future__ import annotations

from covid_sweep.core.errors import UserError


class DataError(UserError, ValueError):
    """The data set is not in the competition layout; the message names the file, row or column."""

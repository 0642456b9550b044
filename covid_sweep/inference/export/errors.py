"""The one error of exporting: its own type so promotion can tell it from others."""

from covid_sweep.core.errors import UserError


class ExportError(UserError, RuntimeError):
    """The export folder cannot be written, or the exported model disagrees with the original."""

"""The base of every error a user can cause: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """Bad input (data, config, sweep YAML, submission...); the message names the file, row or field."""

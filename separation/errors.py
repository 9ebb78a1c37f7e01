"""The error a user can fix: a bad path, a refused option, a full disk.

A script's ``main`` raises :class:`UserError` and ``cli.run_cli`` prints it as one line and exits
with status 2. Library functions raise ``ValueError`` for values out of their range instead. It
has a module of its own so that every part of the toolbox can raise it without importing the
command-line helpers (``files`` raises it, and ``cli`` releases ``files``' locks).
"""


class UserError(Exception):
    """An error the user can fix. Scripts print it as one line and exit with status 2."""

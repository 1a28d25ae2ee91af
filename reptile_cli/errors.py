"""The one domain error type. The CLI turns it into a single line on stderr and its exit code.

Exit codes (the public contract, README "Exit codes"):
0 done; 1 error; 2 bad usage or config; 3 stopped on a time budget or signal, resumable.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3


class ReptileError(Exception):
    """An error the user can act on. ``str(err)`` is one line saying what was wrong and how to fix it.

    Args:
        message: one line, no traceback; say what was wrong and what to do.
        exit_code: process exit code the CLI uses (``EXIT_ERROR`` or ``EXIT_USAGE``).
    """

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class ConfigError(ReptileError):
    """A bad override, key, type or combination of settings (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


class DataError(ReptileError):
    """Missing, corrupt or unsuitable data: a failed checksum, a bad archive, a class too small."""

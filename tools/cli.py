"""The command-line error contract: a user error is one line `error: ...` and exit code 2."""
import argparse
import sys

from tools.files import SaveError


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, SaveError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error contract: a bad argument prints one line
    `error: ...` (naming the argument and the value) and exits with code 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        fail(message)


def fail(message):
    """End a command-line program on a user error: one line on stderr, exit code 2."""
    message = " ".join(str(message).split())  # one line, whatever the message holds
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)

"""The one exit convention of every script: an input error is one line on stderr (`error: FILE[:LINE]: what`) and
exit status 2, never a traceback."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, NoReturn

from dpr.utils.io import InputError

INPUT_ERROR_STATUS = 2


class InputErrorExit(SystemExit):
    """SystemExit with status INPUT_ERROR_STATUS whose str() is the message (for callers that catch it)."""

    def __init__(self, message: str):
        super().__init__(INPUT_ERROR_STATUS)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(message: str) -> NoReturn:
    """Print `error: message` as one line on stderr and exit with INPUT_ERROR_STATUS."""
    line = " ".join(str(message).split())
    print(f"error: {line}", file=sys.stderr, flush=True)
    raise InputErrorExit(line)


def report(error: Exception) -> int:
    """Print `error: message` as one line on stderr and return INPUT_ERROR_STATUS (for `sys.exit(main())`)."""
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
    return INPUT_ERROR_STATUS


@contextlib.contextmanager
def input_errors_exit(*extra: type[Exception]) -> Iterator[None]:
    """Turn an InputError (and the `extra` exception types) raised in the block into `fail`."""
    try:
        yield
    except (InputError, *extra) as e:
        fail(str(e))

"""The one exit convention of every script: an input error is one line on stderr (`error: FILE[:LINE]: what`) and
exit status 2, never a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

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


def report(error: Exception, hint: str = "") -> int:
    """Print `error: message[; hint]` as one line on stderr and return INPUT_ERROR_STATUS."""
    line = " ".join(str(error).split()) + (f"; {hint}" if hint else "")
    print(f"error: {line}", file=sys.stderr, flush=True)
    return INPUT_ERROR_STATUS


def run_script(body: Callable[[], object], *extra: type[Exception], hint: str = "") -> int:
    """The one entry of every script (`sys.exit(run_script(...))`, or `return run_script(...)` from a `main` that
    returns a status): 0 when `body` returns; INPUT_ERROR_STATUS after one `error:` line on stderr when it raises an
    InputError (or one of `extra`), `hint` appended, or when a `fail` inside has already printed its line."""
    try:
        body()
    except InputErrorExit as e:
        return int(e.code)
    except (InputError, *extra) as e:
        return report(e, hint)
    return 0

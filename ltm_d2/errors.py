"""
Errors a user causes and can fix (a config, a file, a dataset, a command line) and how the
programs end on them: with a short message and exit status 2, without a traceback, which
LTM_D2_DEBUG=1 shows again. Every other exception is a bug and keeps its traceback.
"""

import logging
import os
import sys
from typing import Callable

# Exit status of a program ended by a UserError (as argparse exits on a bad command line).
USER_ERROR_EXIT = 2
# Exit status of a program ended by Ctrl-C (SIGINT), as shells report it: 128 + 2.
INTERRUPTED_EXIT = 130
DEBUG_VARIABLE = "LTM_D2_DEBUG"


class UserError(Exception):
    """An error in what the user gave the program; its message says what, where and what to do."""


def debugging() -> bool:
    """Whether LTM_D2_DEBUG asks for the tracebacks of user errors too."""
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def report_and_exit(error: UserError) -> None:
    """Print `error` as a message alone and exit with USER_ERROR_EXIT."""
    hint = f"(traceback: run again with {DEBUG_VARIABLE}=1)"
    print(f"Error: {error}\n{hint}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT)


class UserErrorTracebackFilter(logging.Filter):
    """
    A logging filter that logs a UserError with its message in place of its traceback (kept with
    LTM_D2_DEBUG=1). Detectron2's trainer logs the traceback of whatever ends training before
    re-raising it, which would print a user error's traceback after all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserError) and not debugging():
            record.msg, record.args = f"{record.getMessage()} {error}", ()
            record.exc_info = record.exc_text = None
        return True


def run_main(main: Callable, *args):
    """`main(*args)`; a UserError ends the program with its message (:func:`report_and_exit`),
    or, with LTM_D2_DEBUG=1, with its traceback."""
    try:
        return main(*args)
    except UserError as e:
        if debugging():
            raise
        report_and_exit(e)

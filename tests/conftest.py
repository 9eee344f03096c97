"""Fixtures shared by the tests; their helper functions are in tests/support/."""

import logging

import pytest

from support import CUDA


@pytest.fixture(params=["cpu", CUDA])
def device(request):
    """The CPU, then CUDA (skipped without a GPU)."""
    return request.param


@pytest.fixture
def storage():
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as s:
        yield s


@pytest.fixture(autouse=True)
def no_logging_to_closed_streams():
    """After each test, remove the log handlers that write to a stream the test closed: a script
    run in-process under `capsys` sets up Detectron2's logger on the captured stdout, which is
    closed when the test ends; a later test's log would end in "--- Logging error ---"."""
    yield
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)

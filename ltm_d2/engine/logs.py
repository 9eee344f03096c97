"""
What is logged while a run is being set up, before its log file exists: held, then logged where
the log goes, so that the warnings of loading a config and its datasets reach OUTPUT_DIR/log.txt.
"""

import contextlib
import logging
from typing import Iterator, List

__all__ = ["log_records_held"]


class _HeldRecords(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def log_records_held(name: str) -> Iterator[None]:
    """
    Hold the records logged under the logger `name` inside the block; after it, log them again
    through the handlers their loggers have then (those Detectron2's `setup_logger` added in the
    block, or, should the block fail before, Python's last resort, stderr), in their order.
    """
    held = _HeldRecords()
    logger = logging.getLogger(name)
    logger.addHandler(held)
    try:
        yield
    finally:
        logger.removeHandler(held)
        for record in held.records:
            logging.getLogger(record.name).handle(record)

"""What is logged before a run's log file exists is held, then logged there."""

import logging

import pytest

from ltm_d2.engine.logs import log_records_held


class Listed(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_records_logged_before_the_log_is_set_up_reach_its_handler_in_their_order():
    logger, listed = logging.getLogger("ltm_d2_held.a"), Listed()
    with log_records_held("ltm_d2_held.a"):
        logger.warning("first")
        logging.getLogger("ltm_d2_held.a.child").warning("second")
        assert listed.messages == []
        logger.addHandler(listed)  # as setup_logger adds the log file's
    assert listed.messages == ["first", "second"]
    logger.removeHandler(listed)


def test_records_held_in_a_block_that_fails_are_still_logged(caplog):
    logger = logging.getLogger("ltm_d2_held.b")
    with pytest.raises(ValueError):
        with log_records_held("ltm_d2_held.b"):
            logger.warning("said before the failure")
            raise ValueError
    assert "said before the failure" in caplog.text  # by the handlers there are

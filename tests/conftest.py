"""Fixtures shared by the tests; their helper functions are in tests/support/."""
import pytest


@pytest.fixture
def storage():
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as s:
        yield s

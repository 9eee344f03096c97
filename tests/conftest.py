"""Fixtures shared by the tests; their helper functions are in tests/support/."""

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

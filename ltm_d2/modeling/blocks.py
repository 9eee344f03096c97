"""
Blocks of rows that bound the memory of the matching. Work over objects x anchors (IoU matrices)
and over anchors x classes (the background term) is done a block of rows at a time, each block
holding at most PAIRS_PER_BLOCK elements, so that no (objects, anchors) or (anchors, classes)
intermediate is ever held whole, whatever the number of objects.
"""

from typing import List

PAIRS_PER_BLOCK = 2**20


def row_blocks(num_rows: int, row_length: int) -> List[slice]:
    """Consecutive slices covering range(num_rows), each of at most PAIRS_PER_BLOCK elements."""
    step = max(1, PAIRS_PER_BLOCK // max(1, row_length))
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]

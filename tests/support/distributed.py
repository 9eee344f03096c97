"""The comparison of a run of several workers with one process on the union of their batches."""

import torch

# float32 sums taken in another order (all-reduce, then DDP's averaging) differ in the last digits.
RTOL, ATOL = 1e-4, 1e-6


def assert_close_per_parameter(distributed: dict, single: dict) -> None:
    """The tensors of the workers' run, by parameter name, equal those of the single process."""
    assert distributed.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=RTOL, atol=ATOL, msg=name)

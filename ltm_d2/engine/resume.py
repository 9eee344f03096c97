"""
What a resumed run needs, besides the position in the stream of training images
(ltm_d2/data/build.py, TrainLoader.skip): the state of the random generators that augment them.
"""

import random
from typing import Any, Dict

import numpy as np
import torch

from detectron2.engine import HookBase
from detectron2.utils import comm


class RandomStateHook(HookBase):
    """
    Puts the state of Python's, numpy's and torch's global random generators (which draw the
    augmentations) into the trainer's checkpoints, and restores it on resume. Only for one
    process: with several workers only worker 0 writes checkpoints, so each worker keeps the
    generators that cfg.SEED gave it.
    """

    def state_dict(self) -> Dict[str, Any]:
        if comm.get_world_size() > 1:
            return {}
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            # numpy's key array as a tensor, so that torch.load(weights_only=True) reads it
            "numpy": (
                name,
                torch.from_numpy(keys.astype(np.int64)),
                position,
                has_gauss,
                cached_gaussian,
            ),
            "torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if comm.get_world_size() > 1:
            return
        name, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        random.setstate(state_dict["python"])
        np.random.set_state(
            (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
        )
        torch.set_rng_state(state_dict["torch"])

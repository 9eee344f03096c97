"""
What a resumed run needs to continue exactly where the checkpointed one was: the position in the
stream of training images, and the state of the random generators that augment them.
"""
import itertools
import logging
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from detectron2.data import build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """
    Detectron2's TrainingSampler (the same infinite stream of shuffled indices, shared out between
    the workers), whose stream starts at index `start` instead of 0: a run resumed after N images
    of the global stream sets `start = N` and gets the images the interrupted run would have got.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        stream = self._infinite_indices()
        yield from itertools.islice(stream, self.start + self._rank, None, self._world_size)


class ResumableTrainLoader:
    """
    Detectron2's training data loader, with the sampler whose position a resumed run sets.

    Every iteration takes exactly IMS_PER_BATCH images of the sampler's stream when
    DATALOADER.NUM_WORKERS is 0 and all images fall into one aspect-ratio group (or grouping is
    off); a resumed run then sees the same batches as an uninterrupted one. Otherwise it
    continues at the same place of the stream, but the few images that loader workers or
    aspect-ratio groups held at the checkpoint may be taken in another order.
    """

    def __init__(self, loader, sampler: Optional[ResumableTrainingSampler]):
        self.loader = loader
        self.sampler = sampler

    def __iter__(self):
        return iter(self.loader)

    def skip(self, num_images: int) -> None:
        """Start the stream after `num_images` images (of all workers together); before iterating."""
        if self.sampler is not None:
            self.sampler.start = num_images
        elif num_images:
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN is not TrainingSampler: the resumed run starts its data "
                "stream from the beginning."
            )


def build_resumable_train_loader(cfg, mapper=None) -> ResumableTrainLoader:
    """
    `build_detection_train_loader(cfg, mapper)` with a ResumableTrainingSampler in place of its
    TrainingSampler (same seed), and with the DataLoader's own generator seeded from cfg.SEED
    (when set), so that creating the loader draws nothing from torch's global generator.
    """
    kwargs = build_detection_train_loader.from_config(cfg, mapper)
    sampler = kwargs["sampler"]
    if type(sampler) is TrainingSampler:
        sampler = ResumableTrainingSampler(len(kwargs["dataset"]), seed=sampler._seed)
        kwargs["sampler"] = sampler
    else:
        sampler = None
    seed = cfg.SEED + comm.get_rank() if cfg.SEED >= 0 else None
    return ResumableTrainLoader(build_detection_train_loader(**kwargs, seed=seed), sampler)


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
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if comm.get_world_size() > 1:
            return
        name, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        random.setstate(state_dict["python"])
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])

"""Training hooks of the project (docs/reliability.md)."""

import logging

from detectron2.engine import HookBase

from ..data.mapper import SkippedImages
from ..errors import UserError

logger = logging.getLogger(__name__)


class TooManyBadImagesError(UserError, RuntimeError):
    """More of the training images could not be read than DATALOADER.MAX_BAD_IMAGE_FRACTION."""


class SkippedImageMonitor(HookBase):
    """
    Reports the training images that the data loader skipped as unreadable: their number as the
    EventStorage scalar "data/skipped_images" at every iteration and in the log at the end. Stops
    the run once more than `max_fraction` of the training images were skipped.
    """

    def __init__(self, skipped: SkippedImages, max_fraction: float):
        self.skipped = skipped
        self.max_fraction = max_fraction

    def after_step(self):
        count, total = self.skipped.count, self.skipped.num_images
        self.trainer.storage.put_scalar("data/skipped_images", count, smoothing_hint=False)
        if count > self.max_fraction * total:
            raise TooManyBadImagesError(
                f"{count} of the {total} training images could not be read by iteration "
                f"{self.trainer.iter} ({count / total:.2%}), more than "
                f"DATALOADER.MAX_BAD_IMAGE_FRACTION = {self.max_fraction}; each is named in a "
                "'Skipping image' warning of the log. Fix or remove them from the annotation "
                "file, or raise DATALOADER.MAX_BAD_IMAGE_FRACTION."
            )

    def after_train(self):
        count = self.skipped.count
        if count:
            logger.warning(
                f"{count} of the {self.skipped.num_images} training images were skipped as "
                "unreadable; each is named in a 'Skipping image' warning of the log."
            )

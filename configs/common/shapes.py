"""
LTM on the bundled shapes dataset, trained from scratch on a CPU: the LazyConfig twin of
Shapes-Detection/Base-Shapes.yaml, on common/ltm.py. R-18 with GroupNorm, 128-channel FPN,
2-conv head, anchors twice the stride (16-256 px on P3-P7), 256 px inputs. The helpers below set
what the configs of Shapes-Detection/ change together.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler

from .ltm import dataloader, lr_multiplier, model, optimizer, train


def fpn_channels(model, channels: int) -> None:
    """The FPN's output channels, and the head's input and convolutions of that width."""
    model.backbone.out_channels = channels
    model.head.input_shape = [ShapeSpec(channels=channels)] * 5
    model.head.conv_dims = [channels] * len(model.head.conv_dims)


def input_size(dataloader, size: int) -> None:
    """Training and test images resized to `size` px (no scale jitter)."""
    dataloader.train.mapper.augmentations[0].short_edge_length = (size,)
    dataloader.train.mapper.augmentations[0].max_size = size
    dataloader.test.mapper.augmentations[0].short_edge_length = size
    dataloader.test.mapper.augmentations[0].max_size = size


def schedule(max_iter: int, steps, warmup_iters: int):
    """Detectron2's schedule of SOLVER.MAX_ITER, STEPS (x0.1 at each) and WARMUP_ITERS (linear
    from 0.001), as its build_lr_scheduler makes it for a yacs config."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**k for k in range(len(steps) + 1)],
            milestones=list(steps),
            num_updates=max_iter,
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=0.001,
    )


# No pretrained weights: normalise by the data's own spread, not Caffe's (1, 1, 1).
model.pixel_std = [57.375, 57.120, 58.395]
resnet = model.backbone.bottom_up
resnet.freeze_at = 0
resnet.stem.norm = "GN"
resnet.stages.depth = 18
resnet.stages.norm = "GN"
del resnet.stages.stride_in_1x1  # R-18's basic blocks have no 1x1 convolution
model.backbone.top_block.in_channels = 512  # P6 from R-18's C5
model.backbone.norm = "GN"
fpn_channels(model, 128)
model.head.conv_dims = [128, 128]
model.head.norm = "GN"
model.num_classes = 6
model.anchor_generator.sizes = [
    [x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]
]

dataloader.train.dataset.names = "ltm_shapes_train"
dataloader.test.dataset.names = "ltm_shapes_val"
input_size(dataloader, 256)
dataloader.train.num_workers = 2
dataloader.test.num_workers = 2
# The batch and schedule are the totals over all workers, whatever their number.
dataloader.train.total_batch_size = 8

train.init_checkpoint = ""
train.checkpointer.period = 200

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

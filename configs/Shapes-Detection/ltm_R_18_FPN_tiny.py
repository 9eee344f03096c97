# A few iterations on the mini splits: for tests and smoke runs, not for accuracy. LazyConfig twin
# of ltm_R_18_FPN_tiny.yaml (without its multi-scale testing, which is of train_net.py).
from ..common.shapes import (
    dataloader,
    fpn_channels,
    input_size,
    model,
    optimizer,
    schedule,
    train,
)

# A fixed seed: every run trains the same model (ltm_R_18_FPN_tiny.yaml says why).
train.seed = 2
fpn_channels(model, 64)
dataloader.train.dataset.names = "ltm_shapes_mini_train"
dataloader.test.dataset.names = "ltm_shapes_mini_val"
input_size(dataloader, 128)
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 2
train.max_iter = 4
lr_multiplier = schedule(train.max_iter, steps=(3,), warmup_iters=0)
train.checkpointer.period = 2

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

# `make demo`'s run as a LazyConfig (twin of ltm_R_18_FPN_short.yaml, which says where its
# numbers come from): LTM from scratch on the 128 px splits, anchors and bag size K fitted to the
# tuning split, 1200 iterations of 8 images at a learning rate of 0.01, gradient clipping, mixed
# precision where the hardware has it:
#   python tools/lazyconfig_train_net.py \
#       --config-file configs/Shapes-Detection/ltm_R_18_FPN_short.py
from ..common.shapes import dataloader, input_size, model, optimizer, schedule, train

model.anchor_generator.sizes = [
    [16.0, 20.16, 25.4],
    [32.0, 40.32, 50.8],
    [64.0, 80.63, 101.59],
    [128.0, 161.27, 203.19],
    [256.0, 322.54, 406.37],
]
model.bag_size = 10
dataloader.train.dataset.names = "ltm_shapes_small_train"
dataloader.test.dataset.names = "ltm_shapes_small_val"
input_size(dataloader, 128)
dataloader.train.total_batch_size = 8
optimizer.lr = 0.01
train.max_iter = 1200
lr_multiplier = schedule(train.max_iter, steps=(840, 1080), warmup_iters=50)
train.amp.enabled = True
train.seed = 1

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

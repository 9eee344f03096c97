# RetinaNet (K anchors), R-50-FPN, 1x: each object's top-K anchors are its positives, no
# matching; RetinaNet's focal and box losses. 35.7 AP on COCO test-dev (paper Table 1).
# LazyConfig twin of retinanet_topk_R_50_FPN_1x.yaml.
from ..common.ltm import dataloader, lr_multiplier, model, optimizer, train

model.head.prior_prob = 0.01
model.matching = "topk"
model.bag_size = 40
optimizer.lr = 0.01
train.clip_grad.enabled = False

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

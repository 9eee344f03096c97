# LTM(M+) = FreeAnchor, R-50-FPN, 1x: 38.7 AP on COCO test-dev (paper Table 1). Defaults of the
# official FreeAnchor code (docs/method.md). LazyConfig twin of freeanchor_R_50_FPN_1x.yaml.
from ..common.ltm import dataloader, lr_multiplier, model, optimizer, train

model.matching = "freeanchor"
model.bag_size = 50
model.bbox_reg_weight = 0.75
model.match_smooth_l1_beta = 0.11
model.iou_threshold = 0.6
model.match_alpha = 0.5
model.match_gamma = 2.0
optimizer.lr = 0.01
train.clip_grad.enabled = False

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

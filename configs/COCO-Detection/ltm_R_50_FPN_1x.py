# LTM, R-50-FPN, 1x: 39.2 AP on COCO test-dev (paper Table 1, Table 6). LazyConfig twin of
# ltm_R_50_FPN_1x.yaml.
from ..common.ltm import dataloader, lr_multiplier, model, optimizer, train

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

from .anchor_generator import RoundedRatioAnchorGenerator
from .backbone import build_retinanet_resnet_fpn_p5_backbone
from .bags import anchor_bags, point_bags, sample_bags
from .ltm import LTM
from .ltm_af import LTMAF
from .matching import mean_max, negative_mean_max
from .test_time_augmentation import DenseDetectorWithTTA

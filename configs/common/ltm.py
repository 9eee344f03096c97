"""
LTM on RetinaNet, R-50-FPN, 1x on COCO (paper §3.2, §4.1): the LazyConfig twin of
COCO-Detection/ltm_R_50_FPN_1x.yaml (Base-LTM.yaml). Detectron2's own LazyConfig pieces (its
configs/common: RetinaNet, COCO data, SGD, the 1x schedule, the training keys of its
tools/lazyconfig_train_net.py) with only what differs set here; tools/lazyconfig_train_net.py
trains it.
"""

from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from ltm_d2.data.mapper import MarkingTestDatasetMapper
from ltm_d2.evaluation import build_evaluator
from ltm_d2.modeling import LTM

model = model_zoo.get_config("common/models/retinanet.py").model
model._target_ = LTM
model.backbone.bottom_up.freeze_at = 2
# The box coder of the authors' code; beta of Eq. 4 is tuned for it (docs/method.md).
model.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]
model.smooth_l1_beta = 0.11
model.head.prior_prob = 0.02
model.max_detections_per_image = 100  # RetinaNet's default, named for the evaluator below
# MODEL.LTM of the yacs configs (ltm_d2/config.py says what each is).
model.matching = "ltm"
model.bag_size = 40
model.bag_sample = 0
model.bbox_reg_weight = 0.5
model.match_smooth_l1_beta = 1.0 / 9.0
model.match_gamma = 2.0

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
# Shorter side 800, no scale jitter (the paper's inputs, §4.1).
dataloader.train.mapper.augmentations[0].short_edge_length = (800,)
dataloader.train.mapper.use_instance_mask = False
# Test images that cannot be read are left out of the evaluation, each named in a warning.
dataloader.test.mapper._target_ = MarkingTestDatasetMapper
# Pascal VOC mAP for a voc: dataset, COCO AP otherwise.
dataloader.evaluator = L(build_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_folder="${...train.output_dir}/inference",
    max_dets_per_image="${...model.max_detections_per_image}",
)

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.005  # the paper's 8 GPUs x 2 images

lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_1x

train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
# The box-regression weights of a RetinaNet head in init_checkpoint, where the file records none:
# (1.0, 1.0, 1.0, 1.0) for Detectron2's COCO RetinaNet, converted on loading (own_data.md).
train.init_checkpoint_bbox_reg_weights = ()
# The L2 norm of all gradients together clipped to 10, as the authors' code does (detrex's key;
# SOLVER.CLIP_GRADIENTS with CLIP_TYPE "full_model" in the yacs configs).
train.clip_grad = dict(enabled=True, params=dict(max_norm=10.0, norm_type=2.0))
# train.amp.enabled on a CPU: bfloat16 where the CPU computes it natively (engine/precision.py).
train.amp.precision = "float16"
# Training stops once more than this share of the training images could not be read.
train.max_bad_image_fraction = 0.01

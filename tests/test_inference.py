"""Inference is RetinaNet's: an LTM checkpoint in a plain RetinaNet gives identical detections."""

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import RetinaNet, build_model

from support import build_tiny_model, make_input, random_boxes, tiny_cfg


def test_ltm_checkpoint_loaded_into_retinanet_gives_identical_detections(tmp_path, device):
    ltm = build_tiny_model(seed=3, device=device)
    with torch.no_grad():  # move away from the initialisation so that there are detections
        for p in ltm.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        ltm.head.cls_score.bias.fill_(-1.0)
    DetectionCheckpointer(ltm, save_dir=str(tmp_path)).save("ltm")

    retinanet = build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "RetinaNet", device=device))
    assert type(retinanet) is RetinaNet
    DetectionCheckpointer(retinanet).load(str(tmp_path / "ltm.pth"))

    ltm.eval()
    retinanet.eval()
    images = [
        make_input(random_boxes(3, (96, 128), s), [0, 1, 2], (96, 128), seed=s) for s in range(2)
    ]
    with torch.no_grad():
        ours, theirs = ltm(images), retinanet(images)
    assert sum(len(r["instances"]) for r in ours) > 0
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)


def test_ltm_adds_no_parameters_to_retinanet():
    ltm = build_tiny_model()
    retinanet = build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "RetinaNet"))
    assert ltm.state_dict().keys() == retinanet.state_dict().keys()


def test_ltm_af_is_retinanet_with_one_point_per_location_and_detects(device):
    model = build_tiny_model("MODEL.META_ARCHITECTURE", "LTMAF", seed=2, device=device)
    retinanet = build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "RetinaNet"))
    assert model.state_dict().keys() == retinanet.state_dict().keys(), "no centerness, nothing new"
    assert model.head.cls_score.out_channels == model.num_classes
    assert model.head.bbox_pred.out_channels == 4
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-1.0)
    model.eval()
    image = make_input(random_boxes(2, (96, 128), 0), [0, 1], (96, 128))
    with torch.no_grad():
        (result,) = model([image])
    instances = result["instances"]
    assert len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all()


def test_ltm_af_points_start_with_boxes_outside_the_relu_dead_zone():
    model = build_tiny_model("MODEL.META_ARCHITECTURE", "LTMAF")
    image = make_input(random_boxes(1, (128, 128), 0), [0], (128, 128))
    with torch.no_grad():
        images = model.preprocess_image([image])
        features = model.backbone(images.tensor)
        _, deltas = model.head([features[f] for f in model.head_in_features])
    assert all((d > 0).all() for d in deltas)

"""Images larger than the network input: tiles for training, tiled detection merged by NMS."""

import json
import re

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper
from detectron2.structures import Boxes, BoxMode, Instances

from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.tiling.cutting import cut_boxes, tile_records, tile_windows
from ltm_d2.tiling.prediction import TiledDetector, tiled_test_mapper

from support import TINY_CONFIG, detecting_model, load_tool, record_of, run, tiny_cfg
from support.user_data import make_images, write_csv


def tile_boxes_in_image(tiles):
    """(N, 4) XYXY boxes of all tiles' annotations, shifted back to image pixels."""
    boxes = [
        np.asarray(a["bbox"]) + np.tile(t["tile"][:2], 2) for t in tiles for a in t["annotations"]
    ]
    return np.stack(boxes)


def sorted_rows(boxes):
    boxes = np.asarray(boxes)
    return boxes[np.lexsort(boxes.T[::-1])]


@pytest.mark.parametrize(
    "height, width, size, overlap",
    [(256, 320, 128, 0.2), (1000, 700, 256, 0.5), (100, 90, 128, 0.2), (130, 129, 128, 0.0)],
)
def test_windows_cover_the_image_and_stay_inside_it(height, width, size, overlap):
    windows = tile_windows(height, width, size, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert (
        (windows[:, :2] >= 0).all()
        and (windows[:, 2] <= width).all()
        and (windows[:, 3] <= height).all()
    )
    assert (windows[:, 2] - windows[:, 0] == min(size, width)).all()
    assert (windows[:, 3] - windows[:, 1] == min(size, height)).all()


def test_an_image_not_larger_than_a_tile_is_one_window_and_keeps_its_record_unchanged():
    assert tile_windows(96, 128, 128, 0.2).tolist() == [[0, 0, 128, 96]]
    record = record_of([[10, 10, 50, 40]], (96, 128))
    (same,) = tile_records([record], 128, 0.2, 0.5)
    assert same is record and "tile" not in same


def test_tiles_without_overlap_keep_every_box_exactly_once():
    # 2 x 3 tiles of 128 px; four boxes inside each tile, given as XYWH.
    windows = tile_windows(256, 384, 128, 0.0)
    assert len(windows) == 6
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 64, (6, 4, 2))  # (tiles, boxes, xy)
    sizes = rng.uniform(4, 64, (6, 4, 2))
    boxes = np.concatenate([corners, corners + sizes], -1) + np.tile(windows[:, None, :2], 2)
    boxes = boxes.reshape(-1, 4)  # (24, 4) XYXY
    tiles = tile_records([record_of(boxes, (256, 384), BoxMode.XYWH_ABS)], 128, 0.0, 0.5)
    assert [t["tile"] for t in tiles] == windows.tolist()
    assert all(t["height"] == t["width"] == 128 and t["image_id"] == 7 for t in tiles)
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for t in tiles for a in t["annotations"])
    np.testing.assert_allclose(
        sorted_rows(tile_boxes_in_image(tiles)), sorted_rows(boxes), atol=1e-9
    )


def test_a_box_mostly_outside_a_tile_is_dropped_and_one_mostly_inside_is_clipped():
    window = [50, 50, 150, 150]
    boxes = np.array(
        [
            [20, 60, 60, 70],  # 1/4 of its area inside: dropped
            [45, 60, 65, 70],  # 3/4 inside: clipped to the window
            [160, 60, 170, 70],  # outside
            [60, 60, 70, 70],
        ]
    )  # inside
    keep, clipped = cut_boxes(boxes, window, min_visible=0.5)
    assert keep.tolist() == [1, 3]
    assert clipped.tolist() == [[0, 10, 15, 20], [10, 10, 20, 20]]  # relative to the window


def test_the_training_mapper_crops_the_image_to_its_tile(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), image)
    record = record_of([[150, 110, 190, 140]], (256, 320), file_name=str(tmp_path / "big.png"))
    tile = tile_records([record], 128, 0.2, 0.5)[4]  # the middle one, [102, 102, 230, 230]
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none")  # 128 px training size: no resize of a tile
    mapped = SkippingDatasetMapper(cfg, SkippedImages([record["file_name"]]))(tile)
    assert tile["tile"] == [102, 102, 230, 230]
    assert torch.equal(mapped["image"], torch.from_numpy(image[102:230, 102:230]).permute(2, 0, 1))
    assert mapped["instances"].gt_boxes.tensor.tolist() == [[48, 8, 88, 38]]


class FixedBoxDetector(nn.Module):
    """A model stub: one box at (10, 20, 40, 50) of every input, scored by its place in the batch
    stream; records the "height" and "width" it was given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            self.sizes.append((x["height"], x["width"]))
            score = 1.0 - 0.01 * len(self.sizes)
            outputs.append(
                {
                    "instances": Instances(
                        (x["height"], x["width"]),
                        pred_boxes=Boxes(torch.tensor([[10.0, 20, 40, 50]])),
                        scores=torch.tensor([score]),
                        pred_classes=torch.tensor([0]),
                    )
                }
            )
        return outputs


class BrightRegionDetector(nn.Module):
    """A model stub: the box of the bright pixels of each input (unresized), scored by their count;
    nothing where there are none."""

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            ys, xs = torch.nonzero(x["image"].amax(0) > 0, as_tuple=True)
            found = int(len(xs) > 0)
            box = (
                torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                if found
                else torch.zeros(4)
            )
            outputs.append(
                {
                    "instances": Instances(
                        (x["height"], x["width"]),
                        pred_boxes=Boxes(box.float()[None, :][:found]),
                        scores=torch.tensor([len(xs) / 1e4])[:found],
                        pred_classes=torch.tensor([0])[:found],
                    )
                }
            )
        return outputs


def tiled(model, *opts):
    """TiledDetector of `model` with 128 px tiles (the tiny config's test size: tiles not
    resized)."""
    return TiledDetector(tiny_cfg("INPUT.TILING.SIZE", "128", *opts), model).eval()


def detect(model, image):
    with torch.no_grad():
        (output,) = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
    return output["instances"]


def test_the_tiled_detector_returns_boxes_in_the_whole_images_coordinates():
    stub = FixedBoxDetector()
    image = torch.zeros(3, 256, 320, dtype=torch.uint8)
    instances = detect(tiled(stub, "INPUT.TILING.OVERLAP", "0.2"), image)
    windows = tile_windows(256, 320, 128, 0.2)  # 3 x 3
    expected = np.tile(windows[:, :2], 2) + [10, 20, 40, 50]
    assert stub.sizes == [(128, 128)] * 9  # detections come back in tile pixels
    assert instances.image_size == (256, 320)
    assert (
        sorted_rows(instances.pred_boxes.tensor.numpy()).tolist() == sorted_rows(expected).tolist()
    )


def test_an_object_seen_by_overlapping_tiles_is_detected_once():
    image = torch.zeros(3, 256, 256, dtype=torch.uint8)
    image[:, 70:120, 70:120] = 255  # inside the 4 tiles of 128 px starting at 0 and 64
    instances = detect(tiled(BrightRegionDetector(), "INPUT.TILING.OVERLAP", "0.5"), image)
    assert instances.pred_boxes.tensor.tolist() == [[70, 70, 120, 120]]


def test_the_tiled_detector_gives_the_plain_models_detections_on_an_image_smaller_than_a_tile(
    tmp_path,
):
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "small.png"), image)
    record = {"file_name": str(tmp_path / "small.png"), "image_id": 0, "height": 64, "width": 96}
    cfg = tiny_cfg("INPUT.TILING.SIZE", "128")
    model = detecting_model()
    with torch.no_grad():
        (plain,) = model([DatasetMapper(cfg, is_train=False)(record)])  # resized to 128 px
        (ours,) = TiledDetector(cfg, model)([tiled_test_mapper(cfg)(record)])  # original size
    plain, ours = plain["instances"], ours["instances"]
    assert len(plain) > 10
    assert torch.equal(ours.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert torch.equal(ours.scores, plain.scores)
    assert torch.equal(ours.pred_classes, plain.pred_classes)


def test_the_demo_detects_on_tiles_of_a_large_image(tmp_path):
    DetectionCheckpointer(detecting_model(), save_dir=str(tmp_path)).save("tiny")
    opts = ["MODEL.DEVICE", "cpu", "INPUT.TILING.SIZE", "128"]
    predictor, _ = load_tool("demo/demo.py").build_predictor(
        TINY_CONFIG, str(tmp_path / "tiny.pth"), opts
    )
    image = np.random.default_rng(2).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert isinstance(predictor.model, TiledDetector)
    assert instances.image_size == (256, 320)
    assert instances.pred_boxes.tensor[:, 2].max() > 200  # whole-image coordinates


@pytest.mark.slow
def test_train_net_trains_on_tiles_and_evaluates_whole_large_images(tmp_path):
    csv_file = write_csv(str(tmp_path / "data"), make_images(1, size=(256, 320)))
    out = tmp_path / "run"
    log = run(
        "DATASETS.TRAIN",
        f'("csv:{csv_file}",)',
        "DATASETS.TEST",
        f'("csv:{csv_file}",)',
        "MODEL.RETINANET.NUM_CLASSES",
        "0",
        "INPUT.TILING.SIZE",
        "128",
        "SOLVER.MAX_ITER",
        "2",
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        "0.001",
        "OUTPUT_DIR",
        str(out),
    )
    assert re.search(
        r"Tiling: 9 tiles of 128 px \(overlap 0.2\) made from 1 images larger than a tile", log
    )
    assert "Evaluation results for bbox" in log
    detections = json.load(open(out / "inference" / "coco_instances_results.json"))
    assert {d["image_id"] for d in detections} == {0}
    assert max(d["bbox"][0] + d["bbox"][2] for d in detections) > 200  # whole-image coordinates

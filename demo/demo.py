#!/usr/bin/env python
r"""
Detections of a trained model on image files, drawn with Detectron2's Visualizer (paper Fig. 9);
or, with --compare-config-file, those of two models side by side on the same images.

    python demo/demo.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --input "datasets/ltm_shapes/ltm_shapes_small_val/images/*.jpg" --output output/pictures \
        --opts MODEL.WEIGHTS output/demo/model_final.pth
    python demo/demo.py --config-file configs/Shapes-Detection/retinanet_R_18_FPN_demo.yaml \
        --weights output/retinanet/model_final.pth \
        --compare-config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --compare-weights output/demo/model_final.pth --names RetinaNet LTM \
        --input img1.png img2.png --output output/compare

One picture per input image, under --output with the input's name. The class names are those of
the config's first test dataset. --opts KEY VALUE ... overrides apply to both models. With
INPUT.TILING.SIZE > 0, images larger than that are detected in overlapping tiles.

A video (--video-input FILE; one model) is written to --output as <its name>.mp4, its detections
drawn by Detectron2's VideoVisualizer (an object keeps its colour from frame to frame); --webcam
shows the detections on the camera's frames in a window until Esc is pressed.
"""

import argparse
import glob
import os
import sys
import time

import cv2

from detectron2.data import Metadata, MetadataCatalog
from detectron2.utils.video_visualizer import VideoVisualizer

from ltm_d2 import load_config
from ltm_d2.errors import run_main
from ltm_d2.visualization import (
    confident_detections,
    draw_detections,
    safe_predictor,
    side_by_side,
    with_title,
    write_rgb,
)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--weights", help="its checkpoint (default: the config's MODEL.WEIGHTS)")
    parser.add_argument(
        "--compare-config-file",
        metavar="FILE",
        help="a second model's config: draw both side by side",
    )
    parser.add_argument("--compare-weights", help="the second model's checkpoint")
    parser.add_argument(
        "--names",
        nargs=2,
        metavar=("FIRST", "SECOND"),
        help="panel titles of the two models (default: their config names)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", help="image files or glob patterns (quote them: 'dir/*.jpg')"
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument(
        "--webcam", action="store_true", help="the camera's frames, shown in a window"
    )
    parser.add_argument("--output", help="folder for the pictures or the video (not with --webcam)")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="smallest score of a drawn detection (default 0.5)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="trailing KEY VALUE config overrides, for both models",
    )
    return parser


def input_files(patterns):
    """The files named by `patterns` (paths or globs), in order; exits naming a pattern that
    matches nothing."""
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            sys.exit(f"error: --input {pattern}: no such file")
        files.extend(matches)
    return files


def build_predictor(config_file, weights, opts):
    """Detectron2's DefaultPredictor of a config, with `weights` (if given, read safely) and the
    overrides."""
    if not os.path.isfile(config_file):
        sys.exit(f"error: config file {config_file} does not exist")
    if weights is not None:
        if not os.path.isfile(weights):
            sys.exit(f"error: checkpoint {weights} does not exist")
        opts = [*opts, "MODEL.WEIGHTS", weights]
    cfg = load_config(config_file, opts)
    cfg.freeze()
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
    return safe_predictor(cfg), metadata


def drawn_frames(capture, predictor, metadata, threshold):
    """The BGR frames of an OpenCV capture with their detections drawn, in the same size."""
    visualizer = VideoVisualizer(metadata or Metadata())
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        instances = confident_detections(predictor, frame, threshold)
        yield visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()[
            :, :, ::-1
        ]


def detect_on_video(args, predictor, metadata):
    """Write --video-input with its detections drawn as <--output>/<its name>.mp4, or show the
    webcam's frames with theirs."""
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        sys.exit(
            "error: no camera to read"
            if args.webcam
            else f"error: {args.video_input}: not a video OpenCV can read"
        )
    frames = drawn_frames(capture, predictor, metadata, args.confidence_threshold)
    if args.webcam:
        for frame in frames:
            cv2.imshow("ltm_d2 demo (Esc quits)", frame)
            if cv2.waitKey(1) == 27:
                break
        cv2.destroyAllWindows()
        return
    os.makedirs(args.output, exist_ok=True)
    out = os.path.join(
        args.output, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4"
    )
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(
        out, cv2.VideoWriter_fourcc(*"mp4v"), capture.get(cv2.CAP_PROP_FPS) or 25, size
    )
    count = 0
    for count, frame in enumerate(frames, 1):
        writer.write(frame)
    writer.release()
    print(f"Video of {count} frames written to {os.path.abspath(out)}")


def main(argv=None):
    args = get_parser().parse_args(argv)
    if (args.output is None) != args.webcam:
        sys.exit("error: --webcam shows the frames; the others need --output")
    if args.video_input or args.webcam:
        if args.compare_config_file:
            sys.exit(
                "error: --compare-config-file draws images only, not --video-input or --webcam"
            )
        return detect_on_video(args, *build_predictor(args.config_file, args.weights, args.opts))
    files = input_files(args.input)
    models = [(args.config_file, args.weights)]
    if args.compare_config_file:
        models.append((args.compare_config_file, args.compare_weights))
    names = args.names or [os.path.splitext(os.path.basename(config))[0] for config, _ in models]
    predictors = [build_predictor(config, weights, args.opts) for config, weights in models]
    os.makedirs(args.output, exist_ok=True)
    start = time.perf_counter()
    for k, path in enumerate(files, 1):
        image = cv2.imread(path)
        if image is None:
            sys.exit(f"error: {path}: not an image OpenCV can read")
        panels, counts = [], []
        for name, (predictor, metadata) in zip(names, predictors):
            instances = confident_detections(predictor, image, args.confidence_threshold)
            panel = draw_detections(image[:, :, ::-1], instances, metadata)
            panels.append(with_title(panel, name) if len(predictors) > 1 else panel)
            counts.append(f"{name}: {len(instances)}")
        out = os.path.join(args.output, os.path.basename(path))
        write_rgb(out, side_by_side(panels))
        elapsed = time.perf_counter() - start
        eta = elapsed / k * (len(files) - k)
        print(f"[{k}/{len(files)}] {out}: detections {', '.join(counts)} (ETA {eta:.0f} s)")
    print(f"Pictures written to {os.path.abspath(args.output)}")


if __name__ == "__main__":
    run_main(main)

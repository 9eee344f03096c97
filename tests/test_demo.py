"""demo/demo.py: detections of one model, or of two side by side, on image files and globs."""

import fnmatch
import os
import re

import cv2
import numpy as np
import pytest

from detectron2.checkpoint import DetectionCheckpointer

from ltm_d2.data.shapes import DATASET_DIR, SPLITS, ensure_split

from support import TINY_CONFIG, build_tiny_model, load_tool


@pytest.fixture
def weights(tmp_path):
    """A checkpoint of the tiny model whose classifier fires everywhere (many detections)."""
    model = build_tiny_model()
    model.head.cls_score.bias.data.fill_(2.0)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("tiny")
    return str(tmp_path / "tiny.pth")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return folder


def run_demo(*args):
    load_tool("demo/demo.py").main(
        [
            "--config-file",
            TINY_CONFIG,
            *args,
            "--opts",
            "MODEL.DEVICE",
            "cpu",
            "TEST.DETECTIONS_PER_IMAGE",
            "5",
        ]
    )


def test_one_model_on_a_glob_writes_one_picture_per_image(tmp_path, weights, images, capsys):
    out = tmp_path / "out"
    run_demo(
        "--weights",
        weights,
        "--input",
        str(images / "*.png"),
        "--output",
        str(out),
        "--confidence-threshold",
        "0.3",
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    picture = cv2.imread(str(out / "a.png"))
    assert picture.shape[:2] == (384, 512)  # drawn enlarged to a longer side of 512
    assert "[2/2]" in capsys.readouterr().out


def test_the_usage_example_globs_the_images_the_bundled_dataset_writes():
    example = re.search(r'--input "([^"]+)"', load_tool("demo/demo.py").__doc__).group(1)
    folder, pattern = os.path.split(example)
    split = folder.split(os.sep)[-2]
    assert split in SPLITS
    assert folder == os.path.join("datasets", DATASET_DIR, split, "images")
    _, image_root = ensure_split("ltm_shapes_mini_val")  # written as every split is
    written = os.listdir(image_root)
    assert written and all(fnmatch.fnmatch(name, pattern) for name in written)


def test_two_models_are_drawn_side_by_side_under_their_names(tmp_path, weights, images, capsys):
    out = tmp_path / "out"
    run_demo(
        "--weights",
        weights,
        "--compare-config-file",
        TINY_CONFIG,
        "--compare-weights",
        weights,
        "--names",
        "first",
        "second",
        "--input",
        str(images / "a.png"),
        "--output",
        str(out),
        "--confidence-threshold",
        "0.3",
    )
    assert "detections first: 5, second: 5" in capsys.readouterr().out
    picture = cv2.imread(str(out / "a.png"))
    assert picture.shape[:2] == (28 + 384, 512 + 4 + 512)  # title strip; two panels and a gap
    for title in (picture[:28, :512], picture[:28, 516:]):
        assert title.max() == 255 and title.min() < 100  # dark text on white


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--input", "no/such/*.png"], "--input no/such/*.png: no such file"),
        (
            ["--weights", "missing.pth", "--input", "IMAGES"],
            "checkpoint missing.pth does not exist",
        ),
    ],
)
def test_a_missing_file_is_named(tmp_path, images, arguments, message):
    arguments = [str(images / "a.png") if a == "IMAGES" else a for a in arguments]
    with pytest.raises(SystemExit, match=message.replace("*", r"\*")):
        run_demo(*arguments, "--output", str(tmp_path / "out"))


def test_a_video_is_written_with_its_frames_drawn_at_their_size(tmp_path, weights, capsys):
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(4):
        writer.write(np.full((48, 64, 3), 128, dtype=np.uint8))  # grey: boxes drawn on it stand out
    writer.release()
    run_demo(
        "--weights",
        weights,
        "--video-input",
        video,
        "--output",
        str(tmp_path / "out"),
        "--confidence-threshold",
        "0.3",
    )
    assert "Video of 4 frames written to" in capsys.readouterr().out
    drawn = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = []
    while (frame := drawn.read()[1]) is not None:
        frames.append(frame)
    assert len(frames) == 4 and all(frame.shape == (48, 64, 3) for frame in frames)
    assert all(np.abs(frame.astype(int) - 128).max() > 100 for frame in frames)

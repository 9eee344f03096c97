"""
Data loading of tiles of big images: the training mapper (SkippingDatasetMapper) of the
`Own-Data` R-18 config with INPUT.TILING.SIZE 400 maps tiles of generated RGB images (a smooth
random field with pixel noise, saved as JPEG or PNG, with random boxes) in shuffled order, as the
training sampler draws them, in one process, as one data-loader worker does. Prints a markdown
table per image set: milliseconds per tile, seconds per batch of 16 tiles, decodings of a whole
image per 100 tiles and PIL's DecompressionBombWarnings, with the machine, date and commit.

    python bench/tile_loading.py [--sets 1x12000 4x6000 3x12000] [--format jpg] [--tiles 32]

It measures the ltm_d2 that Python imports: run with PYTHONPATH set to a checkout of another
commit to measure that commit's mapper (the script needs only its SkippingDatasetMapper and
tile_records).
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import List

import cv2
import numpy as np
from PIL import Image

from detectron2.data import detection_utils

import ltm_d2
from ltm_d2 import load_config
from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.tiling.cutting import tile_records

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import describe_device, print_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "Own-Data", "ltm_R_18_FPN_scratch.yaml")
TILE_SIZE = 400
BATCH = 16
BOXES_PER_MEGAPIXEL = 20


def make_image(path: str, side: int, seed: int) -> None:
    """A side x side RGB image at `path`: a smooth random field (as of fields and trees seen
    from above, which compresses as such photographs do) with pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (side // 40, side // 40, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)  # (side, side, 3)
    noise = rng.integers(0, 24, image.shape, dtype=np.uint8)
    cv2.add(image, noise, dst=image)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.endswith(".jpg") else []
    if not cv2.imwrite(path, image, params):
        raise OSError(f"cannot write {path}")


def record_of(path: str, side: int, seed: int) -> dict:
    """A dataset record of the image at `path` with random boxes of 20 to 80 px."""
    rng = np.random.default_rng(seed)
    num = int(BOXES_PER_MEGAPIXEL * side * side / 1e6)
    corners = rng.uniform(0, side - 80, (num, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(20, 80, (num, 2))], axis=1)
    annotations = [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": 0} for b in boxes]
    return {
        "file_name": path,
        "image_id": seed,
        "height": side,
        "width": side,
        "annotations": annotations,
    }


def commit() -> str:
    """The commit of the ltm_d2 measured, marked when its checkout has uncommitted changes."""
    where = os.path.dirname(os.path.abspath(ltm_d2.__file__))
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if changes else "")


def measure(mapper, tiles: List[dict], order: np.ndarray, warmup: int) -> dict:
    """Seconds of each tile of `order` after `warmup` tiles, whole-image decodings and PIL's
    decompression-bomb warnings during them."""
    read_image = detection_utils.read_image
    decodings = []

    def counted_read(file_name, format=None):
        decodings.append(file_name)
        return read_image(file_name, format=format)

    detection_utils.read_image = counted_read  # the mapper reads through this module attribute
    try:
        for i in order[:warmup]:
            mapper(tiles[i])
        decodings.clear()
        times = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            for i in order[warmup:]:
                start = time.perf_counter()
                assert mapper(tiles[i]) is not None
                times.append(time.perf_counter() - start)
    finally:
        detection_utils.read_image = read_image
    bombs = sum(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    return {"times": np.array(times), "decodings": len(decodings), "warnings": bombs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["1x12000", "4x6000", "3x12000"],
        help="image sets, NxSIDE: N square images of SIDE pixels",
    )
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--tiles", type=int, default=32, help="tiles timed per set")
    parser.add_argument("--warmup", type=int, default=8, help="tiles mapped before timing")
    args = parser.parse_args()

    cfg = load_config(CONFIG, ["INPUT.TILING.SIZE", str(TILE_SIZE)])
    tiling = cfg.INPUT.TILING
    print(f"Command: python bench/tile_loading.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"Machine: {describe_device()}")
    print(f"Date: {datetime.date.today()}; ltm_d2 at commit {commit()}")
    rows = []
    for image_set in args.sets:
        count, side = (int(v) for v in image_set.split("x"))
        with tempfile.TemporaryDirectory() as folder:
            records = []
            for seed in range(count):
                path = os.path.join(folder, f"image{seed}.{args.format}")
                make_image(path, side, seed)
                records.append(record_of(path, side, seed))
            tiles = tile_records(records, tiling.SIZE, tiling.OVERLAP, tiling.MIN_VISIBLE)
            tiles = [t for t in tiles if t["annotations"]]  # FILTER_EMPTY_ANNOTATIONS
            rng = np.random.default_rng(0)
            num = args.warmup + args.tiles
            epochs = -(-num // len(tiles))  # the sampler's stream: one permutation after another
            order = np.concatenate([rng.permutation(len(tiles)) for _ in range(epochs)])
            mapper = SkippingDatasetMapper(cfg, SkippedImages([r["file_name"] for r in records]))
            found = measure(mapper, tiles, order[:num], args.warmup)
        times = found["times"]
        megabytes = side * side * 3 / 1e6
        rows.append(
            [
                f"{count} x {side}x{side} {args.format.upper()} ({megabytes:.0f} MB decoded each)",
                len(tiles),
                f"{times.mean() * 1e3:.0f}",
                f"{times.mean() * BATCH:.2f}",
                f"{100 * found['decodings'] / len(times):.0f}",
                found["warnings"],
            ]
        )
    print_table(
        f"Training mapper on tiles of {TILE_SIZE} px in shuffled order, {args.tiles} tiles "
        f"timed after {args.warmup}, one process",
        [
            "images",
            "tiles",
            "ms per tile",
            f"s per batch of {BATCH}",
            "decodings per 100 tiles",
            "DecompressionBombWarnings",
        ],
        rows,
    )


if __name__ == "__main__":
    main()

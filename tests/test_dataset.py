"""The bundled shapes dataset."""

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

from ltm_d2.data.shapes import CLASSES, SPLITS, ShapesSplit, ensure_split, render_image


def objects_of(seed, n=60, size=256):
    rng = np.random.default_rng(seed)
    split = ShapesSplit(num_images=n, image_size=size, seed=seed)
    return [render_image(rng, split)[1] for _ in range(n)]


def test_rendering_is_deterministic_for_a_seed():
    a = render_image(np.random.default_rng(4), SPLITS["ltm_shapes_train"])
    b = render_image(np.random.default_rng(4), SPLITS["ltm_shapes_train"])
    assert np.array_equal(a[0], b[0]) and len(a[1]) == len(b[1])


def test_every_category_appears_with_its_aspect_ratio():
    ratios = {name: [] for name in CLASSES}
    for objects in objects_of(0):
        for name, (x0, y0, x1, y1) in objects:
            ratios[name].append(max((x1 - x0) / (y1 - y0), (y1 - y0) / (x1 - x0)))
    assert all(ratios.values()), "every category appears"
    assert np.median(ratios["disc"]) < 1.2 and np.median(ratios["square"]) < 1.2
    assert np.median(ratios["bar"]) > 4


def test_both_crowded_and_sparse_images_with_overlap_up_to_0_7():
    crowdedness = []
    for objects in objects_of(1, n=100):
        boxes = np.array([b for _, b in objects])
        best = 0.0
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                lt = np.maximum(boxes[i, :2], boxes[j, :2])
                rb = np.minimum(boxes[i, 2:], boxes[j, 2:])
                inter = np.prod(np.clip(rb - lt, 0, None))
                area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
                best = max(best, inter / (area(boxes[i]) + area(boxes[j]) - inter))
        crowdedness.append(best)
    crowdedness = np.array(crowdedness)
    assert crowdedness.max() <= 0.7 + 1e-9
    assert (crowdedness > 0.5).any() and (crowdedness < 0.2).any()


def test_split_is_registered_generated_once_and_reused():
    json_file, _ = ensure_split("ltm_shapes_mini_val")
    mtime = __import__("os").path.getmtime(json_file)
    records = DatasetCatalog.get("ltm_shapes_mini_val")
    assert len(records) == SPLITS["ltm_shapes_mini_val"].num_images
    assert all(0 <= a["category_id"] < len(CLASSES) for r in records for a in r["annotations"])
    ensure_split("ltm_shapes_mini_val")
    assert __import__("os").path.getmtime(json_file) == mtime
    assert MetadataCatalog.get("ltm_shapes_mini_val").thing_classes == CLASSES

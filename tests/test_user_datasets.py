"""A user's dataset named by format and path: read, classes from the data, clear errors."""

import json
import os
import xml.etree.ElementTree as ET

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from ltm_d2 import load_config
from ltm_d2.data import DatasetError
from ltm_d2.data.user_datasets import load_dataset

from support import TINY_CONFIG, run
from support.user_data import make_images, voc_xml, write_coco, write_csv, write_voc


def cfg_for(train, test=(), *opts):
    return load_config(
        TINY_CONFIG,
        [
            "MODEL.RETINANET.NUM_CLASSES",
            "0",
            "DATASETS.TRAIN",
            str(tuple(train)),
            "DATASETS.TEST",
            str(tuple(test)),
            *opts,
        ],
    )


def boxes_of(records, classes):
    return sorted(
        (
            os.path.basename(r["file_name"]),
            tuple(round(v) for v in a["bbox"]),
            classes[a["category_id"]],
        )
        for r in records
        for a in r["annotations"]
    )


def voc_with(tmp_path, images, xml_name, xml):
    """The VOC folder of `images` whose annotation file `xml_name` is replaced by `xml`."""
    folder = write_voc(str(tmp_path), images)
    ET.ElementTree(xml).write(os.path.join(folder, xml_name))
    return folder


@pytest.fixture
def images():
    return make_images(4)


@pytest.mark.parametrize("fmt", ["coco", "voc", "csv"])
def test_each_format_reads_the_same_boxes_and_classes(tmp_path, images, fmt):
    path = {"coco": write_coco, "voc": write_voc, "csv": write_csv}[fmt](str(tmp_path), images)
    cfg_for([f"{fmt}:{path}"])
    records = DatasetCatalog.get(f"{fmt}:{path}")
    if fmt == "coco":  # COCO keeps XYWH
        for r in records:
            for a in r["annotations"]:
                x, y, w, h = a["bbox"]
                a["bbox"] = [x, y, x + w, y + h]
    expected = sorted(
        (f"train{i:03d}.png", box[:4], box[4])
        for i, (_, boxes) in enumerate(images)
        for box in boxes
    )
    assert boxes_of(records, MetadataCatalog.get(f"{fmt}:{path}").thing_classes) == expected
    assert all(r["height"] == 96 and r["width"] == 128 for r in records)


@pytest.mark.parametrize("fmt", ["voc", "csv"])
def test_classes_are_read_from_the_data_and_set_the_class_count(tmp_path, images, fmt):
    path = {"voc": write_voc, "csv": write_csv}[fmt](str(tmp_path), images)
    cfg = cfg_for([f"{fmt}:{path}"])
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 2
    assert list(cfg.DATASETS.CLASS_NAMES) == ["disc", "rectangle"]
    assert MetadataCatalog.get(f"{fmt}:{path}").thing_classes == ["disc", "rectangle"]


def test_coco_classes_are_its_categories_in_the_order_of_their_ids(tmp_path, images):
    path = write_coco(str(tmp_path), images)
    cfg = cfg_for([f"coco:{path}"])
    assert list(cfg.DATASETS.CLASS_NAMES) == ["rectangle", "disc"]
    assert MetadataCatalog.get(f"coco:{path}").thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}


def test_a_config_fixing_another_class_count_is_refused_naming_the_key(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    with pytest.raises(DatasetError, match="MODEL.RETINANET.NUM_CLASSES 6: set it to 2"):
        load_config(TINY_CONFIG, ["DATASETS.TRAIN", f"('csv:{path}',)"])


def test_a_val_class_that_train_lacks_is_refused_naming_it_and_where(tmp_path, images):
    train = write_csv(str(tmp_path), images)
    val_images = make_images(2, seed=5)
    val_images[1][1][0] = (*val_images[1][1][0][:4], "triangle")
    val = write_csv(str(tmp_path), val_images, "val")
    with pytest.raises(
        DatasetError, match=r"class 'triangle' \(.*val.csv, line \d+\) is not among"
    ):
        cfg_for([f"csv:{train}"], [f"csv:{val}"])


def test_a_val_set_lacking_a_class_keeps_the_training_class_ids(tmp_path, images):
    train = write_voc(str(tmp_path), images)
    val_images = [
        (image, [b for b in boxes if b[4] == "rectangle"])
        for image, boxes in make_images(3, seed=2)
    ]
    val = write_voc(str(tmp_path), val_images, "val")
    cfg_for([f"voc:{train}"], [f"voc:{val}"])
    assert {
        a["category_id"] for r in DatasetCatalog.get(f"voc:{val}") for a in r["annotations"]
    } == {1}


def test_coco_files_with_other_categories_are_refused_naming_the_difference(tmp_path, images):
    train = write_coco(str(tmp_path), images)
    val = write_coco(str(tmp_path), make_images(2, seed=3), "val")
    text = open(val).read().replace('"name": "disc"', '"name": "circle"')
    open(val, "w").write(text)
    with pytest.raises(DatasetError, match=r"categories \['circle'\] are not in .*train.json"):
        cfg_for([f"coco:{train}"], [f"coco:{val}"])


def test_data_with_other_classes_than_a_trained_model_is_refused_when_loaded(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    name = f"csv:{path}"
    cfg_for([], [name], "DATASETS.CLASS_NAMES", "('cat', 'dog')")
    with pytest.raises(
        DatasetError, match=r"class 'disc' .* is not among the classes of the config's"
    ):
        DatasetCatalog.get(name)


@pytest.mark.parametrize(
    "row,error",
    [
        (
            "images/nowhere.png,1,1,10,10,disc",
            r"train.csv, line 13: image .*nowhere.png does not exist",
        ),
        (
            "images/train000.png,1,1,ten,10,disc",
            r"train.csv, line 13: box 1,1,ten,10, expected four numbers",
        ),
        ("images/train000.png,1,1,10,10", r"train.csv, line 13: 5 field\(s\), expected 6"),
    ],
    ids=["missing image", "bad box", "five fields"],
)
def test_a_bad_csv_row_is_refused_with_its_line(tmp_path, images, row, error):
    path = write_csv(str(tmp_path), images)
    with open(path, "a") as f:
        f.write(row + "\n")
    with pytest.raises(DatasetError, match=error):
        load_dataset(f"csv:{path}")


def test_a_csv_header_and_images_without_boxes_are_accepted(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    rows = open(path).read()
    open(path, "w").write(
        "image_path,x1,y1,x2,y2,class_name\n" + rows + "images/train000.png,,,,,\n"
    )
    assert len(load_dataset(f"csv:{path}").records) == 4


@pytest.mark.parametrize(
    "name, size, box, error",
    [
        (
            "train001",
            (96, 128),
            (200, 10, 240, 40),
            r"train001.xml, object 1: <bndbox> .* lies entirely outside its 128 x 96",
        ),
        (
            "train002",
            (90, 128),
            (2, 2, 20, 20),
            r"train002.xml: <size> is 128 x 90 .*train002.png is 128 x 96 as Detectron2 reads",
        ),
    ],
    ids=["box outside the image", "size of another image"],
)
def test_a_voc_file_that_disagrees_with_its_image_is_refused_naming_both(
    tmp_path, images, name, size, box, error
):
    xml = voc_xml(f"{name}.png", size, [(*box, "disc")])
    with pytest.raises(DatasetError, match=error):
        load_dataset(f"voc:{voc_with(tmp_path, images, name + '.xml', xml)}")


def test_a_voc_file_without_size_is_refused(tmp_path, images):
    xml = voc_xml("train002.png", (96, 128), [(2, 2, 20, 20, "disc")])
    xml.remove(xml.find("size"))
    folder = voc_with(tmp_path, images, "train002.xml", xml)
    with pytest.raises(DatasetError, match=r"train002.xml: no <size>"):
        load_dataset(f"voc:{folder}")


def test_a_voc_file_of_another_layout_is_refused(tmp_path, images):
    folder = write_voc(str(tmp_path), images)
    open(os.path.join(folder, "train003.xml"), "w").write("<labels><box>1 2 3 4</box></labels>")
    with pytest.raises(
        DatasetError, match=r"train003.xml: root element <labels>, expected .*<annotation>"
    ):
        load_dataset(f"voc:{folder}")


def test_a_voc_object_without_its_box_corners_is_refused(tmp_path, images):
    xml = voc_xml("train000.png", (96, 128), [(2, 2, 20, 20, "disc")])
    xml.find("object/bndbox").remove(xml.find("object/bndbox/ymax"))
    folder = voc_with(tmp_path, images, "train000.xml", xml)
    with pytest.raises(
        DatasetError, match=r"train000.xml, object 1: <ymax> is nothing, expected a number"
    ):
        load_dataset(f"voc:{folder}")


def test_voc_xml_apart_from_the_images_and_the_voc_root_layout_work(tmp_path, images):
    flat = write_voc(str(tmp_path / "flat"), images)
    xml_dir, image_dir = tmp_path / "root" / "Annotations", tmp_path / "root" / "JPEGImages"
    os.makedirs(xml_dir), os.makedirs(image_dir)
    for f in os.listdir(flat):
        os.rename(os.path.join(flat, f), str((xml_dir if f.endswith(".xml") else image_dir) / f))
    os.makedirs(tmp_path / "root" / "ImageSets" / "Main")
    (tmp_path / "root" / "ImageSets" / "Main" / "val.txt").write_text("train001\ntrain003\n")
    assert len(load_dataset(f"voc:{xml_dir}:{image_dir}").records) == 4
    assert len(load_dataset(f"voc:{tmp_path / 'root'}").records) == 4
    val = load_dataset(f"voc:{tmp_path / 'root'}:val").records
    assert [os.path.basename(r["file_name"]) for r in val] == ["train001.png", "train003.png"]


@pytest.mark.parametrize("fmt", ["coco", "voc", "csv"])
def test_an_empty_dataset_is_refused(tmp_path, fmt):
    if fmt == "csv":
        path = str(tmp_path / "empty.csv")
        open(path, "w").close()
    elif fmt == "voc":
        path = str(tmp_path)
    else:
        path = write_coco(str(tmp_path), [])
    with pytest.raises(DatasetError, match="no images|no \\.xml|no annotations|no categories"):
        load_dataset(f"{fmt}:{path}")


def test_an_unknown_format_is_refused_listing_the_formats():
    with pytest.raises(
        DatasetError, match="expected FORMAT:PATH with FORMAT one of coco, voc, csv"
    ):
        cfg_for(["yolo:data/train"])


def test_a_run_warns_when_a_test_image_holds_more_objects_than_the_detections_kept(
    tmp_path, images, caplog
):
    from ltm_d2.preflight import check_run

    path = write_csv(str(tmp_path), images)  # three objects per image
    cfg = cfg_for(
        [f"csv:{path}"],
        [f"csv:{path}"],
        "TEST.DETECTIONS_PER_IMAGE",
        "2",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    )
    check_run(cfg, training=False)
    assert (
        "an image has 3 objects, but the model keeps at most TEST.DETECTIONS_PER_IMAGE 2"
        in caplog.text
    )


def test_coco_ap_counts_every_detection_a_crowded_config_keeps(tmp_path, images):
    from ltm_d2.engine import Trainer

    path = write_csv(str(tmp_path), images)
    cfg = cfg_for([f"csv:{path}"], [f"csv:{path}"], "TEST.DETECTIONS_PER_IMAGE", "500")
    evaluator = Trainer.build_evaluator(cfg, f"csv:{path}", str(tmp_path / "inference"))
    assert evaluator._max_dets_per_image == [1, 10, 500]


def test_two_spellings_of_one_image_path_are_one_record_with_all_its_boxes(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    rows = open(path).read().splitlines()
    rows[1] = "./" + rows[1]  # the second box of train000.png
    open(path, "w").write("\n".join(rows) + "\n")
    records = load_dataset(f"csv:{path}").records
    assert len(records) == 4
    assert [len(r["annotations"]) for r in records] == [3, 3, 3, 3]


def test_a_header_row_is_recognised_by_its_fields_not_being_numbers(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    rows = open(path).read()
    open(path, "w").write("image,left,top,right,bottom,class\n" + rows)
    assert len(load_dataset(f"csv:{path}").records) == 4


def test_a_reversed_csv_box_is_reported_with_the_rows_own_corners(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    with open(path, "a") as f:
        f.write("images/train000.png,70,20,20,60,disc\n")
    with pytest.raises(
        DatasetError,
        match=r"line 13: box x1,y1,x2,y2 70,20,20,60 has x2 < x1, expected x1 <= x2, y1 <= y2",
    ):
        load_dataset(f"csv:{path}")


@pytest.mark.parametrize(
    "encoding, error",
    [
        ("utf-16", r"train.csv: UTF-16 text, expected UTF-8"),
        ("latin-1", r"train.csv, line 13: byte 0xe9 is not UTF-8 text .*expected UTF-8"),
    ],
)
def test_a_csv_file_in_another_encoding_is_refused_naming_the_encoding_expected(
    tmp_path, images, encoding, error
):
    path = write_csv(str(tmp_path), images)
    text = open(path).read() + "images/train000.png,1,1,10,10,caf\u00e9\n"
    open(path, "w", encoding=encoding).write(text)
    with pytest.raises(DatasetError, match=error):
        load_dataset(f"csv:{path}")


def test_a_dataset_without_any_object_is_refused_as_having_no_classes(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    open(path, "w").write("".join(f"images/train{i:03d}.png,,,,,\n" for i in range(4)))
    with pytest.raises(DatasetError, match=r"train.csv: not one object in its 4 images"):
        cfg_for([f"csv:{path}"])


def test_class_names_differing_only_in_case_are_warned_about(tmp_path, images, caplog):
    path = write_csv(str(tmp_path), images)
    with open(path, "a") as f:
        f.write("images/train000.png,1,1,10,10,Disc\n")
    cfg = cfg_for([f"csv:{path}"])
    assert list(cfg.DATASETS.CLASS_NAMES) == ["Disc", "disc", "rectangle"]
    assert "class names ['Disc', 'disc'] differ only in case" in caplog.text


def test_the_warning_of_class_names_differing_in_case_is_in_the_runs_log_file(tmp_path, images):
    path = write_csv(str(tmp_path), images)
    with open(path, "a") as f:
        f.write("images/train000.png,1,1,10,10,Disc\n")
    out = str(tmp_path / "out")
    printed = run(
        *("DATASETS.TRAIN", f'("csv:{path}",)', "DATASETS.TEST", "()", "OUTPUT_DIR", out),
        *("MODEL.RETINANET.NUM_CLASSES", "0", "SOLVER.MAX_ITER", "1", "SEED", "1"),
    )
    warning = "class names ['Disc', 'disc'] differ only in case"
    assert printed.count(warning) == 1
    assert open(os.path.join(out, "log.txt")).read().count(warning) == 1


def test_voc_xml_files_in_subfolders_are_read(tmp_path, images):
    folder = write_voc(str(tmp_path), images)
    os.makedirs(os.path.join(folder, "site_b"))
    for name in ("train002", "train003"):
        for ext in (".xml", ".png"):
            os.rename(os.path.join(folder, name + ext), os.path.join(folder, "site_b", name + ext))
    records = load_dataset(f"voc:{folder}").records
    assert sorted(os.path.relpath(r["file_name"], folder) for r in records) == [
        "site_b/train002.png",
        "site_b/train003.png",
        "train000.png",
        "train001.png",
    ]


def test_a_voc_filename_naming_another_image_than_the_xmls_own_is_refused(tmp_path, images):
    folder = voc_with(
        tmp_path,
        images,
        "train001.xml",
        voc_xml("train000.png", (96, 128), [(2, 2, 20, 20, "disc")]),
    )
    with pytest.raises(
        DatasetError, match=r"train001.xml: <filename> names image .*train000.png, but .*train001"
    ):
        load_dataset(f"voc:{folder}")


def test_two_voc_files_annotating_one_image_are_refused_naming_both(tmp_path, images):
    folder = write_voc(str(tmp_path), images)
    os.remove(os.path.join(folder, "train001.png"))
    xml = voc_xml("train000.png", (96, 128), [(2, 2, 20, 20, "disc")])
    ET.ElementTree(xml).write(os.path.join(folder, "train001.xml"))
    with pytest.raises(
        DatasetError, match=r"train001.xml: annotates image .*train000.png, as .*train000.xml does"
    ):
        load_dataset(f"voc:{folder}")


def share_file(coco):
    coco["images"][1]["file_name"] = "./" + coco["images"][0]["file_name"]


def share_name(coco):
    coco["categories"][1]["name"] = coco["categories"][0]["name"]


@pytest.mark.parametrize(
    "change, error",
    [
        (share_file, r"image id 2: file_name './images/train000.png' is also image id 1's"),
        (share_name, r"category ids 1 and 2: both named 'rectangle'"),
    ],
    ids=["two images of one file", "two categories of one name"],
)
def test_coco_entries_that_would_split_an_image_or_a_class_are_refused(
    tmp_path, images, change, error
):
    path = write_coco(str(tmp_path), images)
    coco = json.load(open(path))
    change(coco)
    json.dump(coco, open(path, "w"))
    with pytest.raises(DatasetError, match=error):
        load_dataset(f"coco:{path}")

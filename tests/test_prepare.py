"""``python -m dataset.prepare``: layouts, idempotence, an untouched download, clear errors."""
import errno
import logging
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from dataset.build import build_dataset
from dataset.prepare import main, prepare

SOP_HEADER = "image_id class_id super_class_id path"
SOP_TRAIN = [(1, 1, 1, "bicycle_final/a_0.JPG"), (2, 1, 1, "bicycle_final/a_1.JPG"),
             (3, 2, 1, "bicycle_final/b_0.JPG"), (4, 2, 1, "bicycle_final/b_1.JPG")]
SOP_TEST = [(5, 3, 2, "chair_final/c_0.JPG"), (6, 3, 2, "chair_final/c_1.JPG"),
            (7, 4, 2, "chair_final/d_0.JPG")]


def write_sop_list(path, rows):
    lines = [SOP_HEADER] + [" ".join(str(field) for field in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def sop_download(tmp_path, dataset_write_image):
    download = tmp_path / "Stanford_Online_Products"
    for number, (_, class_id, _, relative_path) in enumerate(SOP_TRAIN + SOP_TEST):
        dataset_write_image(download / relative_path, colour=(class_id * 40, number * 20, 0))
    write_sop_list(download / "Ebay_train.txt", SOP_TRAIN)
    write_sop_list(download / "Ebay_test.txt", SOP_TEST)
    return download


def snapshot(folder):
    """Content and modification time of every file under ``folder``."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def test_sop_layout_has_zero_padded_class_folders_with_training_classes_first(sop_download, tmp_path):
    out = tmp_path / "out"
    assert main(["sop", str(sop_download), str(out)]) == 0
    assert sorted(path.name for path in (out / "images").iterdir()) == ["00001", "00002", "00003", "00004"]
    source = sop_download / "chair_final/c_1.JPG"
    assert (out / "images" / "00003" / "c_1.JPG").read_bytes() == source.read_bytes()
    train = build_dataset("sop", out, "train", 2, None)
    test = build_dataset("sop", out, "test", 2, None)
    assert (len(train), train.num_classes, len(test), test.num_classes) == (4, 2, 3, 2)


def test_preparation_hard_links_and_leaves_the_download_untouched(sop_download, tmp_path):
    before = snapshot(sop_download)
    prepare("sop", sop_download, tmp_path / "out")
    assert snapshot(sop_download) == before
    linked = tmp_path / "out" / "images" / "00001" / "a_0.JPG"
    assert linked.stat().st_ino == (sop_download / "bicycle_final/a_0.JPG").stat().st_ino


def test_second_run_changes_nothing_and_reports_zero_new(sop_download, tmp_path, caplog):
    out = tmp_path / "out"
    assert prepare("sop", sop_download, out) == (7, 7)
    after_first = snapshot(out)
    with caplog.at_level(logging.INFO, logger="dataset.prepare"):
        assert prepare("sop", sop_download, out) == (0, 7)
    assert snapshot(out) == after_first
    assert "4 classes, 7 files" in caplog.text and "(0 new, 7 already there)" in caplog.text


def test_copies_when_hard_links_are_impossible(sop_download, tmp_path, monkeypatch):
    def cross_device_link(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device_link)
    before = snapshot(sop_download)
    out = tmp_path / "out"
    prepare("sop", sop_download, out)
    copied = out / "images" / "00002" / "b_0.JPG"
    assert copied.read_bytes() == (sop_download / "bicycle_final/b_0.JPG").read_bytes()
    assert copied.stat().st_ino != (sop_download / "bicycle_final/b_0.JPG").stat().st_ino
    assert not list(out.rglob("*.partial"))
    assert snapshot(sop_download) == before


def test_malformed_sop_line_is_named_with_exit_code_2(sop_download, tmp_path, caplog):
    lines = (sop_download / "Ebay_test.txt").read_text().splitlines()
    lines[2] = "6 three 2 chair_final/c_1.JPG"
    (sop_download / "Ebay_test.txt").write_text("\n".join(lines))
    assert main(["sop", str(sop_download), str(tmp_path / "out")]) == 2
    assert "Ebay_test.txt is malformed at line 3" in caplog.text
    assert not (tmp_path / "out").exists()


def test_missing_annotation_file_is_named(sop_download, tmp_path, caplog):
    (sop_download / "Ebay_train.txt").unlink()
    assert main(["sop", str(sop_download), str(tmp_path / "out")]) == 2
    assert "Ebay_train.txt does not exist" in caplog.text


def test_missing_listed_image_names_file_and_line(sop_download, tmp_path, caplog):
    (sop_download / "bicycle_final/b_0.JPG").unlink()
    assert main(["sop", str(sop_download), str(tmp_path / "out")]) == 2
    assert "b_0.JPG listed in" in caplog.text and "Ebay_train.txt line 4" in caplog.text


def test_sop_test_classes_must_follow_training_classes(sop_download, tmp_path, caplog):
    write_sop_list(sop_download / "Ebay_test.txt", [(5, 1, 2, "chair_final/c_0.JPG")])
    assert main(["sop", str(sop_download), str(tmp_path / "out")]) == 2
    assert "training classes first" in caplog.text


INSHOP_ROWS = [("img/MEN/Tees/id_00000002/01_front.jpg", "id_00000002", "train"),
               ("img/MEN/Tees/id_00000002/02_side.jpg", "id_00000002", "train"),
               ("img/MEN/Tees/id_00000009/01_front.jpg", "id_00000009", "query"),
               ("img/MEN/Tees/id_00000009/02_side.jpg", "id_00000009", "gallery")]


def write_inshop_partition(download, rows):
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [" ".join(row) for row in rows]
    (download / "Eval").mkdir(parents=True, exist_ok=True)
    (download / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def inshop_download(tmp_path, dataset_write_image):
    download = tmp_path / "In-shop"
    for image_name, _, _ in INSHOP_ROWS:
        dataset_write_image(download / "Img" / image_name)
    write_inshop_partition(download, INSHOP_ROWS)
    return download


def test_inshop_layout_is_read_by_build_dataset_and_idempotent(inshop_download, tmp_path):
    before = snapshot(inshop_download)
    out = tmp_path / "In_shop"
    assert prepare("inshop", inshop_download, out) == (5, 5)
    assert prepare("inshop", inshop_download, out) == (0, 5)
    assert snapshot(inshop_download) == before
    query = build_dataset("in_shop", out, "query", 1, None)
    assert query.paths == [str(out / "Img" / INSHOP_ROWS[2][0])] and Path(query.paths[0]).is_file()


def test_malformed_inshop_partition_names_the_line(inshop_download, tmp_path, caplog):
    write_inshop_partition(inshop_download, INSHOP_ROWS[:2] + [("img/x.jpg", "id_00000003")])
    assert main(["inshop", str(inshop_download), str(tmp_path / "out")]) == 2
    assert "list_eval_partition.txt is malformed at line 5" in caplog.text


def write_cars_annotations(path, entries):
    fields = [("relative_im_path", "O"), ("class", "O"), ("test", "O")]
    annotations = np.zeros((1, len(entries)), dtype=fields)
    for column, (image_path, class_id) in enumerate(entries):
        annotations[0, column] = (image_path, np.array([[class_id]], dtype=np.uint8), 0)
    scipy.io.savemat(path, {"annotations": annotations})


CARS_ENTRIES = [("car_ims/000001.jpg", 1), ("car_ims/000002.jpg", 1), ("car_ims/000003.jpg", 2),
                ("car_ims/000004.jpg", 10), ("car_ims/000005.jpg", 196)]


@pytest.fixture
def cars_download(tmp_path, dataset_write_image):
    download = tmp_path / "CARS"
    for image_path, _ in CARS_ENTRIES:
        dataset_write_image(download / image_path)
    (download / "devkit").mkdir()
    write_cars_annotations(download / "devkit" / "cars_annos.mat", CARS_ENTRIES)
    return download


def test_cars_class_folders_sort_in_class_order(cars_download, tmp_path):
    out = tmp_path / "out"
    assert prepare("cars", cars_download, out) == (5, 5)
    assert prepare("cars", cars_download, out) == (0, 5)
    assert sorted(path.name for path in (out / "images").iterdir()) == ["001", "002", "010", "196"]
    train = build_dataset("cars", out, "train", 2, None)
    assert [Path(path).name for path in train.paths] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert train.labels == [0, 0, 1]


def test_malformed_cars_annotation_names_the_entry(cars_download, tmp_path, caplog):
    write_cars_annotations(cars_download / "devkit" / "cars_annos.mat",
                           [("car_ims/000001.jpg", 1), (np.array([1.5]), 2)])
    assert main(["cars", str(cars_download), str(tmp_path / "out")]) == 2
    assert "cars_annos.mat is malformed at annotation 2" in caplog.text


def test_command_line_exits_with_2_and_one_sentence(tmp_path, monkeypatch, caplog):
    """``python -m dataset.prepare``, run in-process (a subprocess would spend seconds importing torch)."""
    monkeypatch.delitem(sys.modules, "dataset.prepare")  # runpy executes a fresh copy as __main__
    monkeypatch.setattr(sys, "argv", ["prepare", "sop", str(tmp_path / "missing"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("dataset.prepare", run_name="__main__")
    assert exited.value.code == 2
    assert "missing does not exist" in caplog.text and "Traceback" not in caplog.text


def test_same_file_name_in_two_folders_keeps_both_images(tmp_path, dataset_write_image):
    download = tmp_path / "Stanford_Online_Products"
    train_rows = [(1, 1, 1, "bicycle_final/x.JPG"), (2, 1, 1, "bicycle_other/x.JPG"), (3, 1, 1, "bicycle_final/y.JPG")]
    test_rows = [(4, 2, 2, "chair_final/c.JPG"), (5, 2, 2, "chair_final/d.JPG")]
    for number, (_, _, _, relative_path) in enumerate(train_rows + test_rows):
        dataset_write_image(download / relative_path, colour=(number * 40, 0, 0))
    write_sop_list(download / "Ebay_train.txt", train_rows)
    write_sop_list(download / "Ebay_test.txt", test_rows)
    out = tmp_path / "sop"
    assert prepare("sop", download, out) == (5, 5)
    class_one = sorted((out / "images" / "00001").iterdir())
    assert len(class_one) == 3
    contents = {path.read_bytes() for path in class_one}
    assert (download / "bicycle_final" / "x.JPG").read_bytes() in contents
    assert (download / "bicycle_other" / "x.JPG").read_bytes() in contents
    assert prepare("sop", download, out) == (0, 5)


def test_output_folder_inside_the_download_is_refused(sop_download, caplog):
    before = snapshot(sop_download)
    with caplog.at_level(logging.ERROR):
        assert main(["sop", str(sop_download), str(sop_download / "prepared")]) == 2
    assert "lies inside the download" in caplog.text
    assert snapshot(sop_download) == before and not (sop_download / "prepared").exists()

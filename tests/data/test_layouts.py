from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenetag.data import (
    MIML_CLASSES,
    DataError,
    check_images,
    kfold_indices,
    label_stats,
    load_dataset,
    open_image,
    split_dataset,
)


def _make_images(folder: Path, names: list[str], size=(12, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", size, (i * 20 % 255, 100, 50)).save(folder / n)


def _miml(tmp_path: Path, rows: list[list[int]], names: list[str] | None = None) -> Path:
    names = names or [f"{i}.jpg" for i in range(1, len(rows) + 1)]
    _make_images(tmp_path / "original", names)
    (tmp_path / "labels.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path


ROWS = [[1, -1, -1, 1, -1], [-1, 1, -1, -1, 1], [-1, -1, 1, 1, -1], [1, -1, -1, -1, -1], [-1, -1, 1, -1, 1]]
Y = (np.array(ROWS) == 1).astype(np.uint8)


def test_miml_layout_numeric_order(tmp_path):
    # 10.jpg must come after 2.jpg: numeric, not lexicographic order.
    names = [f"{i}.jpg" for i in range(1, 12)]
    rows = (ROWS * 3)[:11]
    root = _miml(tmp_path, rows, names)
    ds = load_dataset(root)
    assert [p.name for p in ds.paths] == names
    assert ds.classes == MIML_CLASSES
    np.testing.assert_array_equal(ds.labels, (np.array(rows) == 1).astype(np.uint8))
    assert ds.label_names(0) == ["desert", "sunset"]


def test_numbered_images_with_a_gap_need_a_table_that_agrees(tmp_path):
    """20.jpg renamed 41.jpg (same count) would shift the labels of every later image by one line."""
    root = _miml(tmp_path / "gap", ROWS, ["1.jpg", "2.jpg", "4.jpg", "5.jpg", "6.jpg"])
    with pytest.raises(DataError, match=r"names are not 1..N \(4.jpg stands where 3.jpg would\); add a labels table"):
        load_dataset(root)
    # A table naming each image settles the order (the default data has gaps: 400 images are held out).
    table = "image,desert,mountains,sea,sunset,trees\n" + "".join(f"{n},{','.join(str(int(v == 1)) for v in r)}\n" for n, r in zip(["1.jpg", "2.jpg", "4.jpg", "5.jpg", "6.jpg"], ROWS))
    (root / "labels.csv").write_text(table)
    np.testing.assert_array_equal(load_dataset(root).labels, Y)
    (root / "labels.csv").write_text(table.replace("4.jpg,0,0,1,1,0", "4.jpg,1,0,0,0,0"))
    with pytest.raises(DataError, match="4.jpg: its line in labels.json disagrees with labels.csv"):
        load_dataset(root)
    root = _miml(tmp_path / "named", ROWS, ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "x.jpg"])
    with pytest.raises(DataError, match="x.jpg is not a number"):
        load_dataset(root)
    assert len(load_dataset(_miml(tmp_path / "zero", ROWS, [f"{i}.jpg" for i in range(5)]))) == 5  # 0..N-1 is fine


def test_several_label_files_need_a_choice(tmp_path):
    _make_images(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "train.csv").write_text("image,sea\na.jpg,1\n")
    (tmp_path / "test.csv").write_text("image,sea\nb.jpg,0\n")
    with pytest.raises(DataError, match=r"several possible labels files \(test.csv, train.csv\); choose one with --labels"):
        load_dataset(tmp_path)
    assert len(load_dataset(tmp_path, labels=tmp_path / "train.csv")) == 1


def test_classes_file_is_honoured_by_csv_layouts(tmp_path):
    _make_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "classes.txt").write_text("mountains\nsea\n")
    (tmp_path / "labels.csv").write_text("filename,labels\na.jpg,sea\nb.jpg,mountian\nc.jpg,mountains\n")
    with pytest.raises(DataError, match=r"labels.csv, line 3: unknown class 'mountian'"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("image,mountains,sae\na.jpg,0,1\n")
    with pytest.raises(DataError, match=r"unknown class column\(s\) \['sae'\]"):
        load_dataset(tmp_path)


def test_same_file_twice_in_a_csv_is_refused(tmp_path):
    _make_images(tmp_path, ["1.jpg", "2.jpg"])
    (tmp_path / "labels.csv").write_text("image,sea\n1.jpg,1\n2.jpg,0\n./1.jpg,0\n")
    with pytest.raises(DataError, match=r"line 4: './1.jpg' is the same image file as line 2"):
        load_dataset(tmp_path)


def test_miml_single_json_array_and_classes_file(tmp_path):
    root = tmp_path
    _make_images(root / "original", [f"{i}.jpg" for i in range(1, 6)])
    (root / "labels.json").write_text(json.dumps(ROWS))
    (root / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    ds = load_dataset(root)
    assert ds.classes == ("a", "b", "c", "d", "e")
    np.testing.assert_array_equal(ds.labels, Y)


def test_csv_onehot_layout(tmp_path):
    _make_images(tmp_path / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "labels.csv").write_text("image,desert,sea\na.jpg,1,0\nb.jpg,0,1\nc.jpg,1,1\n")
    ds = load_dataset(tmp_path)
    assert ds.classes == ("desert", "sea")
    np.testing.assert_array_equal(ds.labels, [[1, 0], [0, 1], [1, 1]])
    assert ds.paths[2].name == "c.jpg"


def test_a_written_labels_file_reads_back_the_same(tmp_path):
    _make_images(tmp_path / "images", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "labels.csv").write_text("image,desert,sea\na.jpg,1,0\nb.jpg,0,1\nc.jpg,1,1\n")
    ds = load_dataset(tmp_path)
    from scenetag.data.layouts import write_labels_csv

    out = write_labels_csv(tmp_path / "elsewhere" / "fixed.csv", ds.paths, ds.classes, np.array([[0, 0], [0, 1], [1, 0]]))
    again = load_dataset(tmp_path, labels=out, fmt="csv")
    assert again.paths == ds.paths and again.classes == ds.classes
    np.testing.assert_array_equal(again.labels, [[0, 0], [0, 1], [1, 0]])


def test_csv_filename_labels_layout(tmp_path):
    _make_images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "tags.csv").write_text("filename,labels\na.png,sea sunset\nb.png,\"trees,mountains\"\n")
    ds = load_dataset(tmp_path, labels=tmp_path / "tags.csv")
    assert ds.classes == ("mountains", "sea", "sunset", "trees")
    np.testing.assert_array_equal(ds.labels, [[0, 1, 1, 0], [1, 0, 0, 1]])


def test_mat_layout(tmp_path):
    from scipy.io import savemat

    _make_images(tmp_path / "original", [f"{i}.jpg" for i in range(1, 6)])
    savemat(tmp_path / "miml data.mat", {"targets": np.array(ROWS).T.astype(float)})
    ds = load_dataset(tmp_path)
    assert ds.source.startswith("mat:")
    np.testing.assert_array_equal(ds.labels, Y)


def test_folder_with_labels_flag_and_format_override(tmp_path):
    imgs = tmp_path / "pics"
    _make_images(imgs, [f"{i}.jpg" for i in range(1, 6)])
    lab = tmp_path / "elsewhere" / "my_labels.txt"
    lab.parent.mkdir()
    lab.write_text("\n".join(json.dumps(r) for r in ROWS))
    ds = load_dataset(imgs, labels=lab, fmt="miml")
    np.testing.assert_array_equal(ds.labels, Y)


def test_real_csv_and_json_agree(real_data):
    a = load_dataset(real_data)
    b = load_dataset(real_data / "labels.csv")
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [p.name for p in a.paths] == [p.name for p in b.paths]
    assert label_stats(a)["per_class"] == {"desert": 328, "mountains": 364, "sea": 464, "sunset": 373, "trees": 447}


# ------------------------------------------------------------------ validation errors


@pytest.mark.parametrize(
    "line, needle",
    [
        ("[1, -1, -1, 1]", "has 4 labels, expected 5"),
        ("[1, -1, 2, 1, -1]", "not one of -1, 0, 1"),
        ("[1, -1, -1, 1, -1] garbage", "not a JSON list"),
        ('{"a": 1}', "expected a JSON list"),
        ('[1, -1, "x", 1, -1]', "not one of -1, 0, 1"),
    ],
)
def test_labels_json_bad_line_names_file_and_line(tmp_path, line, needle):
    rows = [json.dumps(r) for r in ROWS]
    rows[2] = line
    _make_images(tmp_path / "original", [f"{i}.jpg" for i in range(1, 6)])
    (tmp_path / "labels.json").write_text("\n".join(rows))
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    assert "labels.json, line 3" in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("n_rows, word", [(4, "fewer"), (6, "more")])
def test_label_count_mismatch(tmp_path, n_rows, word):
    _make_images(tmp_path / "original", [f"{i}.jpg" for i in range(1, 6)])
    (tmp_path / "labels.json").write_text("\n".join(json.dumps(ROWS[i % 5]) for i in range(n_rows)))
    with pytest.raises(DataError, match=f"{n_rows} label lines but .* 5 images .*{word}"):
        load_dataset(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "labels.json").write_text("[1, -1, -1, -1, -1]\n")
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path)


def test_undetectable_layout_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="cannot tell the layout"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_missing_default_data_says_where_and_synth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="lamda.nju.edu.cn.*scenetag synth"):
        load_dataset("../shared/data/miml-scene")


def test_csv_errors(tmp_path):
    _make_images(tmp_path, ["a.jpg", "b.jpg"])
    csv = tmp_path / "l.csv"
    csv.write_text("image,desert,sea\na.jpg,1,0\na.jpg,0,1\n")
    with pytest.raises(DataError, match=r"l.csv, line 3: duplicate image 'a.jpg' \(first on line 2\)"):
        load_dataset(csv)
    csv.write_text("image,desert,sea\na.jpg,1,0\nzzz.jpg,0,1\n")
    with pytest.raises(DataError, match="1 image file\\(s\\) missing: line 3: .*zzz.jpg"):
        load_dataset(csv)
    csv.write_text("image,desert,sea\na.jpg,1,5\n")
    with pytest.raises(DataError, match="line 2, column 'sea'"):
        load_dataset(csv)
    csv.write_text("filename,labels\na.jpg,sea\nb.jpg,volcano\n")
    from scenetag.data.layouts import load_csv

    with pytest.raises(DataError, match="line 3: unknown class 'volcano'"):
        load_csv(csv, tmp_path, classes=["sea", "desert"])
    csv.write_text("image,desert,volcano\na.jpg,1,0\n")
    with pytest.raises(DataError, match=r"unknown class column\(s\) \['volcano'\]"):
        load_csv(csv, tmp_path, classes=["sea", "desert"])


def test_class_without_positive_warns(tmp_path, caplog):
    rows = [[1, -1, -1, 1, -1]] * 5
    _miml(tmp_path, rows)
    ds = load_dataset(tmp_path)
    assert any("no positive example: mountains, sea, trees" in w for w in ds.warnings)
    assert "no positive example" in caplog.text


# ------------------------------------------------------------------ images


def test_open_image_errors_name_the_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    for name, needle in [("empty.jpg", "empty file"), ("text.jpg", "not a valid image"), ("trunc.jpg", "corrupt or truncated")]:
        with pytest.raises(DataError, match=needle) as e:
            open_image(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(DataError, match="over the limit"):
        open_image(tmp_path / "ok.jpg", max_pixels=100)


def test_open_image_modes_become_rgb(tmp_path):
    Image.new("RGBA", (8, 6), (255, 0, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (8, 6), 128).save(tmp_path / "g.png")
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(tmp_path / "w16.png")
    for n in ["a.png", "g.png", "c.jpg", "w16.png"]:
        im = open_image(tmp_path / n)
        assert im.mode == "RGB" and im.size == (8, 6), n
    assert open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert open_image(tmp_path / "w16.png").getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_applied(tmp_path):
    im = Image.new("RGB", (20, 10), "blue")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert open_image(tmp_path / "r.jpg").size == (10, 20)


def test_check_images_reports_all_bad_files(tmp_path):
    root = _miml(tmp_path, ROWS)
    (root / "original" / "2.jpg").write_bytes(b"")
    (root / "original" / "4.jpg").write_text("nope")
    errors = check_images(load_dataset(root).paths)
    assert len(errors) == 2
    assert "2.jpg" in errors[0] and "4.jpg" in errors[1]


# ------------------------------------------------------------------ splits


def _grouped_labels(n_per_block: int = 80) -> np.ndarray:
    """Labels grouped by class in file order, like the real data."""
    rng = np.random.default_rng(0)
    blocks = []
    for c in range(5):
        b = np.zeros((n_per_block, 5), dtype=np.uint8)
        b[:, c] = 1
        extra = rng.random(n_per_block) < 0.25
        b[extra, (c + 1) % 5] = 1
        blocks.append(b)
    return np.concatenate(blocks)


def test_split_is_stratified_reproducible_and_disjoint():
    y = _grouped_labels()
    s = split_dataset(y, val=0.15, test=0.15, seed=3)
    all_idx = np.concatenate([s.train, s.val, s.test])
    assert sorted(all_idx.tolist()) == list(range(len(y)))
    assert abs(len(s.test) - 0.15 * len(y)) <= 0.03 * len(y)
    for part in (s.train, s.val, s.test):
        # every class share within 3 points of the whole set, despite grouped file order
        assert np.abs(y[part].mean(0) - y.mean(0)).max() < 0.03
    s2 = split_dataset(y, val=0.15, test=0.15, seed=3)
    np.testing.assert_array_equal(s.test, s2.test)
    s3 = split_dataset(y, val=0.15, test=0.15, seed=4)
    assert not np.array_equal(s.test, s3.test)


def test_kfold_covers_every_image_once():
    y = _grouped_labels()
    folds = kfold_indices(y, k=5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(y)))
    for tr, h in folds:
        assert not set(tr) & set(h)
        assert np.abs(y[h].mean(0) - y.mean(0)).max() < 0.03


def test_real_data_split_proportions(real_data):
    ds = load_dataset(real_data)
    s = split_dataset(ds.labels, val=0.15, test=0.15, seed=0)
    for part in (s.train, s.val, s.test):
        assert np.abs(ds.labels[part].mean(0) - ds.labels.mean(0)).max() < 0.03


def test_bad_split_fractions():
    with pytest.raises(DataError):
        split_dataset(np.zeros((10, 2)), val=0.6, test=0.5)


def test_synthetic_set_has_all_classes(synth_dir):
    ds = load_dataset(synth_dir)
    assert len(ds) == 60 and ds.labels.sum(0).min() > 0 and ds.labels.sum(1).min() >= 1
    assert not check_images(ds.paths)


def test_one_pixel_image_is_accepted(tmp_path):
    from scenetag.data.preprocessing import Preprocessing
    from scenetag.data.transforms import make_views

    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "p.png")
    im = open_image(tmp_path / "p.png")
    assert im.size == (1, 1)
    v = make_views(im, ["orig", "flip", "crop"], Preprocessing(size=16), seed=0)
    assert v.shape == (3, 3, 16, 16)

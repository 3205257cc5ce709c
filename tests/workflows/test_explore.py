"""The exploration report: files, HTML, summary and the statistics behind them."""
from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenetag.data import MultiLabelDataset, load_dataset
from scenetag.workflows.explore import (
    FIGURES,
    cooccurrence,
    explore,
    image_sizes,
    label_correlation,
    sample_indices,
)

PNGS = [name for name, _, _ in FIGURES]
FILES = PNGS + ["summary.json", "report.html"]


class _Report(HTMLParser):
    """Collects <img> sources, <h2> headings and all text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.h2: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data)


def _assert_no_temp_files(out: Path) -> None:
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def synth_report(synth_dir, tmp_path_factory):
    ds = load_dataset(synth_dir)
    out = tmp_path_factory.mktemp("explore") / "rep"  # explore creates it
    return ds, out, explore(ds, out, samples_per_class=2, seed=1)


def test_every_file_is_written_and_every_png_is_a_sane_image(synth_report):
    _, out, summary = synth_report
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert summary["files"] == FILES
    for name in PNGS:
        with Image.open(out / name) as im:
            assert im.format == "PNG", name
            im.verify()
        with Image.open(out / name) as im:
            w, h = im.size
            assert 250 <= w <= 2500 and 200 <= h <= 2500, (name, im.size)
    assert (out / "samples.png").stat().st_size < 2_000_000
    _assert_no_temp_files(out)


def test_report_html_is_self_contained(synth_report):
    ds, out, summary = synth_report
    page = _Report()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert len(page.srcs) == len(PNGS)
    for src, name in zip(page.srcs, PNGS):  # each figure embedded, byte for byte, in report order
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):]) == (out / name).read_bytes()
    for _, heading, _ in FIGURES:
        assert heading in page.h2
    text = " ".join(page.text)
    assert all(c in text for c in ds.classes)
    assert summary["text"][0] in text
    assert "http" not in "".join(page.srcs)  # nothing external


def test_summary_json_matches_the_returned_dict_and_the_labels(synth_report):
    ds, out, summary = synth_report
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["per_class"] == dict(zip(ds.classes, ds.labels.sum(0).tolist()))
    assert summary["n_images"] == len(ds) == 60
    assert summary["text"][0].startswith("60 images, 5 classes")
    assert sum(summary["combinations"].values()) == 60
    counts = ds.labels.sum(0)
    assert summary["imbalance_ratio"] == pytest.approx(counts.max() / counts.min(), abs=1e-4)
    assert summary["cooccurrence"] == (ds.labels.T.astype(int) @ ds.labels.astype(int)).tolist()
    np.testing.assert_allclose(np.array(summary["correlation"], dtype=float), np.corrcoef(ds.labels.T.astype(float)), atol=1e-4)
    # make_synthetic draws 96x64 images, some turned to 64x96
    sizes = summary["image_sizes"]
    assert {s["size"] for s in sizes["most_common"]} == {"96x64", "64x96"}
    assert sizes["width"] == {"min": 64, "median": 96.0, "max": 96} and sizes["n_unreadable"] == 0


def test_cooccurrence_and_conditional_on_hand_built_labels():
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    counts, cond = cooccurrence(y)
    np.testing.assert_array_equal(counts, y.T.astype(int) @ y.astype(int))
    np.testing.assert_array_equal(counts, [[3, 2, 1], [2, 2, 1], [1, 1, 2]])
    np.testing.assert_allclose(cond[0], [1, 2 / 3, 1 / 3])  # P(B | A = class 0)
    np.testing.assert_allclose(cond[1], [1, 1, 0.5])
    np.testing.assert_allclose(cond[2], [0.5, 0.5, 1])
    np.testing.assert_allclose(label_correlation(y), np.corrcoef(y.T.astype(float)))


def test_correlation_equals_corrcoef_and_is_nan_for_a_constant_label():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.3).astype(np.uint8)
    np.testing.assert_allclose(label_correlation(y), np.corrcoef(y, rowvar=False), atol=1e-12)
    y[:, 2] = 0
    corr = label_correlation(y)
    assert np.isnan(corr[2]).all() and np.isnan(corr[:, 2]).all()
    assert not np.isnan(np.delete(np.delete(corr, 2, 0), 2, 1)).any()
    assert label_correlation(np.ones((4, 1))).shape == (1, 1)  # corrcoef would give a scalar
    _, cond = cooccurrence(y)
    assert np.isnan(cond[2]).all()


def _tiny_dataset(root: Path) -> MultiLabelDataset:
    """Five hand-labelled images of known sizes; 4.jpg is stored 30x20 with EXIF 'rotate 90'."""
    root.mkdir()
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.uint8)
    sizes = [(40, 20), (40, 20), (20, 40), (30, 20), (40, 20)]
    paths = []
    for i, (w, h) in enumerate(sizes, 1):
        p = root / f"{i}.jpg"
        exif = Image.Exif()
        if i == 4:
            exif[0x0112] = 6
        Image.new("RGB", (w, h), (20 * i, 100, 200)).save(p, exif=exif)
        paths.append(p)
    return MultiLabelDataset(tuple(paths), ("a", "b", "c"), labels, root)


def test_summary_of_a_hand_built_data_set(tmp_path):
    ds = _tiny_dataset(tmp_path / "d")
    np.testing.assert_array_equal(image_sizes(ds.paths), [[40, 20], [40, 20], [20, 40], [20, 30], [40, 20]])
    out = tmp_path / "rep"
    s = explore(ds, out, samples_per_class=2)
    assert s["per_class"] == {"a": 4, "b": 2, "c": 1}
    assert s["imbalance_ratio"] == 4.0
    assert s["cooccurrence"] == [[4, 2, 0], [2, 2, 0], [0, 0, 1]]
    assert s["conditional"] == [[1.0, 0.5, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert s["pairs"] == [{"a": "a", "b": "b", "count": 2, "P(B|A)": 0.5, "P(A|B)": 1.0}]
    assert s["image_sizes"]["most_common"][0] == {"size": "40x20", "count": 3}
    assert s["image_sizes"]["height"] == {"min": 20, "median": 20.0, "max": 40}
    assert s["image_sizes"]["n_portrait"] == 2
    assert s["labels_per_image"] == {"0": 0, "1": 3, "2": 2}
    assert any("imbalance" in line and "4.00" in line for line in s["text"])
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    _assert_no_temp_files(out)


def test_a_class_without_images_gives_nulls_not_a_crash(tmp_path):
    ds = _tiny_dataset(tmp_path / "d")
    y = np.concatenate([ds.labels, np.zeros((5, 1), np.uint8)], axis=1)
    ds = MultiLabelDataset(ds.paths, ds.classes + ("empty",), y, ds.root)
    out = tmp_path / "rep"
    s = explore(ds, out, samples_per_class=1)
    assert s["imbalance_ratio"] is None and any("no image has empty" in line for line in s["text"])
    assert s["correlation"][3] == [None] * 4 and s["conditional"][3] == [None] * 4
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert "NaN" not in (out / "summary.json").read_text()  # strict JSON


def test_sample_indices_are_reproducible_distinct_and_per_class():
    rng = np.random.default_rng(3)
    y = (rng.random((50, 4)) < 0.4).astype(np.uint8)
    rows = sample_indices(y, 3, seed=7)
    assert rows == sample_indices(y, 3, seed=7)
    assert rows != sample_indices(y, 3, seed=8)
    flat = [i for r in rows for i in r]
    assert len(flat) == len(set(flat))
    for j, r in enumerate(rows):
        assert len(r) <= 3 and all(y[i, j] for i in r)
    rejected = set(rows[0])
    rows2 = sample_indices(y, 3, seed=7, usable=lambda i: i not in rejected)
    assert not rejected & {i for r in rows2 for i in r} and len(rows2[0]) == min(3, int(y[:, 0].sum()) - len(rejected))


def test_report_survives_a_bad_image(synth_dir, tmp_path, caplog):
    root = tmp_path / "d"
    shutil.copytree(synth_dir, root)
    ds = load_dataset(root)
    bad = ds.paths[sample_indices(ds.labels, 1, seed=0)[0][0]]  # the first image the grid would show
    bad.write_text("not an image")
    out = tmp_path / "rep"
    summary = explore(ds, out, samples_per_class=1, seed=0)
    assert (out / "report.html").is_file() and summary["n_images"] == 60
    assert any(bad.name in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    assert summary["image_sizes"]["n_unreadable"] == 1
    assert any("could not be read" in line for line in summary["text"])
    _assert_no_temp_files(out)

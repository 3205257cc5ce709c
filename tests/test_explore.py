from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from scenetag.data import MultiLabelDataset, load_dataset
from scenetag.explore import cooccurrence, explore, label_correlation

FILES = ["label_distribution.png", "labels_per_image.png", "combinations.png", "correlation.png", "cooccurrence.png", "conditional.png", "image_sizes.png", "samples.png"]


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_report_files_are_valid(synth_dir, tmp_path):
    ds = load_dataset(synth_dir)
    out = tmp_path / "rep"
    summary = explore(ds, out, samples_per_class=2)
    for name in FILES:
        with Image.open(out / name) as im:
            im.verify()
            assert im.size[0] > 200 and im.size[1] > 150, name
    text = (out / "report.html").read_text()
    parser = _Imgs()
    parser.feed(text)
    assert len(parser.srcs) == len(FILES) and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert all(c in text for c in ds.classes)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["per_class"] == dict(zip(ds.classes, ds.labels.sum(0).tolist()))
    assert summary["text"][0].startswith("60 images, 5 classes")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_cooccurrence_and_conditional_on_hand_built_labels(tmp_path):
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    counts, cond = cooccurrence(y)
    np.testing.assert_array_equal(counts, [[3, 2, 1], [2, 2, 1], [1, 1, 2]])
    np.testing.assert_allclose(cond[0], [1, 2 / 3, 1 / 3])  # P(B | A = class 0)
    np.testing.assert_allclose(cond[1], [1, 1, 0.5])
    np.testing.assert_allclose(label_correlation(y), np.corrcoef(y.T.astype(float)))


def test_report_survives_a_bad_image(synth_dir, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(synth_dir, root)
    (root / "original" / "1.jpg").write_text("not an image")
    summary = explore(load_dataset(root), tmp_path / "rep", samples_per_class=1)
    assert (tmp_path / "rep" / "report.html").is_file() and summary["n_images"] == 60

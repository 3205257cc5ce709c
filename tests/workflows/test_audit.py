"""``scenetag audit``: out-of-fold scores of every (image, label) pair, suspects, report."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from scenetag.cli import main
from scenetag.data.layouts import load_dataset
from scenetag.errors import ConfigError
from scenetag.runs import AuditDir
from scenetag.workflows.audit import SUSPECT_COLUMNS, audit_from_cv


def test_every_pair_is_scored_and_the_suspects_are_the_disagreements(audited, synth_dir):
    out, summary = audited
    folder = AuditDir(out)
    scores = list(csv.DictReader(open(folder.scores)))
    found = list(csv.DictReader(open(folder.suspects)))
    assert list(scores[0]) == SUSPECT_COLUMNS and found and list(found[0]) == SUSPECT_COLUMNS
    assert len(scores) == summary["pairs"] == 60 * 5 and len({(r["image"], r["label"]) for r in scores}) == 300
    assert len(found) == summary["suspects"] == sum(float(r["score"]) > 0 for r in scores)
    assert [float(r["score"]) for r in found] == sorted((float(r["score"]) for r in found), reverse=True)
    for r in found:  # the kind follows the given label; the probability sits past the label's threshold
        threshold = summary["thresholds"][r["label"]]
        assert (r["kind"], r["given"]) in (("missing", "0"), ("extra", "1"))
        past = float(r["probability"]) - threshold  # both rounded in the files
        assert past > -1e-5 if r["kind"] == "missing" else past < 1e-5
    counts = summary["counts"]
    assert sum(v for kinds in counts.values() for v in kinds.values()) == len(found)
    page = folder.report.read_text()
    assert 'data-filter="label"' in page and 'data-filter="kind"' in page and page.count('class="card"') == min(len(found), 300)
    assert json.loads(folder.summary.read_text())["suspects"] == len(found)
    # labels.suggested.csv: the audited labels with exactly the surest suspects flipped, readable by `train --labels`
    original = load_dataset(synth_dir)
    suggested = load_dataset(synth_dir, labels=folder.suggested_labels, fmt="csv")
    assert suggested.paths == original.paths and suggested.classes == original.classes
    changed = {(str(original.paths[i]), original.classes[j]) for i, j in zip(*np.nonzero(suggested.labels != original.labels))}
    assert summary["accept_above"] == 0.75 and changed == {(r["image"], r["label"]) for r in found if float(r["score"]) > 0.75}
    assert len(changed) == summary["suggested_changes"]


def test_reusing_a_cross_validation_gives_the_same_audit(audited, tmp_path, capsys):
    out, summary = audited
    again = audit_from_cv(AuditDir(out).cv.path, AuditDir(tmp_path / "again"), "margin", min_score=0.0)
    assert again["counts"] == summary["counts"]
    assert (tmp_path / "again" / "suspects.csv").read_text() == AuditDir(out).suspects.read_text()
    assert main(["audit", "--from-cv", str(AuditDir(out).cv.path), "--out", str(tmp_path / "cl"), "--ranking", "cleanlab", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "suspected label errors among 60 images x 5 labels (cleanlab ranking" in printed and "suspects.csv" in printed
    assert main(["audit", "--from-cv", str(AuditDir(out).cv.path), "--out", str(tmp_path / "cut"), "--ranking", "margin", "--min-score", "0.5", "-q"]) == 0
    kept = list(csv.DictReader(open(AuditDir(tmp_path / "cut").suspects)))
    every = list(csv.DictReader(open(AuditDir(out).suspects)))
    assert kept == [r for r in every if float(r["score"]) > 0.5] and "labels.suggested.csv" in capsys.readouterr().out


def test_the_default_ranking_is_cleanlabs_filter(audited, tmp_path):
    from scenetag.data.label_issues import cleanlab_flags

    out, _ = audited
    summary = audit_from_cv(AuditDir(out).cv.path, AuditDir(tmp_path / "d"))
    assert summary["ranking"] == "cleanlab" and (summary["min_score"], summary["accept_above"]) == (0.0, 0.9)
    scores = list(csv.DictReader(open(AuditDir(tmp_path / "d").scores)))
    classes = list(summary["counts"])
    images = sorted({r["image"] for r in scores})
    given = np.zeros((len(images), len(classes)))
    probs = np.zeros_like(given)
    for r in scores:
        given[images.index(r["image"]), classes.index(r["label"])] = int(r["given"])
        probs[images.index(r["image"]), classes.index(r["label"])] = float(r["probability"])
    flagged = cleanlab_flags(given, probs)  # from the rounded probabilities: the same pairs on this set
    found = {(r["image"], r["label"]) for r in csv.DictReader(open(AuditDir(tmp_path / "d").suspects))}
    assert found == {(images[i], classes[j]) for i, j in zip(*np.nonzero(flagged))}


def test_an_unfinished_cross_validation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a finished cross-validation"):
        audit_from_cv(tmp_path, AuditDir(tmp_path / "a"))
    assert not (tmp_path / "a").exists()

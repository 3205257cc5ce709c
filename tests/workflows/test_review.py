"""``scenetag review``: decisions saved at once, resumable, corrected labels in a new file, bad requests refused."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from fastapi.testclient import TestClient

from scenetag.data.layouts import load_csv, load_dataset
from scenetag.errors import ConfigError, UsageError
from scenetag.runs import AuditDir
from scenetag.workflows.review import create_review_app, review_server


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def folder(audited, tmp_path):
    """A fresh copy of the audit folder for each test (decisions start empty)."""
    out, _ = audited
    copy = tmp_path / "audit"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("cv"))
    return copy


def test_decisions_are_saved_at_once_and_resume_after_a_restart(folder, synth_dir):
    before = _digest(synth_dir)
    client = TestClient(create_review_app(folder))
    state = client.get("/api/state").json()
    assert state["total"] >= 3 and state["reviewed"] == 0 and state["resume_at"] == 0
    first, second, third = state["suspects"][:3]
    for item, decision in ((first, "accept"), (second, "reject"), (third, "skip")):
        r = client.post("/api/decision", json={"index": item["index"], "image": item["image"], "label": item["label"], "decision": decision})
        assert r.status_code == 200, r.text
    assert AuditDir(folder).decisions.is_file()
    again = TestClient(create_review_app(folder)).get("/api/state").json()  # a new server on the same folder
    assert again["reviewed"] == 3 and again["resume_at"] == 3
    assert [s["decision"] for s in again["suspects"][:4]] == ["accept", "reject", "skip", None]
    # The new labels file: the original labels with only the accepted change applied.
    original = load_dataset(synth_dir)
    reviewed = load_csv(AuditDir(folder).reviewed_labels, classes=original.classes)
    changed = (reviewed.labels != original.labels).nonzero()
    row = [str(p) for p in original.paths].index(first["image"])
    assert list(zip(*changed)) == [(row, original.classes.index(first["label"]))]
    assert reviewed.labels[row, original.classes.index(first["label"])] == (1 if first["kind"] == "missing" else 0)
    assert _digest(synth_dir) == before  # the original data and labels are untouched, byte for byte


@pytest.mark.parametrize("body", [
    {"index": 10_000, "image": "x", "label": "sea", "decision": "accept"},  # unknown suspect
    {"index": 0, "image": "/etc/passwd", "label": "sea", "decision": "accept"},  # not that suspect's image
    {"index": 0, "label": "sea", "decision": "accept"},  # a field missing
    {"index": "zero", "image": "x", "label": "sea", "decision": "accept"},
    {"index": 0, "image": None, "label": "nolabel", "decision": "accept"},
    "not an object",
])  # fmt: skip
def test_bad_decisions_get_4xx_and_change_nothing(folder, body):
    client = TestClient(create_review_app(folder))
    first = client.get("/api/state").json()["suspects"][0]
    if isinstance(body, dict) and body.get("image") is None and "image" in body:
        body = body | {"image": first["image"]}  # right image, unknown label
    assert client.post("/api/decision", json=body).status_code == 422
    assert client.post("/api/decision", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    bad_decision = {"index": 0, "image": first["image"], "label": first["label"], "decision": "maybe"}
    assert client.post("/api/decision", json=bad_decision).status_code == 422
    assert client.get("/api/image/99999").status_code == 404
    assert not AuditDir(folder).decisions.exists() and not AuditDir(folder).reviewed_labels.exists()


def test_a_token_guards_every_request_and_is_required_off_loopback(folder):
    client = TestClient(create_review_app(folder, token="s3cret"))
    assert client.get("/api/state").status_code == 401 and client.get("/api/image/0").status_code == 401
    assert client.get("/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/decision", json={}).status_code == 401
    assert client.get("/").status_code == 200  # the page holds no data; it reads the token from its address
    assert client.get("/api/state", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/image/0?token=s3cret").status_code == 200  # an <img> cannot send headers
    with pytest.raises(UsageError, match="give --token"):
        review_server(folder, host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="not an audit folder"):
        create_review_app(folder / "nothing")

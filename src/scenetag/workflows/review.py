"""``scenetag review``: go through an audit's suspects in the browser, one at a time, and write corrected labels.

Every decision (accept / reject / skip) is saved at once, atomically, in the audit
folder (``decisions.json``), and the labels with every accepted change are written
as a *new* file, ``labels.reviewed.csv`` (CSV layout: ``image`` + one 0/1 column per
label); the original labels are never touched. Starting again resumes where the
decisions stop. Requests name a suspect by its position in ``suspects.csv`` and must
repeat its image and label, so a stale page cannot change another pair; no client
value is ever used as a file path.
"""
from __future__ import annotations

import csv
import io
import json
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..data.dataset import MultiLabelDataset
from ..data.images import open_image
from ..data.label_issues import Suspect
from ..data.layouts import write_labels_csv
from ..errors import ConfigError, DataError
from ..io import atomic_write_json
from ..runs import AuditDir, RunDir
from ..train.rundata import load_run_data
from .auth import check_bind, require_token

DECISIONS = ("accept", "reject", "skip")


def read_suspects(folder: AuditDir) -> list[Suspect]:
    if not folder.suspects.is_file() or not folder.summary.is_file():
        raise ConfigError(f"{folder}: not an audit folder (no {folder.suspects.name} / {folder.summary.name}); run `scenetag audit --out {folder}` first")
    with open(folder.suspects, newline="", encoding="utf-8") as f:
        try:
            return [Suspect(r["image"], r["label"], r["kind"], float(r["score"]), r["given"] == "1", float(r["probability"])) for r in csv.DictReader(f)]
        except (KeyError, ValueError) as e:
            raise DataError(f"{folder.suspects}: not a suspects table written by `scenetag audit` ({e})") from None


class Review:
    """The suspects, the decisions taken so far, and the labels they give; one decision at a time (thread-safe)."""

    def __init__(self, folder: Path | str):
        self.folder = AuditDir(folder)
        self.suspects = read_suspects(self.folder)
        self.dataset: MultiLabelDataset = load_run_data(RunDir(json.loads(self.folder.summary.read_text())["cv"]).fold(0))[0]
        self.row_of = {str(p): i for i, p in enumerate(self.dataset.paths)}
        missing = [s.image for s in self.suspects if s.image not in self.row_of or s.label not in self.dataset.classes]
        if missing:
            raise DataError(f"{self.folder.suspects}: {len(missing)} suspect(s) name an image or label the audited data does not have, e.g. {missing[0]}")
        self.decisions: dict[int, str] = self._read_decisions()
        self._lock = threading.Lock()

    def _read_decisions(self) -> dict[int, str]:
        if not self.folder.decisions.is_file():
            return {}
        try:
            saved = json.loads(self.folder.decisions.read_text())
            return {int(i): d["decision"] for i, d in saved["decisions"].items() if d["decision"] in DECISIONS and 0 <= int(i) < len(self.suspects)}
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise DataError(f"{self.folder.decisions}: unreadable decisions log ({e}); move it away to start the review again") from None

    def state(self) -> dict[str, Any]:
        """Everything the page shows: the suspects with their given labels and decisions, and where to resume."""
        items = []
        for i, s in enumerate(self.suspects):
            given = [c for c, v in zip(self.dataset.classes, self.dataset.labels[self.row_of[s.image]]) if v]
            items.append({"index": i, "image": s.image, "name": Path(s.image).name, "label": s.label, "kind": s.kind, "probability": s.probability, "given": given, "decision": self.decisions.get(i)})
        first_open = next((i for i in range(len(self.suspects)) if i not in self.decisions), len(self.suspects))
        return {"total": len(self.suspects), "reviewed": len(self.decisions), "resume_at": first_open, "suspects": items}

    def decide(self, index: int, image: str, label: str, decision: str) -> dict[str, Any]:
        """Record one decision (ValueError: a request that does not name this suspect; nothing is changed then)."""
        if not 0 <= index < len(self.suspects):
            raise ValueError(f"no suspect {index} (there are {len(self.suspects)})")
        s = self.suspects[index]
        if (image, label) != (s.image, s.label):
            raise ValueError(f"suspect {index} is {Path(s.image).name} / {s.label}, not {Path(image).name} / {label}")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        with self._lock:
            self.decisions[index] = decision
            self._save()
        return {"reviewed": len(self.decisions), "total": len(self.suspects)}

    def reviewed_labels(self) -> np.ndarray:
        labels = self.dataset.labels.copy()
        for i, decision in self.decisions.items():
            if decision == "accept":
                s = self.suspects[i]
                labels[self.row_of[s.image], self.dataset.classes.index(s.label)] = 1 if s.kind == "missing" else 0
        return labels

    def _save(self) -> None:
        atomic_write_json(self.folder.decisions, {"decisions": {str(i): {"image": self.suspects[i].image, "label": self.suspects[i].label, "decision": d} for i, d in sorted(self.decisions.items())}})
        write_labels_csv(self.folder.reviewed_labels, self.dataset.paths, self.dataset.classes, self.reviewed_labels())

    def jpeg(self, index: int, side: int = 900) -> bytes:
        if not 0 <= index < len(self.suspects):
            raise ValueError(f"no suspect {index}")
        img = open_image(self.suspects[index].image)
        img.thumbnail((side, side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88)
        return buf.getvalue()


def create_review_app(folder: Path | str, token: str | None = None):
    """The FastAPI app of one review; with ``token``, every request but the page must carry it (:mod:`.auth`)."""
    review = Review(folder)
    app = FastAPI(title="scenetag review")
    require_token(app, token, open_paths=("/",), open_prefixes=())

    @app.get("/api/state")
    def state() -> dict:
        return review.state()

    @app.get("/api/image/{index}")
    def image(index: int) -> Response:
        try:
            return Response(review.jpeg(index), media_type="image/jpeg")
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=404)

    @app.post("/api/decision")
    async def decision(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            return JSONResponse(review.decide(int(body["index"]), str(body["image"]), str(body["label"]), str(body["decision"])))
        except (ValueError, KeyError, TypeError) as e:  # malformed JSON, missing fields, another suspect: nothing is changed
            return JSONResponse({"detail": f"bad decision: {e}"}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("scenetag").joinpath("static/review.html").read_text(encoding="utf-8")

    return app


def review_server(folder: Path | str, host: str = "127.0.0.1", port: int = 8001, token: str | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the review page (blocking). It writes labels, so off loopback it needs a token."""
    import uvicorn

    from .serve import listen

    check_bind(host, token, "review (it writes labels)")
    app = create_review_app(folder, token)
    sock = listen(host, port)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}/"
    if on_ready:
        on_ready(url)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5)).run(sockets=[sock])

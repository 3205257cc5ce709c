"""The per-epoch table of training in a notebook, and how a notebook is told from a terminal."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from scenetag.notebook.progress import COLUMNS, EpochTable, clock, in_notebook

ROW = {"phase": "head", "epoch": 2, "lr": 0.01, "train_loss": 0.51234, "val_loss": 0.4, "val_samples_f1": 0.75, "val_micro_f1": 0.7, "val_mAP": 0.8, "seconds": 83.4}


def test_clock_reads_like_fastai():
    assert (clock(0), clock(83.4), clock(3600)) == ("00:00", "01:23", "60:00")


def test_a_row_shows_the_epoch_of_its_phase_and_the_time():
    cells = EpochTable({"head": 8}).cells(ROW)
    assert len(cells) == len(COLUMNS)
    assert cells[:3] == ["head", "2/8", 0.51234] and cells[-1] == "01:23"


def test_the_table_is_escaped_html_with_every_row():
    table = EpochTable({"<b>": 1})
    table(SimpleNamespace(history=[ROW | {"phase": "<b>", "epoch": 1}]), None)  # the epoch callback
    html = table.html()
    assert "<th>train loss</th>" in html and "0.5123" in html and "1/1" in html
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_not_a_notebook_under_pytest():
    assert in_notebook() is False


def test_show_displays_once_then_updates_in_place(monkeypatch):
    display_mod = pytest.importorskip("IPython.display")
    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj.data))

    def display(obj, display_id=None):
        calls.append(("display", obj.data))
        assert display_id is True
        return Handle()

    monkeypatch.setattr(display_mod, "display", display)
    table = EpochTable({"head": 2})
    table.show()
    for epoch in (1, 2):
        table(SimpleNamespace(history=[ROW | {"epoch": epoch}]), None)
    assert [kind for kind, _ in calls] == ["display", "update", "update"]
    assert "<td>" not in calls[0][1] and calls[-1][1].count("<td>head</td>") == 2


def test_a_kernel_is_a_notebook_and_a_terminal_shell_is_not(monkeypatch):
    ipython = pytest.importorskip("IPython")
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setattr(ipython, "get_ipython", lambda: SimpleNamespace(kernel=object()))
    assert in_notebook() is True
    monkeypatch.setattr(ipython, "get_ipython", lambda: SimpleNamespace())
    assert in_notebook() is False

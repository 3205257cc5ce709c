"""The README's figures come from docs/figures/*.json (written by bench/readme_figures.py from run folders),
and those were measured with today's default config: changing a default without re-measuring fails here."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from scenetag.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "bench" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_rendered_from_the_figure_files():
    script = _script()
    text = (ROOT / "README.md").read_text()
    assert script.rewrite(text, script.load_figures()) == text, "README.md is stale: run .venv/bin/python bench/readme_figures.py"


@pytest.mark.parametrize("name, preset", [("make_run", "default"), ("cv5", "default"), ("cv5_best", "best")])
def test_figures_were_measured_with_todays_config(name, preset):
    path = ROOT / "docs" / "figures" / f"{name}.json"
    assert path.is_file(), f"{path} missing: measure it (see bench/readme_figures.py)"
    # Read through today's config model: keys added since (e.g. a phase's ``stop``) take their defaults,
    # which keep the recipe as it was; any value that differs from today's default still fails.
    measured = _script().portable_config(config_from_dict(json.loads(path.read_text())["config"]).to_dict())
    today = _script().portable_config(load_config(None, [], preset).to_dict())
    assert measured == today, f"{path.name} was measured with another config; re-run its command and bench/readme_figures.py --collect"


def test_make_run_row_shows_what_the_run_wrote():
    script = _script()
    figures = script.load_figures()
    row = next(line for line in script.render_results(figures).splitlines() if "`make run`" in line)
    assert f"{figures['make_run']['test']['samples_f1']:.4f}" in row and f"{figures['make_run']['test']['mAP']:.4f}" in row
    assert row in (ROOT / "README.md").read_text()

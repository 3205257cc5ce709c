"""Shared fixtures: tiny synthetic data sets made in temp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest

from scenetag.synth import make_synthetic

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "miml-scene"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """60 synthetic scenes in the MIML layout (read-only by convention)."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n=60, seed=0)


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "labels.json").is_file():
        pytest.skip(f"real MIML data not present at {REAL_DATA}")
    return REAL_DATA.resolve()

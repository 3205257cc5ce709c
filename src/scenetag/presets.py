"""Named recipes: config overrides applied under the config file and flags (``--preset``)."""
from __future__ import annotations

PRESETS: dict[str, list[str]] = {
    "default": [],
    "best": ["model.backbone=lite2"],  # slower: Lite2 at 260 px
}

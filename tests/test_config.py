from __future__ import annotations

import pytest
import yaml

from scenetag.config import Config, ConfigError, config_to_yaml, load_config


def test_defaults_validate_and_yaml_round_trip(tmp_path):
    cfg = load_config()
    p = tmp_path / "c.yaml"
    p.write_text(config_to_yaml(cfg))
    assert load_config(p) == cfg


def test_yaml_then_flags_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {"seed": 7, "batch_size": 16}, "model": {"backbone": "lite2"}}))
    cfg = load_config(p, ["train.seed=9", "train.phases.1.epochs=2", "train.views=[orig, flip]", "train.weight_decay=0"])
    assert cfg.train.seed == 9 and cfg.train.batch_size == 16 and cfg.model.backbone == "lite2"
    assert cfg.train.phases[1].epochs == 2 and cfg.train.views == ["orig", "flip"]
    assert cfg.train.weight_decay == 0.0 and isinstance(cfg.train.weight_decay, float)
    assert Config().train.seed == 0  # defaults untouched


def test_exponent_without_dot_is_a_float():
    # YAML 1.1 reads 1e-3 as a string; a config value typed float accepts it.
    cfg = load_config(None, ["train.phases.1.lr=1e-3", "train.weight_decay=5E-2"])
    assert cfg.train.phases[1].lr == 1e-3 and cfg.train.weight_decay == 0.05
    with pytest.raises(ConfigError, match="train.weight_decay"):
        load_config(None, ["train.weight_decay=lots"])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.sede=1"], "unknown config key: train.sede"),
        (["train.seed=abc"], "train.seed: expected int"),
        (["train.phases.0.lr=-0.1"], "lr must be >= 0"),
        (["train.views=[orig, upside_down]"], "unknown view"),
        (["train.pos_weight=3"], "expected true/false"),
        (["seed"], "must look like section.key=value"),
    ],
)
def test_bad_values_rejected(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, overrides)


def test_unknown_yaml_key_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  nope: 1\n")
    with pytest.raises(ConfigError, match="unknown config key\\(s\\): train.nope"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_presets_apply_under_yaml_and_flags(tmp_path):
    assert load_config(None, [], "best").model.backbone == "lite2"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": {"backbone": "lite1"}}))
    assert load_config(p, [], "best").model.backbone == "lite1"  # the file wins over the preset
    assert load_config(None, ["model.backbone=lite0"], "best").model.backbone == "lite0"
    assert load_config(None, [], "default") == load_config()
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        load_config(None, [], "fast")

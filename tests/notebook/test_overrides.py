"""Notebook keywords and override dicts map onto the config keys that --set would change."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scenetag.config import load_config
from scenetag.errors import ConfigError, ScenetagError, UsageError
from scenetag.notebook.overrides import SHORTHANDS, keyword_key, override_list, yaml_value


def test_keywords_shorthands_and_dicts_set_the_config_keys(tmp_path):
    keywords = {"backbone": "test_efficientnet", "seed": 3, "train__phases__0__epochs": 1, "model__image_size": 48, "train__views": ["orig", "flip"], "train__cache": False}
    cfg = load_config(None, override_list(tmp_path / "data", {"train.batch_size": 8, "data.labels": "1e-3"}, keywords))
    assert cfg.data.path == str(tmp_path / "data") and cfg.data.labels == "1e-3"  # a string stays a string
    assert (cfg.model.backbone, cfg.model.image_size) == ("test_efficientnet", 48)
    assert (cfg.train.seed, cfg.train.batch_size, cfg.train.phases[0].epochs, cfg.train.views, cfg.train.cache) == (3, 8, 1, ["orig", "flip"], False)


def test_a_list_of_strings_reads_like_set(tmp_path):
    cfg = load_config(None, override_list(None, ["train.phases.1.lr=1e-3", "train.views=[orig, crop]"], {}))
    assert cfg.train.phases[1].lr == 0.001 and cfg.train.views == ["orig", "crop"]


def test_later_spellings_win():
    ov = override_list(None, {"train.seed": 1}, {"seed": 2, "train__seed": 3})
    assert ov == ["train.seed=2", "train.seed=1", "train.seed=3"]
    assert load_config(None, ov).train.seed == 3


@pytest.mark.parametrize("value", ["1e-3", "yes", "null", "[a, b]", "a: b", "é", 7, True, None, [1, {"a": "b"}]])
def test_values_read_back_as_themselves(value):
    assert yaml.safe_load(yaml_value(value)) == value


def test_paths_are_strings_and_small_floats_numbers():
    assert yaml.safe_load(yaml_value(Path("/x y"))) == "/x y"
    assert load_config(None, [f"train.phases.0.lr={yaml_value(1.5e-5)}"]).train.phases[0].lr == 1.5e-5  # YAML 1.1 reads 1.5e-05 as text


def test_double_underscore_nests_and_a_single_one_does_not():
    assert keyword_key("train__lr_find_steps") == "train.lr_find_steps"
    assert keyword_key("train__phases__0__lr") == "train.phases.0.lr"
    assert keyword_key("layout") == SHORTHANDS["layout"] == "data.format"


@pytest.mark.parametrize("bad", [{"epochs": 3}, {"train_batch_size": 8}])
def test_an_unknown_keyword_is_a_one_line_usage_error(bad):
    with pytest.raises(UsageError) as e:
        override_list(None, None, bad)
    assert "section__key" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bad", ["train.seed=1", ["train.seed"], [3], {"model.weights": object()}])
def test_malformed_overrides_are_usage_errors(bad):
    with pytest.raises(UsageError):
        override_list(None, bad, {})


@pytest.mark.parametrize(("keywords", "says"), [({"train__bogus": 1}, "unknown config key: train.bogus"), ({"train__batch_size": 0}, "train.batch_size must be > 0"), ({"model__head": 3}, "model.head")])
def test_bad_keys_and_values_name_the_key_in_one_line(keywords, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, override_list(None, None, keywords))
    assert isinstance(e.value, ScenetagError) and says in str(e.value) and "\n" not in str(e.value)

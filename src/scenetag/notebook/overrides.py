"""Notebook keyword arguments -> the ``section.key=value`` overrides of :func:`scenetag.config.load_config`.

Three spellings, applied in this order (a later one wins):

* shorthands named like the ``scenetag train`` flags: ``backbone="lite1"``, ``seed=3``, ``labels=FILE``...;
* ``overrides=``: a dict of dotted keys to Python values (``{"train.batch_size": 16}``), or a list of
  ``"key=value"`` strings read as YAML, exactly like ``--set`` (``["train.phases.0.epochs=1"]``);
* keyword arguments with ``__`` between the key's parts: ``train__batch_size=16``,
  ``train__phases__0__epochs=1`` (config keys contain ``_``, so one underscore never nests).

Python values keep their type (a string stays a string, a list stays a list); the config then checks
every key and value, so a wrong one is one :class:`~scenetag.errors.ConfigError` naming it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UsageError

# Keyword -> config key: the same shorthands as the flags of ``scenetag train``.
SHORTHANDS: dict[str, str] = {
    "labels": "data.labels", "layout": "data.format", "backbone": "model.backbone", "weights": "model.weights",
    "seed": "train.seed", "loss": "train.loss", "engine": "train.engine", "device": "train.device", "amp": "train.amp",
}  # fmt: skip
NEST = "__"


def yaml_value(value: Any) -> str:
    """A Python value as the YAML text an override carries, read back as the same value (paths as strings)."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": the config reads them as numbers
    try:
        return json.dumps(value)  # JSON is YAML: strings stay quoted strings, lists and dicts stay structures
    except TypeError:
        raise UsageError(f"override value {value!r}: use a number, string, bool, None, list or dict") from None


def keyword_key(name: str) -> str:
    """``train__phases__0__epochs`` -> ``train.phases.0.epochs``; a shorthand -> its key."""
    if name in SHORTHANDS:
        return SHORTHANDS[name]
    if NEST not in name:
        raise UsageError(f"unknown option {name!r}: give a config key as section__key=value (e.g. train__batch_size=16) or use one of {', '.join(SHORTHANDS)}")
    return ".".join(name.split(NEST))


def _listed(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={yaml_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise UsageError("overrides must be a dict of dotted keys to values ({'train.batch_size': 16}) or a list of 'key=value' strings")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UsageError(f"override {bad[0]!r} must look like section.key=value")
    return list(overrides)


def override_list(data: str | Path | None, overrides: Mapping[str, Any] | Sequence[str] | None, keywords: Mapping[str, Any]) -> list[str]:
    """The overrides, in the order they apply: ``data``, shorthands, ``overrides``, ``section__key`` keywords."""
    first = [f"data.path={yaml_value(data)}"] if data is not None else []
    short = [f"{SHORTHANDS[k]}={yaml_value(v)}" for k, v in keywords.items() if k in SHORTHANDS]
    nested = [f"{keyword_key(k)}={yaml_value(v)}" for k, v in keywords.items() if k not in SHORTHANDS]
    return first + short + _listed(overrides) + nested

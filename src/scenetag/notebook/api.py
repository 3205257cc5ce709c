"""The notebook API's entry points: explore a data set, train a run (or reuse / resume it), load a run.

Each mirrors a command (``scenetag explore``, ``scenetag train``) and calls the same library
functions; results are objects that render in Jupyter, not config or run-folder internals.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import Config, config_diff, load_config, with_absolute_paths
from ..data.images import DEFAULT_MAX_PIXELS, check_images
from ..data.layouts import DEFAULT_DATA, load_dataset
from ..errors import ConfigError, DataError
from ..runs import RunDir
from ..train.recipe import train as train_recipe
from ..train.recipe import train_or_resume
from ..workflows.explore import explore as explore_data
from .overrides import override_list
from .progress import EpochTable, in_notebook
from .results import Exploration
from .run import Run

log = logging.getLogger(__name__)


def explore(data: str | Path = DEFAULT_DATA, out: str | Path = "runs/explore", labels: str | Path | None = None, layout: str = "auto", samples: int = 4, seed: int = 0, check: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Exploration:
    """``scenetag explore``: label statistics and pictures of a data set into ``out`` (report.html); returns the summary.

    ``check``: decode every image first and raise a DataError naming the bad ones.
    """
    ds = load_dataset(data, labels, layout)
    if check:
        errors = check_images(ds.paths, max_pixels)
        if errors:
            raise DataError(f"{len(errors)} bad image file(s), e.g. {errors[0]}")
    summary = explore_data(ds, Path(out), samples_per_class=samples, seed=seed, max_pixels=max_pixels)
    return Exploration(summary, Path(out))


def fit(data: str | Path | None = None, out: str | Path = "runs/train", *, overrides: Mapping[str, Any] | Sequence[str] | None = None, config: str | Path | None = None, preset: str = "default", progress: bool = True, **options: Any) -> Run:
    """``scenetag train``: train the recipe on ``data`` into the run folder ``out`` and return the :class:`Run`.

    Settings (see :mod:`scenetag.notebook.overrides`): flag shorthands (``backbone="lite1"``, ``seed=3``),
    ``overrides={"train.batch_size": 16}`` and ``section__key=value`` keywords (``train__batch_size=16``),
    over ``config`` (a YAML file) and ``preset``. ``out`` holding a finished run with the same settings
    is reused (remove it to train again), an interrupted one is resumed; other settings there are an error.
    ``progress``: a per-epoch table in Jupyter, tqdm bars in a terminal.
    """
    cfg = load_config(config, override_list(data, overrides, options), preset)
    table = EpochTable({p.name: p.epochs for p in cfg.train.phases}) if progress and in_notebook() else None
    _fit(cfg, RunDir(out), bars=progress and table is None, callbacks=[table] if table is not None else [])
    return Run(out)


def _fit(cfg: Config, run: RunDir, bars: bool, callbacks: list[EpochTable]) -> None:
    """Train into ``run``; reuse it when finished with these settings, resume it when interrupted (other settings: an error)."""
    if run.is_finished() and run.config.is_file():
        if train_or_resume(cfg, run.path, progress=bars).get("reused"):
            log.warning("%s already holds a finished run with these settings: reusing it (remove the folder to train again)", run)
        return
    resume = run.is_started() and run.config.is_file()
    if resume:
        differ = config_diff(load_config(run.config), with_absolute_paths(cfg))
        if differ:
            raise ConfigError(f"{run} holds an interrupted run with other settings ({', '.join(differ)} differ); pass another out or remove it")
        log.warning("%s holds an interrupted run with these settings: resuming it", run)
    for table in callbacks:
        table.show()  # the header, before the caches are built
    train_recipe(None if resume else cfg, run.path, resume=resume, progress=bars, callbacks=callbacks)

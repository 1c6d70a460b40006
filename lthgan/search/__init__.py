"""The lottery-ticket search, as a package of one concept per module:

* :mod:`~lthgan.search.config`: :class:`SearchConfig` (each field's role stated once) and
  :func:`resolve` (the family's and preset's defaults filled in);
* :mod:`~lthgan.search.methods`: the pruning methods (masks, schedule, start state);
* :mod:`~lthgan.search.rundir`: :class:`RunDir`, the only place that knows a run's file
  names, its lock and its verification;
* :mod:`~lthgan.search.checkpoints`: state files and models rebuilt from them;
* :mod:`~lthgan.search.evaluation`: scoring a level and the verdict;
* :mod:`~lthgan.search.loop`: the round loop;
* :mod:`~lthgan.search.start`: :func:`run_search` and :func:`resume_search`;
* :mod:`~lthgan.search.report`: tables and plots of finished runs.
"""
from __future__ import annotations

from . import methods
from .checkpoints import (load_checkpoint, load_models, load_tensors, model_from_checkpoint,
                          save_checkpoint, save_tensors)
from .config import (D_INITS, EXTRACTORS, LAYERS, Resolved, SearchConfig, default_preset, field_names,
                     level_targets, parse_rewind, resolve)
from .errors import ConfigMismatchError, RunDirError, SearchError
from .evaluation import check_extractor, evaluate_checkpoints, evaluate_models, load_eval_data, load_train_data
from .verdict import direction_fids, judge_directions, judge_seeds, level_row, paired_test
from .rundir import Level, RunDir, check_writable, eval_checkpoints, file_kind, find_run_dir, level_name
from .start import (baseline_name, check_ready, config_from_record, load_config, resume_search, run_search,
                    transfer_config)

__all__ = [
    "SearchConfig", "Resolved", "SearchError", "RunDirError", "ConfigMismatchError", "D_INITS",
    "LAYERS", "EXTRACTORS", "resolve", "level_targets", "default_preset", "field_names", "parse_rewind", "methods",
    "judge_directions", "judge_seeds", "paired_test", "direction_fids", "level_row", "check_ready", "check_extractor", "run_search", "resume_search", "load_config",
    "config_from_record", "baseline_name", "load_checkpoint", "save_checkpoint",
    "model_from_checkpoint", "load_models", "load_tensors", "save_tensors", "evaluate_models",
    "load_train_data", "load_eval_data", "RunDir", "Level", "level_name", "find_run_dir",
    "check_writable", "eval_checkpoints", "file_kind", "transfer_config", "evaluate_checkpoints",
]

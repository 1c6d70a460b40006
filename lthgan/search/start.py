"""Starting a search: choose its run directory (a new run, the same run continued, a baseline
of the run already there, or a dense-only run taken over), check everything that could fail
later (data, feature extractor, masks source, ticket, writability), then run it under the
run directory's lock."""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import __version__
from .._io import atomic_write_bytes, jsonable
from . import methods as _methods
from .config import MIN_EVAL_IMAGES, VARIANT, Resolved, SearchConfig, default_preset, field_names, resolve
from .errors import ConfigMismatchError, RunDirError, SearchError
from .evaluation import check_extractor, fid_size_note, load_eval_data, load_train_data
from .rundir import RunDir, check_writable

__all__ = ["run_search", "resume_search", "transfer_config", "check_ready", "config_record", "config_from_record",
           "load_config", "baseline_name", "CONFIG_FORMAT"]

CONFIG_FORMAT = 1


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- config records


def config_record(res: Resolved, command: str = "search") -> dict:
    """What ``config.json`` holds. ``command`` is "search", or "train" for a dense-only run
    (which a later search with the same dense settings may take over)."""
    return {"format": CONFIG_FORMAT, "command": command, "lthgan_version": __version__,
            "search": asdict(res.config), "resolved": res.to_dict(),
            "gan_config": jsonable(asdict(res.gan_config))}


def load_config(run_dir) -> dict:
    """``config.json`` of a run directory; :class:`RunDirError` when missing or unreadable."""
    return RunDir(run_dir).read_config()


def config_from_record(record: dict, where) -> SearchConfig:
    stored = record.get("search")
    if not isinstance(stored, dict):
        raise RunDirError(f"{where}/config.json is corrupt: it has no 'search' section")
    unknown = sorted(set(stored) - {f.name for f in fields(SearchConfig)})
    if unknown:
        raise RunDirError(f"{where}/config.json has unknown settings {unknown}; it was written by "
                          f"another lthgan version (this is {__version__})")
    try:
        return SearchConfig(**stored).validate()
    except (SearchError, TypeError) as e:
        raise RunDirError(f"{where}/config.json is corrupt: {e}") from None


def _differing(a: SearchConfig, b: SearchConfig) -> list[str]:
    free = set(field_names(role="free"))
    da, db = asdict(a), asdict(b)
    return [k for k in da if k not in free and da[k] != db[k]]


def baseline_name(cfg: SearchConfig, parent: SearchConfig) -> str:
    """Folder name of a baseline: the method plus the variant settings that differ."""
    parts = [cfg.method]
    for k in sorted(set(field_names(role=VARIANT)) - {"method", "masks_from"}):
        a, b = getattr(cfg, k), getattr(parent, k)
        if a != b:
            v = a if not isinstance(a, bool) else ("on" if a else "off")
            parts.append(f"{k.replace('_', '-')}-{v}".replace(":", "-").replace("+", "-"))
    return "-".join(str(p) for p in parts)


# --------------------------------------------------------------------------- planning


def _plan(config: SearchConfig, out, command: str
          ) -> tuple[Resolved, RunDir, Callable[[Callable | None], None] | None]:
    """Choose the directory for ``config`` given ``out`` without writing anything: a new run,
    the same run (continue) or a baseline of the run already there. Returns the resolved
    config, the run directory and what creates it (None when it exists)."""
    res = resolve(config)
    run = RunDir(out)
    if run.path.exists() and not run.path.is_dir():
        raise RunDirError(f"{run.path} exists and is a file; a run directory is a folder")
    if not run.exists:
        if run.path.exists() and any(run.path.iterdir()):
            raise RunDirError(f"{run.path} is a non-empty folder without config.json, not a run "
                              "directory; choose an empty or new folder")
        return res, run, lambda log: _create(run, res, command, log)
    record = run.read_config()
    stored = config_from_record(record, run.path)
    diff = _differing(stored, config)
    if not diff:
        return res, run, None
    dense_keys = field_names(dense=True)
    if (record.get("command") == "train" and command == "search"
            and all(getattr(stored, k) == getattr(config, k) for k in dense_keys)):
        # a search taking over a dense-only run (lthgan train) with the same dense settings
        return res, run, lambda log: _create(run, res, command, log)
    if not set(diff) <= set(field_names(role=VARIANT)):
        raise ConfigMismatchError(run.path, diff, asdict(stored), asdict(config),
                                  hint="; choose another output folder, or resume it without changing them")
    bdir = run.baseline(baseline_name(config, stored))
    if _methods.get(config.method).masks.name == "reuse" and config.masks_from is None:
        config = dataclasses.replace(config, masks_from=str(run.path.resolve()))
        res = resolve(config)
    if bdir.exists:
        _check_same(bdir, config)
        return res, bdir, None

    return res, bdir, lambda log: _create(bdir, res, "search", log, parent=run, parent_cfg=stored)


def _create(run: RunDir, res: Resolved, command: str, log, parent: RunDir | None = None,
            parent_cfg: SearchConfig | None = None) -> None:
    """Write a new run's config.json (under ``--seeds`` also each seed's run directory); a
    baseline reuses its parent's dense level (of the same seed) when it would be the same."""
    from .seeds import seed_config

    run.write_config(config_record(res, command))
    cfg = res.config
    if cfg.seeds == 1:
        if parent is not None:
            _reuse_dense(parent, parent_cfg, run, cfg, log)
        return
    for k in range(cfg.seeds):
        c = seed_config(cfg, k)
        run.seed_run(k).write_config(config_record(resolve(c), command))
        if parent is not None:
            _reuse_dense(parent.seed_run(k), seed_config(parent_cfg, k), run.seed_run(k), c, log)


def _check_same(run: RunDir, config: SearchConfig) -> SearchConfig:
    stored = config_from_record(run.read_config(), run.path)
    diff = _differing(stored, config)
    if diff:
        raise ConfigMismatchError(run.path, diff, asdict(stored), asdict(config),
                                  hint="; resume it without changing them, or choose another output folder")
    return stored


def _reuse_dense(parent: RunDir, parent_cfg: SearchConfig, bdir: RunDir, cfg: SearchConfig, log) -> None:
    """Copy the parent's θ0/φ0 and finished dense level into a new baseline when the dense
    run would be identical (every setting the dense level depends on is equal)."""
    same = all(getattr(parent_cfg, k) == getattr(cfg, k) for k in field_names(dense=True))
    src = parent.level(0)
    if not same or not src.done:
        return
    src.verify()
    dst = bdir.level(0)
    for folder, to in ((parent.init_dir, bdir.init_dir), (src.path, dst.path)):
        to.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.name not in (src.DONE, src.TRAIN_STATE):
                atomic_write_bytes(to / f.name, f.read_bytes())
    dst.mark_done(note=f"copied from {src.path}")
    if log:
        log(f"dense: reused from {src.path} (same data, model, schedule and seed)")


# --------------------------------------------------------------------------- checks


def _eval_sizes(res: Resolved, evald) -> tuple[int, int]:
    """Images an evaluation scores (generated, or translated per direction) and reference
    images it judges them against (the smallest domain's)."""
    def smallest(x):
        return min(len(d) for d in x) if isinstance(x, (tuple, list)) else len(x)

    n_real = smallest(evald.reference)
    avail = smallest(evald.sources) if evald.sources is not None else None
    n_fake = res.eval_samples if avail is None else min(avail, res.eval_samples or avail)
    return n_fake, n_real


def check_ready(res: Resolved, run: RunDir | None = None, log: Callable[[str], None] | None = None):
    """Fail before any training on what would only fail later: the data (loaded and returned
    as ``(train, eval)``), the feature extractor's weights, the evaluation size, the masks
    source and the ticket."""
    from ..gans import dist as _dist

    cfg, fam = res.config, res.family
    if cfg.seeds > 1 and (_dist.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise SearchError("seeds > 1 runs its own processes and cannot run under torchrun; run the "
                          "seeds one at a time there", "seeds")
    if run is not None:
        check_writable(run.path)
    method = _methods.get(cfg.method)
    if method.masks.name == "reuse":
        _check_masks_source(cfg)
    if method.masks.name == "ticket":
        _check_ticket(res)
    train = load_train_data(fam, res.data, res.gan_config.resolution, cfg.data_root, cfg.download)
    evald = load_eval_data(fam, res.data, res.gan_config.resolution, cfg.data_root, cfg.download, train,
                           reference=cfg.fid_reference)
    n_fake, n_real = _eval_sizes(res, evald)
    if min(n_fake, n_real) < MIN_EVAL_IMAGES:
        raise SearchError(f"an evaluation would score {n_fake} images against {n_real}; FID needs at least "
                          f"{MIN_EVAL_IMAGES} on each side", "data", "eval_samples")
    check_extractor(res.extractor, cfg.inception_weights)
    if res.content_extractor == "vgg":
        from ..metrics import MetricsError
        from ..perceptual import check_vgg_weights

        try:
            check_vgg_weights(cfg.vgg_weights)
        except MetricsError as e:
            raise SearchError(f"vgg_weights: {e}", "vgg_weights", "content_extractor") from None
    note = fid_size_note(res.extractor, n_fake, n_real)
    if note and log is not None:
        log(note)
    return train, evald


def _check_masks_source(cfg: SearchConfig) -> None:
    if cfg.masks_from is None:
        raise SearchError(f"method {cfg.method} needs masks_from RUN_DIR: an IMP run whose round "
                          "masks it reuses (or run it with its output folder set to that IMP run)",
                          "masks_from")
    src = config_from_record(RunDir(cfg.masks_from).read_config(), cfg.masks_from)
    if src.method != "imp":
        raise SearchError(f"masks_from {cfg.masks_from} is a {src.method} run, not an IMP run", "masks_from")
    if src.seeds != cfg.seeds:
        raise SearchError(f"masks_from {cfg.masks_from} holds {src.seeds} seed(s), this search {cfg.seeds}; "
                          "a random ticket of each seed needs the IMP masks of that seed", "masks_from", "seeds")
    diff = [k for k in field_names(masks=True) if getattr(src, k) != getattr(cfg, k)]
    if diff:
        raise SearchError(f"masks_from {cfg.masks_from} was run with other settings ("
                          + ", ".join(f"{k}={getattr(src, k)!r}" for k in diff)
                          + "); a random ticket needs the same model, schedule and pruned layers",
                          "masks_from", *diff)


def _check_ticket(res: Resolved) -> None:
    """The transferred ticket must fit the model this search builds."""
    from ..ticket import TicketError

    ticket = _methods.load_ticket(res.config.ticket)
    task = _build_for(ticket, res.family.name, res.gan_config)
    try:
        ticket.validate(task.models)
    except TicketError as e:
        raise SearchError(f"ticket {res.config.ticket} does not fit the {res.family.name} model "
                          f"this search builds: {e}", "ticket") from None


# --------------------------------------------------------------------------- entry points


def run_search(config: SearchConfig, out, *, quiet: bool = False, log: Callable[[str], None] | None = None,
               max_level: int | None = None, command: str = "search") -> tuple[Path, list[dict]]:
    """Run (or continue) the search ``config`` in ``out``. Returns the run directory (``out``,
    or ``out/baselines/NAME`` for a variant of the search already in ``out``) and the metrics
    of its levels. ``command="train"`` marks a dense-only run (use ``max_level=0``).
    Everything that can be checked is checked before the first write."""
    from ..gans import dist as _dist

    if command not in ("search", "train"):
        raise SearchError(f"command must be 'search' or 'train', got {command!r}")
    say = (lambda m: None) if quiet else (log or _default_log)
    if config.preset is None:
        config = dataclasses.replace(config, preset=default_preset(config.device))
        say(f"preset: {config.preset} (the default on this machine's device; set it with preset)")
    res, run, create = _plan(config, out, command)
    data = check_ready(res, run, say)
    with _locked(run):
        if create is not None:
            if _dist.is_main_process():
                create(say if not quiet else None)
            _dist.barrier()
        else:
            run.verify()
        return run.path, _run(_searcher(res, run, quiet, log, max_level, data))


def _run(search) -> list[dict]:
    """``search.run()``; an interrupt carries the run directory (``run_dir``) to the caller,
    which can then say how to continue."""
    try:
        return search.run()
    except KeyboardInterrupt as e:
        e.run_dir = search.run_dir.path
        raise


def resume_search(run_dir, overrides: Mapping[str, Any] | None = None, *, quiet: bool = False,
                  log: Callable[[str], None] | None = None, max_level: int | None = None,
                  stop_when_unmatched: bool = True) -> tuple[Path, list[dict]]:
    """Continue the search in ``run_dir`` from its last checkpoint. ``overrides`` are settings
    given again: any that differ from the stored ones (except those free to change) make it
    refuse with :class:`ConfigMismatchError`. Finished levels are verified first.
    ``stop_when_unmatched=False`` leaves the stopping of an until_unmatched search to the
    caller (the coordinator of ``--seeds``)."""
    run = RunDir(run_dir)
    stored = config_from_record(run.read_config(), run.path)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(SearchConfig)})
    if unknown:
        raise SearchError(f"unknown settings {unknown}")
    given = dataclasses.replace(stored, **overrides)
    diff = _differing(stored, given)
    if diff:
        raise ConfigMismatchError(run.path, diff, asdict(stored), asdict(given),
                                  hint="; resume without changing them, or start a new output folder")
    res = resolve(given)
    data = check_ready(res, run, None if quiet else (log or _default_log))
    with _locked(run):
        run.verify()
        return run.path, _run(_searcher(res, run, quiet, log, max_level, data, stop_when_unmatched))


def _searcher(res: Resolved, run: RunDir, quiet, log, max_level, data, stop_when_unmatched=True):
    """The search object for ``run``: the round loop, or the coordinator of several seeds."""
    from .loop import Search
    from .seeds import SeedSearch

    if res.config.seeds > 1:
        return SeedSearch(res, run, quiet=quiet, log=log, max_level=max_level)
    return Search(res, run, quiet=quiet, log=log, max_level=max_level, data=data,
                  stop_when_unmatched=stop_when_unmatched)


class _locked:
    """The run directory's lock, taken by the main process only (under torchrun the other
    ranks work in the same folder under rank 0's lock)."""

    def __init__(self, run: RunDir):
        from ..gans import dist as _dist

        self.cm = run.lock() if _dist.is_main_process() else None

    def __enter__(self):
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm is not None else False


def transfer_config(ticket, **given) -> SearchConfig:
    """``lthgan transfer``: the search that trains ``ticket``'s masks and state (a ticket file,
    or a level folder holding one) with the settings ``given`` (new data, schedule, ...). The
    model is rebuilt from the GAN config the ticket carries, and the ticket is checked against
    it here, before anything trains."""
    from .. import gans as _gans
    from ..ticket import TicketError
    from .rundir import Level

    path = Path(ticket)
    if path.is_dir():
        path = path / Level.TICKET
    if not path.is_file():
        raise SearchError(f"ticket {ticket}: no ticket file there (expected RUN_DIR/round-NN or a "
                          ".safetensors ticket)", "ticket")
    t = _methods.load_ticket(path)
    prov = t.provenance
    src = prov.get("config") or {}
    gan, gan_config = prov.get("gan") or src.get("gan"), prov.get("gan_config")
    if gan is None or gan_config is None:
        raise SearchError(f"ticket {path} does not say which model it belongs to (no gan and gan_config "
                          "in its provenance); transfer rebuilds the model from them", "ticket")
    try:
        task = _build_for(t, gan, _gans.config_from_dict(gan, gan_config))
        t.validate(task.models)
    except (ValueError, TicketError) as e:
        raise SearchError(f"ticket {path} does not fit the {gan} model it names: {e}", "ticket") from None
    layers = prov.get("layers") or src.get("layers") or "conv"
    structural = bool(t.channels)
    sparsity = float(prov.get("sparsity") or 0.0) if structural else _methods.generator_sparsity(t.masks, task, layers)
    if not 0.0 < sparsity < 1.0:
        raise SearchError(f"ticket {path} has generator sparsity {sparsity:.4f}; transfer needs a pruned "
                          "ticket (a round-NN, not dense)", "ticket")
    fixed = {"gan": gan, "gan_config": gan_config, "method": "transfer", "ticket": str(path.resolve()),
             "target_sparsity": sparsity, "layers": layers,
             "prune_d": bool(src.get("prune_d", prov.get("prune_d", False))), "preset": src.get("preset"),
             "structure": "channel" if structural else "weight",
             "gamma_l1": src.get("gamma_l1") if structural else None}
    return SearchConfig(**{**given, **fixed})


def _build_for(ticket, gan: str, config):
    """The models a ticket is applied to: a structural ticket's generators at its widths."""
    from .. import gans as _gans
    from .structure import groups_of, kept_from_lists, slice_task

    task = _gans.build(gan, config, seed=0)
    if ticket.channels:
        slice_task(task, groups_of(_gans.family(gan), config), kept_from_lists(ticket.channels))
    return task

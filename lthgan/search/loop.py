"""The round loop: train dense, then prune, rewind and retrain round by round.

As in the paper's official code, but without its bugs:

1. initialise θ0 (generators) and φ0 (discriminators) from ``seed`` and save them (``init/``);
2. train dense (level ``dense``) and evaluate the final checkpoint;
3. round by round (``round-01``, ...): the method chooses the masks (IMP: by magnitude on the
   *raw* trained generators, never the EMA copy, each generator with its own global
   threshold) and the state the round starts from (IMP: θ0, or a late-rewind snapshot; D per
   ``d_init``); fresh optimizers and EMA; train; evaluate the final checkpoint;
4. stop when the schedule reaches ``target_sparsity`` (the last round is clipped).

Every level is a pure function of the files already in the run directory, so a finished
level is skipped on resume and an interrupted one restarts from its last in-round checkpoint
(``train_state.pt``): on the CPU with a fixed seed, a resumed search ends with the same masks
and metrics as an uninterrupted one. Every training run of a search uses the same training
seed, so data order and latent noise are the same in every round and rounds differ only by
their masks and starting weights.
"""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import asdict
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .. import __version__
from .._io import atomic_write, atomic_write_json
from .. import gans as _gans
from .. import prune as _prune
from ..gans import dist as _dist
from ..nn import masked_modules
from ..ticket import Ticket, TicketError
from . import report as _report
from . import structure
from .checkpoints import INIT_WHAT, load_checkpoint, load_models, load_tensors, save_checkpoint, save_tensors
from .config import Resolved, level_targets
from .errors import RunDirError
from .evaluation import evaluate_models, save_samples
from .methods import d_seed, generator_sparsity
from .verdict import direction_fids, judge_directions
from .rundir import Level, RunDir

__all__ = ["Search"]


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Search:
    """One search in one run directory (start it with :func:`lthgan.search.run_search` or
    :func:`lthgan.search.resume_search`). It is also the context a pruning method works in
    (:class:`lthgan.search.methods.LevelContext`)."""

    def __init__(self, res: Resolved, run: RunDir, *, quiet: bool = False,
                 log: Callable[[str], None] | None = None, max_level: int | None = None, data=None,
                 stop_when_unmatched: bool = True):
        self.res = res
        self.config = res.config
        self.family = res.family
        self.run_dir = run
        self.quiet = quiet
        self.log = log or _default_log
        self.max_level = max_level
        self.main = _dist.is_main_process()
        self._train_data, self._eval_data = data
        # under --seeds the coordinator decides where an until_unmatched search stops
        self.stop_when_unmatched = stop_when_unmatched and self.config.until_unmatched

    # ------------------------------------------------------------------ method context

    def build(self, seed: int | None = None):
        """The family's models at the run's config, seeded with ``seed`` (default: the run's)."""
        return _gans.build(self.family.name, self.res.gan_config,
                           seed=self.config.seed if seed is None else seed, device="cpu")

    def groups(self, task) -> list[str]:
        """The prune groups (each with its own threshold): the generators, and the
        discriminators too with ``prune_d``."""
        return list(task.generators) + (list(task.discriminators) if self.config.prune_d else [])

    def selection(self) -> dict:
        return {"types": self.config.layers}

    def level_dir(self, index: int):
        return self.run_dir.level(index).path

    def checkpoint(self, index: int) -> dict[str, Tensor]:
        """The trained models' state of the finished level ``index``."""
        return load_checkpoint(self.run_dir.level(index).checkpoint)[0]

    def load_models(self, module: nn.Module, state, where) -> None:
        load_models(module, state, where)

    def init_state(self) -> dict[str, Tensor]:
        path = self.run_dir.init_state
        if not path.exists():
            task = self.build()
            if self.main:
                save_tensors(path, task.initial_state(),
                             {"gan": self.family.name, "seed": self.config.seed, "what": INIT_WHAT,
                              "gan_config": asdict(self.res.gan_config)})
                atomic_write_json(self.run_dir.init_seed, {"seed": self.config.seed, "gan": self.family.name})
            _dist.barrier()
        state, meta = load_tensors(path)
        if meta.get("seed") != self.config.seed:
            raise RunDirError(f"{path} was made with seed {meta.get('seed')}, the config says {self.config.seed}")
        return state

    def rewind_state(self) -> dict[str, Tensor]:
        """θ0/φ0, or the late-rewind snapshot of the dense run."""
        if self.res.rewind_iteration == 0:
            return self.init_state()
        return load_tensors(self.run_dir.level(0).rewind)[0]

    # ------------------------------------------------------------------ the whole search

    def levels(self) -> Iterator[tuple[int, float]]:
        """``(index, sparsity)`` of the levels to run, up to ``max_level``."""
        for index, target in level_targets(self.res):
            if self.max_level is not None and index > self.max_level:
                return
            yield index, target

    def run(self) -> list[dict]:
        rows = []
        n = len(self.res.schedule) + 1
        for index, target in self.levels():
            if index >= n and self.stop_when_unmatched and not _still_matching(rows[-1] if rows else None):
                break  # until_unmatched: the previous round past the target did not match
            self._progress(index, n)
            m = self._run_level(index, target)
            if m:
                rows.append(m)
            if self.main:
                self._write_summaries()
            _dist.barrier()
        return rows

    def _progress(self, index: int, n: int) -> None:
        """The whole-search line: level k of N (at least N under ``until_unmatched``), with an
        ETA over the levels still to run (from this run's finished levels' mean time)."""
        lvl = self.run_dir.level(index)
        if lvl.done or (index == 0 and not self.config.dense):
            return
        n = max(n, index + 1)
        if self.max_level is not None:
            n = min(n, self.max_level + 1)
        times = [t.read_metrics().get("time_s") for t in self.run_dir.finished()]
        times = [t for t in times if t]
        todo = n - index
        eta = (f"; ETA {_duration(todo * sum(times) / len(times))} for the {todo} "
               f"level{'s' if todo > 1 else ''} left") if times else ""
        more = " or more" if self.config.until_unmatched and self.max_level is None else ""
        self._say(f"[level {index + 1}/{n}{more}] {lvl.name}{eta}")

    def _say(self, msg: str) -> None:
        if not self.quiet and self.main:
            self.log(msg)

    def _write_summaries(self) -> None:
        self.run_dir.write_metrics_log()
        _report.write_summary(self.run_dir.path)
        parent = self.run_dir.parent
        if parent is not None:
            try:
                _report.write_summary(parent.path)
            except RunDirError:
                pass  # the parent has not finished a level yet: nothing to add the baseline to

    # ------------------------------------------------------------------ one level

    def _run_level(self, index: int, target: float) -> dict:
        level = self.run_dir.level(index)
        if level.done:
            if self.main and level.train_state.exists():  # killed right after DONE
                level.train_state.unlink()
            return level.read_metrics()
        if index == 0 and not self.config.dense:
            return {}
        t_start = time.time()
        task = self.build()
        ticket = self._ticket(level, target, task)
        if self.res.structural:  # the generators, rebuilt at the ticket's widths
            task = self.build_at(structure.kept_from_lists(ticket.channels or {}))
        try:
            ticket.apply(task.models)
        except TicketError as e:
            raise RunDirError(f"{level.ticket} does not fit the model: {e}") from None
        self._check_sparsity(task, index, target, ticket)
        trainer = self._trainer(task, index)
        elapsed, last = self._restore(trainer, level)
        last, train_time = self._train(trainer, level, target, elapsed, last)
        t_eval = time.time()
        row = self._evaluate(level, task, trainer, ticket)
        metrics = self._metrics(level, target, task, trainer, ticket, row, last, train_time,
                                time.time() - t_eval)
        if self.main:
            atomic_write_json(level.metrics_file, metrics)
            level.mark_done()
            if level.train_state.exists():
                level.train_state.unlink()
        _dist.barrier()
        self._say(_level_line(metrics, time.time() - t_start))
        return metrics

    def _ticket(self, level: Level, target: float, task) -> Ticket:
        """The level's ticket: read back when it exists (a resumed level), else made from the
        method's masks and start state and saved."""
        if level.ticket.exists():
            try:
                return Ticket.load(level.ticket)
            except TicketError as e:
                raise RunDirError(f"{level.ticket}: {e}") from None
        cfg, res = self.config, self.res
        prov = {"round": level.index, "sparsity_target": target, "seed": cfg.seed,
                "gan": self.family.name, "gan_config": asdict(res.gan_config), "layers": cfg.layers,
                "config": asdict(cfg), "lthgan_version": __version__}
        if res.structural:
            ticket = self._channel_ticket(level.index, target, task, prov)
        elif level.index == 0:
            ticket = Ticket.from_model(task.models, self.init_state(),
                                       dict(prov, method="dense", rewind="init"))
        else:
            method = res.method
            method.masks.choose(self, method, level.index, target, task)
            masks = {n: m.mask.detach().clone() for n, m in masked_modules(task.models)}
            state, rewound = method.start_state(self, level.index, task, masks)
            prov.update(method=cfg.method, rewind=rewound, d_init=res.d_init,
                        sparsity=generator_sparsity(masks, task, cfg.layers))
            ticket = Ticket(masks, state, prov)
        if self.main:
            ticket.save(level.ticket)
        _dist.barrier()
        return ticket

    def _channel_ticket(self, index: int, target: float, task, prov: dict) -> Ticket:
        """A structural level's ticket: the channels each generator keeps (full-width indices)
        and the state the narrower models start from."""
        groups = self.channel_groups
        if index == 0:
            kept, state = structure.full_kept(groups), self.init_state()
            prov.update(method="dense", rewind="init", sparsity=0.0)
        else:
            method = self.res.method
            kept = method.masks.choose_channels(self, method, index, target)
            state, rewound = method.start_state(self, index, task, structure.unpruned_masks(task))
            # the state's widths: the source level's (keeps training), the kept ones already (a
            # transferred ticket's), else full (θ0, a rewind point, another init)
            src = {"continue": lambda: self.kept(method.source(index)), "ticket": lambda: kept}.get(
                method.start, lambda: None)()
            state = structure.slim_state(self.build, groups, state, kept, src)
            prov.update(method=self.config.method, rewind=rewound, d_init=self.res.d_init,
                        sparsity=structure.channel_sparsity(groups, kept))
        slim = self.build_at(kept)
        return Ticket(structure.unpruned_masks(slim), state, prov, channels=structure.kept_to_lists(kept))

    @functools.cached_property
    def channel_groups(self) -> dict:
        return structure.groups_of(self.family, self.res.gan_config)

    def kept(self, index: int) -> dict:
        """The channels level ``index`` keeps (structural searches; full width at dense)."""
        if index == 0:
            return structure.full_kept(self.channel_groups)
        try:
            ticket = Ticket.load(self.run_dir.level(index).ticket)
        except (TicketError, FileNotFoundError) as e:
            raise RunDirError(f"{self.run_dir.level(index).ticket}: {e}") from None
        return structure.kept_from_lists(ticket.channels or {})

    def build_at(self, kept: dict):
        """The models with the generators narrowed to ``kept``."""
        task = self.build()
        structure.slice_task(task, self.channel_groups, kept)
        return task

    def _check_sparsity(self, task, index: int, target: float, ticket: Ticket) -> None:
        if self.res.method.masks.name == "ticket" and index > 0:
            return  # a transferred ticket keeps whatever sparsity it has
        if self.res.structural:
            structure.check_channels(self.channel_groups, structure.kept_from_lists(ticket.channels or {}),
                                     target if index > 0 else 0.0, self.run_dir.level(index).name)
            return
        for g in self.groups(task) if index > 0 else list(task.models.keys()):
            ws = _prune.prunable(task.models[g], **self.selection())
            total = sum(w.mask.numel() for w in ws)
            zeros = total - sum(int(w.mask.count_nonzero()) for w in ws)
            want = _prune.target_zeros(target, total) if index > 0 else 0
            if zeros != want:
                raise RunDirError(f"{self.run_dir.level(index).name}: {g} has {zeros} of {total} prunable "
                                  f"weights pruned, but sparsity {target} needs {want}; the run "
                                  "directory is inconsistent")

    def _trainer(self, task, index: int):
        kd = None
        if self.config.kd_d and index > 0:
            teacher = self.build()
            load_models(teacher.models, self.checkpoint(0), self.run_dir.level(0).path)
            kd = nn.ModuleDict({d: teacher.models[d] for d in teacher.discriminators})
        trainer = _gans.make_trainer(task, self._train_data, iterations=self.res.iterations,
                                     device=self.res.device, seed=self.config.seed, amp=self.config.amp,
                                     kd_teacher=kd, kd_weight=self.config.kd_weight)
        # a round rewound to iteration K trains from K to the end, its LR schedule at K (the
        # official late rewinding: start_epoch = the rewind checkpoint's epoch)
        trainer.reset(start_iteration=self._start_iteration(index))
        if self.res.method.distill and index > 0:
            self._distill(trainer)
        if self.res.structural and self.res.gamma_l1 > 0:
            trainer.set_gamma_l1(structure.gamma_params(task, self.channel_groups), self.res.gamma_l1)
        return trainer

    def _distill(self, trainer) -> None:
        """The dense level's evaluated generators teach the round's (a content loss)."""
        from ..perceptual import content_network
        from .checkpoints import model_from_checkpoint

        _, teachers, _ = model_from_checkpoint(self.run_dir.level(0).checkpoint)
        features = content_network(self.res.content_extractor, self.config.vgg_weights, self.res.device)
        trainer.set_content_teacher(teachers, features, self.config.content_weight)

    def _start_iteration(self, index: int) -> int:
        """Where level ``index`` starts training: K for a round rewound to iteration K."""
        return self.res.rewind_iteration if index > 0 and self.res.method.start == "rewind" else 0

    def _restore(self, trainer, level: Level) -> tuple[float, dict]:
        """Continue from the level's in-round checkpoint, if there is one."""
        path = level.train_state
        if not path.exists():
            return 0.0, {}
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            trainer.load_state_dict(saved["trainer"])
        except Exception as e:  # torch.load raises many types on a damaged file
            raise RunDirError(f"{path} is corrupt ({type(e).__name__}: {e}); delete it to restart "
                              f"{level.name} from its beginning") from None
        self._say(f"{level.name}: resuming from iteration {trainer.iteration}/{trainer.iterations}")
        return float(saved.get("train_time_s", 0.0)), dict(saved.get("losses", {}))

    def _train(self, trainer, level: Level, target: float, elapsed: float, last: dict):
        from tqdm.auto import tqdm

        every = self.res.checkpoint_every
        k = self.res.rewind_iteration
        snap = self.run_dir.level(0).rewind
        if level.index == 0 and k > 0 and trainer.iteration > k and not snap.exists():
            raise RunDirError(f"{snap} is missing although the dense run is past iteration {k}")
        desc = level.name if level.index == 0 else f"{level.name} ({100 * target:.2f}%)"
        bar = tqdm(total=trainer.iterations, initial=trainer.iteration, desc=desc, unit="it",
                   file=sys.stderr, disable=self.quiet or not self.main, dynamic_ncols=True,
                   leave=False, mininterval=0.5)
        t0 = time.time()
        try:
            while trainer.iteration < trainer.iterations:
                last = trainer.step()
                bar.update(1)
                it = trainer.iteration
                if level.index == 0 and k > 0 and it == k:
                    if self.main:
                        save_tensors(snap, trainer.task.models.state_dict(),
                                     {"what": "late-rewind snapshot", "iteration": k})
                    _dist.barrier()
                if it % 10 == 0 or it == trainer.iterations:
                    bar.set_postfix({n: f"{v:.3g}" for n, v in last.items() if n.startswith("loss")},
                                    refresh=False)
                if it % every == 0 or it == trainer.iterations:
                    self._save_train_state(trainer, level, elapsed + time.time() - t0, last)
        finally:
            bar.close()
        return last, elapsed + time.time() - t0

    def _save_train_state(self, trainer, level: Level, elapsed: float, last: dict) -> None:
        state = trainer.state_dict()  # collective under DDP
        if self.main:
            obj = {"trainer": state, "train_time_s": float(elapsed),
                   "losses": {k: float(v) for k, v in last.items()}}
            atomic_write(level.train_state, lambda tmp: torch.save(obj, tmp))
        _dist.barrier()

    def _evaluate(self, level: Level, task, trainer, ticket: Ticket) -> dict:
        """Save the final checkpoint (what is compared: no best-of selection), score it, and
        write the sample grid. Rank 0 scores; the row is broadcast."""
        row = None
        if self.main:
            meta = {"level": level.name, "iteration": trainer.iteration}
            if self.res.structural:
                meta["channels"] = ticket.channels
            save_checkpoint(level.checkpoint, task, trainer, meta)
            row, pairs = evaluate_models(
                task, trainer.eval_models(), self._eval_data, n_samples=self.res.eval_samples,
                extractor=self.res.extractor, inception_weights=self.config.inception_weights,
                seed=self.config.seed, device=self.res.device)
            save_samples(level.samples, self.family, pairs, self._eval_data)
        return _dist.broadcast_object(row)

    def _metrics(self, level: Level, target, task, trainer, ticket, row, last, train_time, eval_time) -> dict:
        """The level's ``metrics.json`` (and its ``sparsity_report.json``)."""
        index, cfg = level.index, self.config
        g_report = _group_report(task, task.generators, cfg.layers)
        d_report = _group_report(task, task.discriminators, cfg.layers)
        m = {
            "level": index, "name": level.name, "method": "dense" if index == 0 else cfg.method,
            "gan": self.family.name, "data": self.res.data, "sparsity_target": target,
            "sparsity": g_report["prunable_sparsity"], "sparsity_overall": g_report["overall_sparsity"],
            "d_sparsity": d_report["prunable_sparsity"],
            "groups": {g: {k: v for k, v in r.items() if k != "layers"} for g, r in g_report["groups"].items()},
            **row,
            "checkpoint": "final", "selection": "final checkpoint of the round (no best-of selection)",
            "iterations": trainer.iteration, "start_iteration": self._start_iteration(index), "final_losses": last,
            "train_time_s": round(train_time, 3), "eval_time_s": round(eval_time, 3),
            "time_s": round(train_time + eval_time, 3), "seed": cfg.seed,
            "rewind": ticket.provenance.get("rewind"), "d_init": None if index == 0 else self.res.d_init,
            "tolerance": cfg.tolerance,
        }
        if self.res.structural:
            m["sparsity_weights"] = m["sparsity"]
            m["sparsity"] = structure.channel_sparsity(self.channel_groups,
                                                       structure.kept_from_lists(ticket.channels or {}))
            m.update(structure.cost(self.family, task, trainer.eval_models(), self.res.device))
        if index > 0 and d_seed(self.res.d_init, cfg.seed, index) is not None:
            m["d_seed"] = d_seed(self.res.d_init, cfg.seed, index)
        dense = self.run_dir.level(0)
        dense_m = row if index == 0 else (dense.read_metrics() if cfg.dense and dense.done else {})
        m["dense_fid"] = dense_m.get("fid")
        if index > 0:
            m.update(judge_directions(direction_fids(row), direction_fids(dense_m), cfg.tolerance))
        else:
            m["matching"] = None
        if self.main:
            atomic_write_json(level.sparsity_report, {"generators": g_report, "discriminators": d_report})
        return m


def _still_matching(m: dict | None) -> bool:
    """Whether a level matched in some direction (an until_unmatched search goes on)."""
    return bool(m) and bool(m.get("matching_any", m.get("matching")))


def _duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _level_line(m: dict, seconds: float) -> str:
    parts = [f"{m['name']}: sparsity {100 * m['sparsity']:.2f}% (all params {100 * m['sparsity_overall']:.2f}%)"]
    if m.get("fid") is not None:
        parts.append(f"FID {m['fid']:.3f}")
    dirs = m.get("directions") or {}
    if len(dirs) > 1:
        parts.append("(" + ", ".join(f"{d} {v['fid']:.3f}" for d, v in dirs.items()) + ")")
    if m.get("is_mean") is not None:
        parts.append(f"IS {m['is_mean']:.3f}")
    if m.get("label_kept") is not None:
        parts.append(f"label kept {100 * m['label_kept']:.1f}%")
    if m.get("matching") is not None:
        parts.append("MATCHING" if m["matching"] else "not matching")
    parts.append(f"{seconds:.0f}s")
    return "  ".join(parts)


def _group_report(task, names, layers: str) -> dict:
    """Sparsity over the prunable weights and over all parameters of the models ``names``."""
    groups = {}
    total = zeros = params = pruned = 0
    for n in names:
        r = _prune.sparsity_report(task.models[n], types=layers)
        groups[n] = {"prunable_sparsity": r.prunable_sparsity, "overall_sparsity": r.overall_sparsity,
                     "prunable_total": r.prunable_total, "prunable_zeros": r.prunable_zeros,
                     "total_params": r.total_params, "overall_pruned": r.overall_pruned,
                     "layers": [lv.to_dict() for lv in r.layers]}
        total += r.prunable_total
        zeros += r.prunable_zeros
        params += r.total_params
        pruned += r.overall_pruned
    return {"prunable_sparsity": zeros / total if total else 0.0,
            "overall_sparsity": pruned / params if params else 0.0,
            "prunable_total": total, "prunable_zeros": zeros, "total_params": params,
            "overall_pruned": pruned, "groups": groups}

"""``--seeds N``: N independent searches in one run directory, judged together.

Seed ``k`` is a complete single-seed search in ``RUN/seed-kk`` (its own θ0 from seed
``SEED + k``, the same config otherwise), so it resumes, verifies and reports like any run.
The coordinator runs the searches level by level in lockstep: each level of every seed (as
parallel processes with one intra-op thread each where the cores allow), then the verdict over
the seeds (:mod:`lthgan.search.verdict`), which also decides where an ``until_unmatched``
search stops. A killed coordinator resumes like a single search.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Callable

from .config import Resolved, level_targets
from .errors import RunDirError
from .rundir import RunDir
from .verdict import level_row

__all__ = ["SeedSearch", "WorkerFailed", "seed_config", "parallel_workers"]


class WorkerFailed(RuntimeError):
    """A seed's search failed in its process; the message holds the seed, the level and the
    last line of its log."""


def seed_config(config, k: int, run: RunDir | None = None):
    """The config of seed ``k``: seed ``SEED + k``, one seed; a random ticket of a several-seed
    IMP run takes its masks from the same seed of that run."""
    masks_from = config.masks_from
    if masks_from is not None and RunDir(masks_from).seeds > 1:
        masks_from = str(RunDir(masks_from).seed_run(k).path)
    return dataclasses.replace(config, seed=config.seed + k, seeds=1, masks_from=masks_from)


def parallel_workers(seeds: int) -> tuple[int, int]:
    """``(processes, threads each)``: as many seeds at once as there are cores, sharing them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    procs = max(1, min(seeds, cores))
    return procs, max(1, cores // procs)


class SeedSearch:
    """The coordinator of a several-seed search (start it with :func:`run_search` or
    :func:`resume_search`)."""

    def __init__(self, res: Resolved, run: RunDir, *, quiet: bool = False,
                 log: Callable[[str], None] | None = None, max_level: int | None = None):
        self.res = res
        self.config = res.config
        self.run_dir = run
        self.quiet = quiet
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.max_level = max_level
        self.seeds = [run.seed_run(k) for k in range(self.config.seeds)]

    def _say(self, msg: str) -> None:
        if not self.quiet:
            self.log(msg)

    def run(self) -> list[dict]:
        from . import report as _report

        rows: list[dict] = []
        n = len(self.res.schedule) + 1
        for index, _ in level_targets(self.res):
            if self.max_level is not None and index > self.max_level:
                break
            if index >= n and self.config.until_unmatched and not (rows and rows[-1].get("matching_any")):
                break
            t0 = time.time()
            self._run_level(index)
            row = level_row([s.level(index).read_metrics() for s in self.seeds],
                            [s.level(0).read_metrics() for s in self.seeds] if self.config.dense else None,
                            self.config.tolerance)
            rows.append(row)
            _report.write_summary(self.run_dir.path)
            if self.run_dir.parent is not None:
                try:
                    _report.write_summary(self.run_dir.parent.path)
                except RunDirError:
                    pass
            self._say(_seeds_line(row, time.time() - t0))
        return rows

    def _run_level(self, index: int) -> None:
        """Level ``index`` of every seed that has not finished it, in parallel processes."""
        todo = [s for s in self.seeds if not s.level(index).done and not (index == 0 and not self.config.dense)]
        if not todo:
            return
        procs, threads = parallel_workers(len(todo))
        cores = procs * threads
        name = self.seeds[0].level(index).name
        self._say(f"{name}: {len(todo)} seed(s), {procs} at a time with {threads} thread(s) each")
        running: list[tuple[RunDir, subprocess.Popen, int]] = []
        with _terminate_raises():
            try:
                while todo or running:
                    while todo and len(running) < procs:
                        # the seeds starting now share the cores the running ones leave free (the
                        # last seed of a level gets them all)
                        free = cores - sum(t for _, _, t in running)
                        starting = min(procs - len(running), len(todo))
                        t = max(1, free // starting)
                        s = todo.pop(0)
                        running.append((s, _spawn(s, index, t), t))
                    time.sleep(0.2)
                    for s, p, t in [r for r in running if r[1].poll() is not None]:
                        running.remove((s, p, t))
                        if p.returncode != 0:
                            raise WorkerFailed(f"{s.path.name} failed at {name} (exit code {p.returncode}): "
                                               f"{_last_line(s)}; see {s.worker_log}")
            except BaseException:
                for _, p, _ in running:
                    p.terminate()
                for _, p, _ in running:
                    p.wait()
                raise


@contextlib.contextmanager
def _terminate_raises():
    """While a level runs, SIGTERM (``kill``, a job scheduler) raises SystemExit like Ctrl-C
    raises KeyboardInterrupt, so the coordinator stops its workers instead of leaving them
    training on. Python's default for SIGTERM is to die at once, orphaning them."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals can't be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _spawn(seed: RunDir, index: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(seed.worker_log, "a")
    log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} level {index}\n")
    log.flush()
    try:
        return subprocess.Popen([sys.executable, "-m", "lthgan.search.worker", str(seed.path), str(index)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def _last_line(seed: RunDir) -> str:
    try:
        lines = [line for line in seed.worker_log.read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _seeds_line(row: dict, seconds: float) -> str:
    parts = [f"{row['name']}: sparsity {100 * row.get('sparsity', 0):.2f}%"]
    if row.get("fid") is not None:
        sd = row.get("fid_sd")
        parts.append(f"FID {row['fid']:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
                     + f" over {row['seeds']} seeds")
    dirs = row.get("directions") or {}
    if len(dirs) > 1:
        parts.append("(" + ", ".join(f"{d} {v['fid']:.3f}" for d, v in dirs.items()) + ")")
    if row.get("matching") is not None:
        ps = row.get("p_values") or {}
        p = ", ".join(f"p {v:.3f}" if len(ps) == 1 else f"{d} p {v:.3f}" for d, v in ps.items())
        parts.append(("MATCHING" if row["matching"] else "not matching") + (f" ({p})" if p else ""))
    parts.append(f"{seconds:.0f}s")
    return "  ".join(parts)

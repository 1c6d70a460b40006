"""Run directories: every file name of a search, its lock, and its verification.

::

    config.json                 the SearchConfig, its resolved defaults, the GAN config, version
    .lock                       held (flock) by the process running the search
    init/state.safetensors      θ0 and φ0 (every model's state_dict); init/seed.json
    dense/, round-NN/           a level: ticket.safetensors, checkpoint.safetensors (final trained
                                state, EMA included), metrics.json, samples.png,
                                sparsity_report.json, DONE (written last: a manifest of the
                                level's files with their sha256); train_state.pt while
                                training; dense/rewind.safetensors for late rewinding
    metrics.jsonl               one line per finished level
    summary.md, summary.csv     the table (see lthgan.search.report); fid_vs_sparsity.png
    baselines/<name>/           searches of other methods run into the same directory

:class:`RunDir` and :class:`Level` are the only places that know these names; the search,
the report, ``lthgan eval`` and the CLI all go through them.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .._io import atomic_write_json, atomic_write_text, file_digest
from .errors import RunDirError

__all__ = ["RunDir", "Level", "level_name", "find_run_dir", "eval_checkpoints", "file_kind",
           "check_writable"]


def level_name(index: int) -> str:
    return "dense" if index == 0 else f"round-{index:02d}"


class Level:
    """One level of a run: ``dense`` (index 0) or ``round-NN``."""

    TICKET = "ticket.safetensors"
    CHECKPOINT = "checkpoint.safetensors"
    METRICS = "metrics.json"
    SAMPLES = "samples.png"
    SPARSITY = "sparsity_report.json"
    DONE = "DONE"
    TRAIN_STATE = "train_state.pt"
    REWIND = "rewind.safetensors"  # dense only: the late-rewind snapshot

    def __init__(self, run: "RunDir", index: int):
        self.run = run
        self.index = index
        self.name = level_name(index)
        self.path = run.path / self.name

    def __repr__(self) -> str:
        return f"Level({self.path})"

    ticket = property(lambda self: self.path / self.TICKET)
    checkpoint = property(lambda self: self.path / self.CHECKPOINT)
    metrics_file = property(lambda self: self.path / self.METRICS)
    samples = property(lambda self: self.path / self.SAMPLES)
    sparsity_report = property(lambda self: self.path / self.SPARSITY)
    train_state = property(lambda self: self.path / self.TRAIN_STATE)
    rewind = property(lambda self: self.path / self.REWIND)
    done_file = property(lambda self: self.path / self.DONE)

    @property
    def done(self) -> bool:
        return self.done_file.exists()

    def read_metrics(self) -> dict:
        try:
            m = json.loads(self.metrics_file.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.path} is marked DONE but its metrics.json is unreadable: {e}") from None
        if not isinstance(m, dict) or "level" not in m:
            raise RunDirError(f"{self.metrics_file} is corrupt: no 'level' entry")
        return m

    def _files(self) -> list[Path]:
        skip = {self.DONE, self.TRAIN_STATE}
        return sorted(p for p in self.path.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.name not in skip)

    def mark_done(self, note: str = "") -> None:
        """Write ``DONE``: the time and the size and sha256 of every file of the level."""
        files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)} for p in self._files()}
        atomic_write_json(self.done_file, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "files": files, **({"note": note} if note else {})})

    def verify(self) -> None:
        """:class:`RunDirError` naming the level and the file when a finished level's files
        are missing, truncated or changed since ``DONE`` was written."""
        try:
            manifest = json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            manifest = None  # a DONE from lthgan 0.1 (a timestamp): check the files' own checksums
        if not isinstance(manifest, dict) or "files" not in manifest:
            return self._verify_legacy()
        for name, want in manifest["files"].items():
            p = self.path / name
            if not p.is_file():
                self._damaged(f"{name} is missing")
            if p.stat().st_size != want["size"]:
                self._damaged(f"{name} has {p.stat().st_size} bytes, {want['size']} were written")
            if file_digest(p) != want["sha256"]:
                self._damaged(f"{name} has changed since it was written (sha256 mismatch)")

    def _verify_legacy(self) -> None:
        from ..ticket import Ticket, TicketError
        from .checkpoints import load_tensors

        for p in (self.ticket, self.checkpoint):
            if not p.is_file():
                self._damaged(f"{p.name} is missing")
        try:
            Ticket.load(self.ticket)
        except TicketError as e:
            self._damaged(f"{self.TICKET}: {e}")
        try:
            load_tensors(self.checkpoint)
        except RunDirError as e:
            self._damaged(str(e))
        self.read_metrics()

    def _damaged(self, what: str):
        raise RunDirError(f"{self.name} of {self.run.path} is damaged: {what}. Restore it, or delete "
                          f"{self.path} and resume the run to compute that level again")


class RunDir:
    """A search's run directory (which need not exist yet)."""

    CONFIG = "config.json"
    LOCK = ".lock"
    INIT = "init"
    INIT_STATE = "state.safetensors"
    INIT_SEED = "seed.json"
    METRICS_LOG = "metrics.jsonl"
    SUMMARY_MD = "summary.md"
    SUMMARY_CSV = "summary.csv"
    PLOT = "fid_vs_sparsity.png"
    PLOT_MACS = "fid_vs_macs.png"    # runs with structural (channel) levels
    SUMMARY_SEEDS_CSV = "summary_seeds.csv"  # under --seeds: every seed's rows
    REPORT_MD = "report.md"          # lthgan report's files, in its --out folder
    REPORT_CSV = "report.csv"
    BASELINES = "baselines"
    SEED = "seed-{:02d}"             # under --seeds: one single-seed run directory per seed
    WORKER_LOG = "worker.log"        # under --seeds: the output of the process that ran a seed

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({self.path})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    config_file = property(lambda self: self.path / self.CONFIG)
    init_dir = property(lambda self: self.path / self.INIT)
    init_state = property(lambda self: self.path / self.INIT / self.INIT_STATE)
    init_seed = property(lambda self: self.path / self.INIT / self.INIT_SEED)
    metrics_log = property(lambda self: self.path / self.METRICS_LOG)
    summary_md = property(lambda self: self.path / self.SUMMARY_MD)
    summary_csv = property(lambda self: self.path / self.SUMMARY_CSV)
    plot = property(lambda self: self.path / self.PLOT)
    summary_seeds_csv = property(lambda self: self.path / self.SUMMARY_SEEDS_CSV)
    worker_log = property(lambda self: self.path / self.WORKER_LOG)

    @property
    def seeds(self) -> int:
        """How many independent searches this run holds (``--seeds``; 1: the run itself)."""
        return int(self.read_config()["search"].get("seeds", 1)) if self.exists else 1

    def seed_run(self, k: int) -> "RunDir":
        """Under ``--seeds``: the run directory of the ``k``-th seed."""
        return RunDir(self.path / self.SEED.format(k))

    def seed_runs(self) -> list["RunDir"]:
        return [self.seed_run(k) for k in range(self.seeds)] if self.seeds > 1 else [self]

    @property
    def exists(self) -> bool:
        """Whether this is a run directory (it has a ``config.json``)."""
        return self.config_file.is_file()

    def level(self, index: int) -> Level:
        return Level(self, index)

    def level_at(self, path) -> Level | None:
        """The level whose folder ``path`` is (or is in), if it is one of this run's."""
        path = Path(path)
        folder = path.parent if path.is_file() else path
        if folder.parent.resolve() != self.path.resolve():
            return None
        name = folder.name
        if name == level_name(0):
            return self.level(0)
        if name.startswith("round-") and name[6:].isdigit():
            return self.level(int(name[6:]))
        return None

    def levels(self) -> list[Level]:
        """The levels that have a folder, in order (dense first)."""
        out = [self.level(0)] if (self.path / level_name(0)).is_dir() else []
        rounds = sorted(int(p.name[6:]) for p in self.path.glob("round-*")
                        if p.is_dir() and p.name[6:].isdigit())
        return out + [self.level(i) for i in rounds]

    def finished(self) -> list[Level]:
        return [lvl for lvl in self.levels() if lvl.done]

    def baseline(self, name: str) -> "RunDir":
        return RunDir(self.path / self.BASELINES / name)

    def baselines(self) -> list["RunDir"]:
        folder = self.path / self.BASELINES
        if not folder.is_dir():
            return []
        return [RunDir(p) for p in sorted(folder.iterdir()) if (p / self.CONFIG).is_file()]

    @property
    def parent(self) -> "RunDir | None":
        """The run this one is a baseline of (``PARENT/baselines/NAME``), or the several-seed
        run this one is a seed of (``PARENT/seed-NN``), if any."""
        p = self.path
        if p.parent.name == self.BASELINES and (p.parent.parent / self.CONFIG).is_file():
            return RunDir(p.parent.parent)
        if p.name.startswith("seed-") and (p.parent / self.CONFIG).is_file():
            return RunDir(p.parent)
        return None

    # ------------------------------------------------------------------ config

    def read_config(self) -> dict:
        """``config.json``; :class:`RunDirError` when missing or unreadable."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a directory" if self.path.exists()
                              else f"{self.path}: no such directory")
        if not self.config_file.is_file():
            raise RunDirError(f"{self.path} is not a run directory (it has no {self.CONFIG})")
        try:
            record = json.loads(self.config_file.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.config_file} is corrupt: {e}") from None
        if not isinstance(record, dict) or not isinstance(record.get("search"), dict):
            raise RunDirError(f"{self.config_file} is corrupt: it has no 'search' section")
        return record

    def write_config(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_file, record)

    def write_metrics_log(self) -> None:
        """``metrics.jsonl``: the metrics of every finished level, one line each."""
        lines = [json.dumps(lvl.read_metrics(), sort_keys=True) for lvl in self.finished()]
        atomic_write_text(self.metrics_log, "".join(line + "\n" for line in lines))

    # ------------------------------------------------------------------ lock, checks

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``.lock`` (an exclusive ``flock``) while a search runs here: a second process
        is refused. The kernel drops the lock when its process dies, so a killed run never
        blocks ``--resume``."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"{self.path} is in use by another lthgan process (pid {holder}); "
                                  "wait for it to finish, or stop it and resume") from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def verify(self) -> None:
        """Check every finished level's files (:meth:`Level.verify`), of every seed."""
        for run in self.seed_runs():
            for lvl in run.finished():
                lvl.verify()


def check_writable(folder) -> None:
    """:class:`RunDirError` unless files can be created in ``folder``, or, when it does not
    exist yet, in the nearest folder above it that does (nothing is created): a regular file
    in the way, a read-only folder, no permission."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise RunDirError(f"cannot use {folder}: {probe_in} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lthgan-probe-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"cannot write in {probe_in}: {e.strerror or e}") from None


def find_run_dir(path) -> RunDir | None:
    """The run directory ``path`` is in (itself or up to three folders up), if any."""
    path = Path(path)
    start = path if path.is_dir() else path.parent
    for p in [start, *list(start.parents)[:3]]:
        if (p / RunDir.CONFIG).is_file():
            return RunDir(p)
    return None


def file_kind(path) -> str:
    """What an lthgan file is: "ticket", "checkpoint", "init" (θ0/φ0), "state" (another
    state file), "config" (a run's config.json) or "unknown"."""
    path = Path(path)
    if path.name == RunDir.CONFIG:
        return "config"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            keys = list(f.keys())
    except Exception:  # not a safetensors file (safetensors raises its own error types)
        return "unknown"
    if md.get("format") == "lthgan.ticket":
        return "ticket"
    if "lthgan" not in md:
        return "unknown"
    if any(k.startswith("models/") for k in keys):
        return "checkpoint"
    try:
        what = json.loads(md["lthgan"]).get("what")
    except (ValueError, AttributeError):
        what = None
    return "init" if what == "theta0 and phi0" else "state"


_EXPECTED = ("a checkpoint file (RUN_DIR/round-NN/checkpoint.safetensors), a level folder "
             "(RUN_DIR/round-NN), a run directory, or RUN_DIR/init (the untrained models)")


def eval_checkpoints(path) -> list[Path]:
    """The checkpoint files ``lthgan eval PATH`` scores, with errors that say what ``path``
    is and what is expected instead."""
    path = Path(path)
    if path.is_file():
        kind = file_kind(path)
        if kind in ("checkpoint", "init"):
            return [path]
        what = {"ticket": "an lthgan ticket (masks and the state a round starts from, not trained "
                          "weights)",
                "config": "a run's configuration",
                "state": "an lthgan state file without trained models (e.g. a late-rewind snapshot)",
                "unknown": "not an lthgan checkpoint"}[kind]
        raise RunDirError(f"{path} is {what}; expected {_EXPECTED}")
    run = RunDir(path)
    lvl_ckpt = path / Level.CHECKPOINT
    if lvl_ckpt.is_file():
        return [lvl_ckpt]
    if path.name == RunDir.INIT and (path / RunDir.INIT_STATE).is_file():
        return [path / RunDir.INIT_STATE]
    if run.exists:
        found = [lvl.checkpoint for r in run.seed_runs() for lvl in r.finished() if lvl.checkpoint.is_file()]
        if not found:
            raise RunDirError(f"{path} has no finished level with a checkpoint yet")
        return found
    raise RunDirError(f"{path} is a folder without a checkpoint; expected {_EXPECTED}")

"""The lottery-ticket search: train dense, then prune, rewind and retrain round by round.

One :class:`SearchConfig` (a dataclass whose fields also generate the ``lthgan search`` flags)
describes a search; :func:`run_search` runs it into a run directory and :func:`resume_search`
continues one. The flow, as in the paper's official code but without its bugs:

1. initialise θ0 (generators) and φ0 (discriminators) from ``seed`` and save them (``init/``);
2. train dense (level ``dense``) and evaluate the final checkpoint;
3. round by round (``round-01``, ...): prune the *raw* trained generators (never the EMA copy;
   each generator with its own global threshold), rewind G to θ0 (or a late-rewind snapshot)
   with the new masks, set D per ``d_init``, fresh optimizers and EMA, train, evaluate;
4. stop when the sparsity reached equals ``target_sparsity`` (the last round is clipped).

Every level is a pure function of the files already in the run directory, so a finished
level is skipped on resume and an interrupted one restarts from its last in-round checkpoint
(``train_state.pt``, every ``checkpoint_every`` iterations): on the CPU with a fixed seed a
resumed search ends with the same masks and metrics as an uninterrupted one.

Every training run of a search (dense and each round) uses the same training seed, so data
order and latent noise are the same in every round and rounds differ only by their masks and
starting weights.

Run directory::

    config.json                 asdict(SearchConfig) + the resolved settings, GAN config, version
    init/state.safetensors      θ0 and φ0 (every model's state_dict), init/seed.json
    dense/, round-NN/           ticket.safetensors (lthgan.ticket), checkpoint.safetensors (final
                                trained state, EMA included), metrics.json, samples.png,
                                sparsity_report.json, DONE (written last); train_state.pt while
                                training; dense/rewind.safetensors for late rewinding
    metrics.jsonl               one line per finished level
    summary.md, summary.csv     the table (see lthgan.report)
    fid_vs_sparsity.png         the plot
    baselines/<name>/           searches of other methods run into the same directory
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from . import __version__
from . import gans as _gans
from . import prune as _prune
from . import report as _report
from ._io import atomic_write, atomic_write_json, atomic_write_text
from .gans import dist as _dist
from .nn import masked_modules
from .report import RunDirError
from .ticket import Ticket, TicketError

__all__ = [
    "SearchConfig",
    "Resolved",
    "SearchError",
    "RunDirError",
    "ConfigMismatchError",
    "METHODS",
    "D_INITS",
    "LAYERS",
    "EXTRACTORS",
    "DEFAULT_DATA",
    "DEFAULT_TARGET",
    "resolve",
    "judge",
    "check_ready",
    "check_extractor",
    "run_search",
    "resume_search",
    "load_config",
    "load_checkpoint",
    "save_checkpoint",
    "model_from_checkpoint",
    "evaluate_models",
    "eval_split",
    "load_data",
    "parse_rewind",
    "level_name",
]

GANS = ("sngan", "cyclegan")
METHODS = ("imp", "oneshot", "random", "random-ticket", "no-rewind")
#: internal method of ``lthgan transfer``: level 1 applies a given ticket
TRANSFER = "transfer"
D_INITS = ("init", "trained", "reseed")
LAYERS = ("conv", "conv+linear")
PRESETS = ("tiny", "quick", "paper")
EXTRACTORS = ("digits", "inception")
AMP = ("bf16",)

#: the embedded data set of each GAN (no download)
DEFAULT_DATA = {"sngan": "digits", "cyclegan": "digits:digits-m"}
#: the paper's sparsity of the last matching ticket: SNGAN 67.23% (5 rounds), CycleGAN ~74%
DEFAULT_TARGET = {"sngan": 0.67, "cyclegan": 0.74}
#: evaluation samples per preset (SNGAN: generated images; CycleGAN: test images per direction,
#: None = every test image)
DEFAULT_EVAL_SAMPLES = {
    "sngan": {"tiny": 128, "quick": 1000, "paper": 50_000},
    "cyclegan": {"tiny": 64, "quick": None, "paper": None},
}
EMBEDDED_DATA = ("digits", "digits-m")

CONFIG_FORMAT = 1
#: SearchConfig fields that do not change results, so a resume may change them
_FREE_KEYS = frozenset({"checkpoint_every"})
#: SearchConfig fields whose difference makes a run a variant ("baseline") of another
_VARIANT_KEYS = frozenset({"method", "prune_d", "d_init", "rewind", "kd_d", "kd_weight", "layers",
                           "masks_from"})
#: fields that the dense level depends on (a baseline reuses its parent's dense level when
#: these are equal)
_DENSE_KEYS = ("gan", "data", "data_root", "preset", "iterations", "batch_size", "eval_samples",
               "extractor", "inception_weights", "seed", "device", "amp", "rewind")


class SearchError(ValueError):
    """A search cannot run as configured (bad value, missing data, unusable combination)."""


class ConfigMismatchError(RunDirError):
    """A run directory holds a search with another configuration. ``keys`` lists the fields
    that differ; ``stored`` and ``given`` their values."""

    def __init__(self, run_dir, keys, stored: Mapping, given: Mapping, hint: str = ""):
        self.keys = list(keys)
        self.stored = {k: stored.get(k) for k in self.keys}
        self.given = {k: given.get(k) for k in self.keys}
        diffs = ", ".join(f"{k} (stored {self.stored[k]!r}, given {self.given[k]!r})" for k in self.keys)
        super().__init__(f"{run_dir} holds a search with a different configuration; differing "
                         f"keys: {diffs}{hint}")


# --------------------------------------------------------------------------- config


def _opt(help: str, **kw) -> dict:
    """Field metadata read by the CLI to build the option (see lthgan.cli)."""
    return {"help": help, **kw}


@dataclass
class SearchConfig:
    """Everything that defines a search. ``None`` means "the default for the GAN/preset",
    resolved by :func:`resolve` and written to ``config.json``."""

    gan: str = field(default="sngan", metadata=_opt(
        "GAN family.", choices=GANS))
    data: str | None = field(default=None, metadata=_opt(
        "Training data: digits, digits-m, cifar10, stl10, folder:PATH/A (SNGAN); "
        "NAME_A:NAME_B or folder:PATH (CycleGAN). Default: the embedded digits "
        "(SNGAN) or digits:digits-m (CycleGAN).", metavar="NAME"))
    data_root: str | None = field(default=None, metadata=_opt(
        "Folder holding cifar10/stl10 (read locally; nothing is downloaded).", metavar="DIR"))
    target_sparsity: float | None = field(default=None, metadata=_opt(
        "Share of the prunable G weights to prune, in (0, 1). Default: the paper's last "
        "matching sparsity, 0.67 (SNGAN) or 0.74 (CycleGAN).", type="open01"))
    prune_rate: float = field(default=0.2, metadata=_opt(
        "Share of the surviving weights pruned per round, in (0, 1).", type="open01"))
    method: str = field(default="imp", metadata=_opt(
        "imp (iterative magnitude pruning, rewinding to θ0), oneshot (from the dense G straight "
        "to each sparsity), random (random masks), random-ticket (the IMP masks of --masks-from "
        "with another random init), no-rewind (the paper's standard pruning: prune and keep "
        "training).", choices=METHODS))
    prune_d: bool = field(default=False, metadata=_opt(
        "Prune the discriminator(s) too, to the same sparsity.", flag="--prune-d/--no-prune-d"))
    d_init: str | None = field(default=None, metadata=_opt(
        "Where D starts each round: init (φ0, or the late-rewind snapshot), trained (the dense "
        "trained D), reseed (a fresh init from another seed). Default: init; with no-rewind D "
        "keeps training.", choices=D_INITS))
    rewind: str = field(default="init", metadata=_opt(
        "Rewind point: init (θ0), iter:K (weights after K dense iterations) or frac:F "
        "(after the share F of the dense run): late rewinding.", metavar="init|iter:K|frac:F"))
    kd_d: bool = field(default=False, metadata=_opt(
        "Distil D from the dense trained D (KL between 2-class sigmoid outputs).",
        flag="--kd-d/--no-kd-d"))
    kd_weight: float = field(default=1.0, metadata=_opt(
        "Weight of the distillation loss.", type="nonneg"))
    layers: str = field(default="conv", metadata=_opt(
        "Prunable layers: conv (Conv2d and ConvTranspose2d weights, as in the paper) or "
        "conv+linear.", choices=LAYERS))
    preset: str = field(default="paper", metadata=_opt(
        "Model size and schedule: paper (PAPER.md's recipe), quick (2 CPU cores, minutes) or "
        "tiny (tests, seconds).", choices=PRESETS))
    iterations: int | None = field(default=None, metadata=_opt(
        "G iterations per round (overrides the preset).", type="posint"))
    batch_size: int | None = field(default=None, metadata=_opt(
        "Batch size (overrides the preset). SNGAN: D's batch; G's keeps the preset's ratio "
        "(2x in the paper).", type="posint"))
    eval_samples: int | None = field(default=None, metadata=_opt(
        "Images per evaluation (overrides the preset). SNGAN: generated samples; CycleGAN: test "
        "images translated per direction (default: all).", type="posint"))
    extractor: str | None = field(default=None, metadata=_opt(
        "Feature extractor of FID/IS/KID: digits (embedded) or inception (needs "
        "--inception-weights offline). Default: digits on the digit sets, else inception.",
        choices=EXTRACTORS))
    inception_weights: str | None = field(default=None, metadata=_opt(
        "Local file of the Inception weights (pt_inception-2015-12-05).", type="file",
        metavar="FILE"))
    seed: int = field(default=0, metadata=_opt(
        "Seed of θ0/φ0, training and evaluation.", type="nonnegint"))
    device: str | None = field(default=None, metadata=_opt(
        "cpu or cuda[:N] (default: cuda when available).", metavar="DEVICE"))
    amp: str | None = field(default=None, metadata=_opt(
        "Mixed precision: bf16.", choices=AMP))
    tolerance: float = field(default=0.0, metadata=_opt(
        "A round is matching when its FID <= the dense FID + this.", type="nonneg"))
    checkpoint_every: int | None = field(default=None, metadata=_opt(
        "In-round checkpoint every N iterations (default: a tenth of the round).", type="posint"))
    masks_from: str | None = field(default=None, metadata=_opt(
        "random-ticket: the IMP run directory whose round masks are reused (default: the run "
        "this one is a baseline of).", metavar="RUN_DIR"))
    ticket: str | None = field(default=None, metadata=_opt(
        "transfer: the ticket file applied in round 1.", cli=False))
    dense: bool = field(default=True, metadata=_opt(
        "Train the dense baseline (off only for lthgan transfer --no-dense).", cli=False))

    def validate(self) -> "SearchConfig":
        """Raise :class:`SearchError` naming the first bad value. Returns self."""
        if self.gan not in GANS:
            raise SearchError(f"unknown GAN {self.gan!r}; expected one of {', '.join(GANS)}")
        methods = METHODS + ((TRANSFER,) if self.ticket is not None else ())
        if self.method not in methods:
            raise SearchError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        for name in ("target_sparsity", "prune_rate"):
            v = getattr(self, name)
            if v is None and name == "target_sparsity":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < float(v) < 1.0):
                raise SearchError(f"{name} must be a number in (0, 1), got {v!r}")
        for name, choices in (("d_init", D_INITS), ("layers", LAYERS), ("preset", PRESETS),
                              ("extractor", EXTRACTORS), ("amp", AMP)):
            v = getattr(self, name)
            if v is None and name in ("d_init", "extractor", "amp"):
                continue
            if v not in choices:
                raise SearchError(f"unknown {name} {v!r}; expected one of {', '.join(choices)}")
        for name in ("iterations", "batch_size", "eval_samples", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SearchError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SearchError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("tolerance", "kd_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SearchError(f"{name} must be a finite number >= 0, got {v!r}")
        parse_rewind(self.rewind)
        if self.method == "no-rewind":
            if self.rewind != "init":
                raise SearchError(f"--rewind {self.rewind} has no effect with --method no-rewind "
                                  "(standard pruning never rewinds)")
            if self.d_init is not None:
                raise SearchError(f"--d-init {self.d_init} has no effect with --method no-rewind "
                                  "(standard pruning keeps training D)")
        if self.method == "random-ticket" and self.rewind != "init":
            raise SearchError("--rewind applies to the original init; --method random-ticket starts "
                              "from another random init")
        if self.masks_from is not None and self.method != "random-ticket":
            raise SearchError(f"--masks-from applies to --method random-ticket only, not {self.method}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise SearchError(f"device {self.device!r} is not a torch device; expected cpu, "
                                  "cuda or cuda:N") from None
        return self


def parse_rewind(spec: str) -> tuple[str, float]:
    """``"init"`` -> ("init", 0); ``"iter:K"`` -> ("iter", K); ``"frac:F"`` -> ("frac", F)."""
    if not isinstance(spec, str):
        raise SearchError(f"rewind must be init, iter:K or frac:F, got {spec!r}")
    if spec == "init":
        return "init", 0
    kind, _, value = spec.partition(":")
    try:
        if kind == "iter":
            k = int(value)
            if k < 0:
                raise ValueError
            return "iter", k
        if kind == "frac":
            f = float(value)
            if not (0.0 <= f < 1.0):
                raise ValueError
            return "frac", f
    except ValueError:
        pass
    raise SearchError(f"rewind must be init, iter:K (K >= 0 iterations) or frac:F (0 <= F < 1), "
                      f"got {spec!r}")


@dataclass
class Resolved:
    """A :class:`SearchConfig` with every default filled in for its GAN and preset."""

    config: SearchConfig
    data: str
    target_sparsity: float
    d_init: str                 # init | trained | reseed | continue (no-rewind)
    extractor: str
    device: str
    gan_config: Any
    iterations: int
    eval_samples: int | None
    checkpoint_every: int
    rewind_iteration: int       # 0: θ0
    schedule: list[float]

    def to_dict(self) -> dict:
        return {
            "data": self.data, "target_sparsity": self.target_sparsity, "d_init": self.d_init,
            "extractor": self.extractor, "device": self.device, "iterations": self.iterations,
            "eval_samples": self.eval_samples, "checkpoint_every": self.checkpoint_every,
            "rewind_iteration": self.rewind_iteration, "schedule": list(self.schedule),
        }


def _is_digits(data: str) -> bool:
    parts = data.split(":") if not data.startswith("folder:") else [data]
    return all(p in EMBEDDED_DATA for p in parts)


def resolve(config: SearchConfig) -> Resolved:
    """Fill in the defaults of ``config`` (validated first). Raises :class:`SearchError`."""
    config.validate()
    gan = config.gan
    data = config.data or DEFAULT_DATA[gan]
    if gan == "cyclegan" and ":" not in data:
        raise SearchError(f"CycleGAN needs two domains: --data NAME_A:NAME_B (e.g. digits:digits-m) "
                          f"or folder:PATH, got {data!r}")
    if gan == "sngan" and ":" in data and not data.startswith("folder:"):
        raise SearchError(f"SNGAN trains on one data set (digits, digits-m, cifar10, stl10, "
                          f"folder:PATH/A), got {data!r}")
    gan_cfg = _gans.default_config(gan, config.preset)
    over: dict[str, Any] = {}
    if config.iterations is not None:
        over["iterations"] = config.iterations
    if config.batch_size is not None:
        if gan == "sngan":
            ratio = gan_cfg.g_batch / gan_cfg.d_batch
            over["d_batch"] = config.batch_size
            over["g_batch"] = max(1, int(round(config.batch_size * ratio)))
        else:
            over["batch"] = config.batch_size
    if over:
        try:
            gan_cfg = dataclasses.replace(gan_cfg, **over)
        except ValueError as e:
            raise SearchError(f"the {gan} {config.preset} preset cannot take these overrides: {e}") from None
    iterations = gan_cfg.iterations
    target = config.target_sparsity if config.target_sparsity is not None else DEFAULT_TARGET[gan]
    if config.method == TRANSFER:
        schedule = [float(target)]
    else:
        schedule = _prune.imp_schedule(config.prune_rate, target)
    if config.method == "no-rewind":
        d_init = "continue"
    else:
        d_init = config.d_init or "init"
    extractor = config.extractor or ("digits" if _is_digits(data) else "inception")
    if config.device is not None:
        device = str(torch.device(config.device))
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SearchError(f"device {device!r} was asked for but CUDA is not available here")
    eval_samples = config.eval_samples
    if eval_samples is None:
        eval_samples = DEFAULT_EVAL_SAMPLES[gan][config.preset]
    every = config.checkpoint_every or max(1, math.ceil(iterations / 10))
    kind, value = parse_rewind(config.rewind)
    if kind == "iter":
        k = int(value)
    elif kind == "frac":
        k = int(round(value * iterations))
    else:
        k = 0
    if k >= iterations:
        raise SearchError(f"rewind point {config.rewind} is iteration {k}, but a round has only "
                          f"{iterations} iterations")
    return Resolved(config, data, float(target), d_init, extractor, device, gan_cfg, iterations,
                    eval_samples, every, k, schedule)


def config_record(res: Resolved, command: str = "search") -> dict:
    """What ``config.json`` holds. ``command`` is "search", or "train" for a dense-only run
    (which a later search with the same dense settings may take over)."""
    return {
        "format": CONFIG_FORMAT,
        "command": command,
        "lthgan_version": __version__,
        "search": asdict(res.config),
        "resolved": res.to_dict(),
        "gan_config": _jsonable(asdict(res.gan_config)),
    }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def load_config(run_dir: str | os.PathLike) -> dict:
    """``config.json`` of a run directory; :class:`RunDirError` when missing or unreadable."""
    return _report.read_config(run_dir)


def _config_from_record(record: dict, where) -> SearchConfig:
    stored = record.get("search")
    if not isinstance(stored, dict):
        raise RunDirError(f"{where}/config.json is corrupt: it has no 'search' section")
    names = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(stored) - names)
    if unknown:
        raise RunDirError(f"{where}/config.json has unknown keys {unknown}; it was written by "
                          f"another lthgan version (this is {__version__})")
    try:
        return SearchConfig(**stored).validate()
    except (SearchError, TypeError) as e:
        raise RunDirError(f"{where}/config.json is corrupt: {e}") from None


def _differing(a: SearchConfig, b: SearchConfig) -> list[str]:
    da, db = asdict(a), asdict(b)
    return [k for k in da if k not in _FREE_KEYS and da[k] != db[k]]


# --------------------------------------------------------------------------- files


def level_name(index: int) -> str:
    return "dense" if index == 0 else f"round-{index:02d}"


def _digest(tensors: Mapping[str, Tensor], meta: str) -> str:
    h = hashlib.sha256(meta.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"\n{k}|{t.dtype}|{list(t.shape)}\n".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_tensors(path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """A safetensors file with JSON metadata and a checksum, written atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta_s = json.dumps(_jsonable(dict(meta)), sort_keys=True)
    md = {"lthgan": meta_s, "sha256": _digest(data, meta_s)}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=md))


def load_tensors(path) -> tuple[dict[str, Tensor], dict]:
    """Read :func:`save_tensors`' files; :class:`RunDirError` when missing or corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise RunDirError(f"{path} is corrupt (not a readable safetensors file): {e}") from e
    if "lthgan" not in md or "sha256" not in md:
        raise RunDirError(f"{path} is not an lthgan state file (no lthgan metadata)")
    if _digest(data, md["lthgan"]) != md["sha256"]:
        raise RunDirError(f"{path} is corrupt: its checksum does not match its contents")
    return data, json.loads(md["lthgan"])


INIT_WHAT = "theta0 and phi0"  # metadata of init/state.safetensors


def save_checkpoint(path, task, trainer=None, meta: Mapping | None = None) -> Path:
    """The trained state of ``task``'s models (``models/<key>``) and, when ``trainer`` keeps
    separate evaluation copies (SNGAN's EMA of G), those too (``eval/<name>/<key>``)."""
    tensors = {f"models/{k}": v for k, v in task.models.state_dict().items()}
    eval_names = []
    if trainer is not None:
        for name, m in trainer.eval_models().items():
            if name in task.models and m is task.models[name]:
                continue
            eval_names.append(name)
            tensors.update({f"eval/{name}/{k}": v for k, v in m.state_dict().items()})
    info = {"gan": task.name, "gan_config": asdict(task.config), "eval": eval_names,
            "lthgan_version": __version__}
    info.update(meta or {})
    return save_tensors(path, tensors, info)


def load_checkpoint(path) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], dict]:
    """``(models_state, {eval_name: state}, meta)`` of a checkpoint written by
    :func:`save_checkpoint`."""
    data, meta = load_tensors(path)
    if meta.get("what") == INIT_WHAT and not any(k.startswith("models/") for k in data):
        # init/state.safetensors: the untrained θ0 and φ0 (the EMA of G starts as G)
        return dict(data), {}, meta
    models = {k[len("models/"):]: v for k, v in data.items() if k.startswith("models/")}
    evals: dict[str, dict[str, Tensor]] = {}
    for k, v in data.items():
        if k.startswith("eval/"):
            name, _, key = k[len("eval/"):].partition("/")
            evals.setdefault(name, {})[key] = v
    if not models:
        raise RunDirError(f"{path} holds no model state")
    return models, evals, meta


def _gan_config_from(gan: str, cfg: Mapping):
    cls = {"sngan": _gans.SNGANConfig, "cyclegan": _gans.CycleGANConfig}[gan]
    d = dict(cfg)
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    return cls(**d)


def model_from_checkpoint(path, device="cpu"):
    """Rebuild a task from a checkpoint: ``(task, eval_models, meta)`` where ``eval_models``
    is what would be evaluated (SNGAN: the EMA of G; CycleGAN: both generators)."""
    models, evals, meta = load_checkpoint(path)
    try:
        gan = meta["gan"]
        gan_cfg = _gan_config_from(gan, meta["gan_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable model description in its metadata ({e})") from None
    task = _gans.build(gan, gan_cfg, seed=0, device="cpu")
    _load_models(task.models, models, path)
    out: dict[str, nn.Module] = {}
    for g in task.generators:
        if g in evals:
            m = copy.deepcopy(task.models[g])
            _load_models(m, evals[g], path)
            out[g] = m
        else:
            out[g] = task.models[g]
    task.models.to(device)
    for m in out.values():
        m.to(device).eval()
    return task, out, meta


def _load_models(module: nn.Module, state: Mapping[str, Tensor], where) -> None:
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else str(e)
        raise RunDirError(f"{where} does not fit the model: {first}") from None


# --------------------------------------------------------------------------- data


def eval_split(gan: str) -> str:
    """The split a GAN is scored against: SNGAN's reference is its training set (as in the
    paper); CycleGAN translates the test images of each domain."""
    return "train" if gan == "sngan" else "test"


def load_data(gan: str, data: str, resolution: int, root=None, split: str = "train"):
    """SNGAN: an ImageSet; CycleGAN: ``(A, B)``. Data problems raise :class:`SearchError`."""
    from . import data as _data

    try:
        if gan == "sngan":
            return _data.load(data, split, resolution=resolution, root=root, download=False)
        return _data.load_unpaired(data, split, resolution=resolution, root=root, download=False)
    except (_data.DataError, FileNotFoundError) as e:
        raise SearchError(f"data {data!r}: {e}") from None


# --------------------------------------------------------------------------- evaluation


def evaluate_models(task, models: Mapping[str, nn.Module], eval_data, *, n_samples: int | None,
                    extractor: str, inception_weights=None, seed: int = 0, device=None,
                    with_labels: bool = True) -> tuple[dict, list]:
    """Score ``models`` (from ``trainer.eval_models()``): returns the metrics row and the
    :class:`lthgan.gans.EvalPair` list. SNGAN scores G; CycleGAN scores A2B and B2A and puts
    their mean in ``fid``/``is_mean``/``kid_mean``/``label_kept`` (the verdict uses it)."""
    from . import metrics as _metrics

    if n_samples is None:
        n_samples = max(len(x) for x in eval_data) if isinstance(eval_data, (tuple, list)) else len(eval_data)
    pairs = _gans.eval_pairs(task, models, eval_data, n_samples, seed=seed)
    per: dict[str, dict] = {}
    for p in pairs:
        m = dict(_metrics.evaluate(p.fake, p.real, extractor=extractor,
                                   inception_weights=inception_weights, device=device))
        if with_labels and p.source_labels is not None:
            m["label_kept"] = float(_metrics.label_kept(p.fake, p.source_labels))
        per[p.direction] = {k: _plain(v) for k, v in m.items()}
    row: dict[str, Any] = {"extractor": extractor}
    first = next(iter(per.values()))
    row["extractor_weights"] = first.get("extractor_weights")
    row["feature_layer_fid"] = first.get("feature_layer_fid")
    keys = ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "label_kept")
    if len(per) == 1:
        (d, m), = per.items()
        row.update({k: m.get(k) for k in keys})
        row["verdict_on"] = f"FID of {d}"
        row["n_fake"], row["n_real"] = m.get("n_fake"), m.get("n_real")
    else:
        for k in keys:
            vals = [m.get(k) for m in per.values()]
            row[k] = sum(vals) / len(vals) if all(v is not None for v in vals) else None
        row["verdict_on"] = "mean FID of " + " and ".join(per)
        row["n_fake"] = {d: m.get("n_fake") for d, m in per.items()}
        row["n_real"] = {d: m.get("n_real") for d, m in per.items()}
    row["directions"] = per
    return row, pairs


def _plain(v):
    if isinstance(v, Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v


def _sample_grid(pairs, eval_data, gan: str) -> Tensor:
    """Images of the sample grid: 64 samples (SNGAN) or rows of sources and translations."""
    if gan == "sngan":
        return pairs[0].fake[:64]
    n = 8
    A, B = eval_data
    by = {p.direction: p for p in pairs}
    rows = [A.all()[:n], by["A2B"].fake[:n], B.all()[:n], by["B2A"].fake[:n]]
    k = min(r.shape[0] for r in rows)
    return torch.cat([r[:k] for r in rows])


def _save_grid(path, images: Tensor, nrow: int) -> None:
    from torchvision.utils import save_image

    imgs = (images.float().clamp(-1, 1) + 1) / 2
    atomic_write(path, lambda tmp: save_image(imgs, tmp, nrow=nrow, padding=2, format="png"))


# --------------------------------------------------------------------------- the search


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Search:
    """One search in one run directory (use :func:`run_search` / :func:`resume_search`)."""

    def __init__(self, res: Resolved, run_dir: Path, *, quiet: bool = False,
                 log: Callable[[str], None] | None = None, max_level: int | None = None,
                 train_data=None):
        self.res = res
        self.cfg = res.config
        self.dir = Path(run_dir)
        self.quiet = quiet
        self.log = log or _default_log
        self.max_level = max_level
        self.main = _dist.is_main_process()
        self.gan = self.cfg.gan
        self._data = train_data
        self._eval_data = None

    # ------------------------------------------------------------------ plumbing

    def _say(self, msg: str) -> None:
        if not self.quiet and self.main:
            self.log(msg)

    @property
    def levels(self) -> list[tuple[int, float]]:
        out = [(0, 0.0)] + [(i + 1, s) for i, s in enumerate(self.res.schedule)]
        if self.max_level is not None:
            out = out[: self.max_level + 1]
        return out

    def _train_data(self):
        if self._data is None:
            self._data = load_data(self.gan, self.res.data, self.res.gan_config.resolution,
                                   self.cfg.data_root, "train")
        return self._data

    def _evaluation_data(self):
        if self._eval_data is None:
            split = eval_split(self.gan)
            if split == "train":
                self._eval_data = self._train_data()
            else:
                self._eval_data = load_data(self.gan, self.res.data, self.res.gan_config.resolution,
                                            self.cfg.data_root, split)
        return self._eval_data

    def _build(self):
        return _gans.build(self.gan, self.res.gan_config, seed=self.cfg.seed, device="cpu")

    def _owner(self, key: str) -> str:
        return key.split(".", 1)[0]

    def _sel(self) -> dict:
        return {"types": self.cfg.layers}

    # ------------------------------------------------------------------ init

    def _init_state(self) -> dict[str, Tensor]:
        path = self.dir / "init" / "state.safetensors"
        if not path.exists():
            task = self._build()
            if self.main:
                save_tensors(path, task.initial_state(),
                             {"gan": self.gan, "seed": self.cfg.seed, "what": INIT_WHAT,
                              "gan_config": asdict(self.res.gan_config)})
                atomic_write_json(self.dir / "init" / "seed.json",
                                  {"seed": self.cfg.seed, "gan": self.gan})
            _dist.barrier()
        state, meta = load_tensors(path)
        if meta.get("seed") != self.cfg.seed:
            raise RunDirError(f"{path} was made with seed {meta.get('seed')}, the config says {self.cfg.seed}")
        return state

    def _rewind_state(self) -> dict[str, Tensor]:
        if self.res.rewind_iteration == 0:
            return self._init_state()
        state, _ = load_tensors(self.dir / "dense" / "rewind.safetensors")
        return state

    def _checkpoint(self, index: int) -> dict[str, Tensor]:
        models, _, _ = load_checkpoint(self.dir / level_name(index) / "checkpoint.safetensors")
        return models

    # ------------------------------------------------------------------ masks and rewinding

    def _ticket_for(self, index: int, target: float, task) -> Ticket:
        """Masks and the state to train level ``index`` from (the level's ticket)."""
        cfg, res = self.cfg, self.res
        models = task.models
        prov = {"round": index, "sparsity_target": target, "method": cfg.method, "seed": cfg.seed,
                "gan": self.gan, "gan_config": asdict(res.gan_config), "layers": cfg.layers,
                "config": asdict(cfg)}
        if index == 0:
            state = self._init_state()
            return Ticket.from_model(models, state, dict(prov, rewind="init"))

        groups = list(task.generators) + (list(task.discriminators) if cfg.prune_d else [])
        method = cfg.method
        if method in ("imp", "no-rewind"):
            _load_models(models, self._checkpoint(index - 1), self.dir / level_name(index - 1))
            for g in groups:
                _prune.global_magnitude(models[g], target, **self._sel())
        elif method == "oneshot":
            _load_models(models, self._checkpoint(0), self.dir / "dense")
            for g in groups:
                _prune.global_magnitude(models[g], target, **self._sel())
        elif method == "random":
            for i, g in enumerate(groups):
                gen = torch.Generator().manual_seed(_mix(cfg.seed, index, i, 0x52414E44))
                _prune.random_masks(models[g], target, generator=gen, **self._sel())
        elif method == "random-ticket":
            self._masks_from_run(index, target, task)
        elif method == TRANSFER:
            self._masks_from_ticket(task)
        else:  # pragma: no cover - validated
            raise SearchError(f"unknown method {method!r}")
        masks = {n: m.mask.detach().clone() for n, m in masked_modules(models)}

        # the state each model starts the round from
        if method == "no-rewind":
            state = {k: v for k, v in self._checkpoint(index - 1).items()}
            rewound = "none (keeps training)"
        elif method == TRANSFER:
            state = dict(self._transfer_ticket().state)
            rewound = "the transferred ticket's state"
        else:
            rw = self._rewind_state()
            if method == "random-ticket":
                other = _gans.build(self.gan, res.gan_config, seed=_reinit_seed(cfg.seed))
                g_state = other.models.state_dict()
                rewound = f"a random init (seed {_reinit_seed(cfg.seed)})"
            else:
                g_state = rw
                rewound = "init" if res.rewind_iteration == 0 else f"iteration {res.rewind_iteration}"
            state = {}
            d_state = self._d_state(index, task, masks, rw)
            for k, v in task.models.state_dict().items():
                owner = self._owner(k)
                state[k] = g_state[k] if owner in task.generators else d_state[k]
        prov.update(rewind=rewound, d_init=res.d_init)
        return Ticket(masks, state, dict(prov, lthgan_version=__version__,
                                         sparsity=_ticket_sparsity(masks, task, self._sel())))

    def _d_state(self, index, task, masks, rw) -> dict[str, Tensor]:
        d_init = self.res.d_init
        if d_init == "init":
            return rw
        if d_init == "trained":
            return self._checkpoint(0)
        # reseed: D freshly initialised from another seed, with its masks set first
        seed = _reseed_seed(self.cfg.seed, index)
        out: dict[str, Tensor] = {}
        for d in task.discriminators:
            m = copy.deepcopy(task.models[d])
            for n, mod in masked_modules(m):
                mod.set_mask(masks[f"{d}.{n}" if n else d], apply=True)
            _gans.init_weights(m, self.gan, seed)
            out.update({f"{d}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
        return out

    def _masks_from_run(self, index: int, target: float, task) -> None:
        src = self.cfg.masks_from
        if src is None:
            raise SearchError("--method random-ticket needs --masks-from RUN_DIR: an IMP run whose "
                              "round masks it reuses (or run it into that IMP run's directory with --out)")
        path = Path(src) / level_name(index) / "ticket.safetensors"
        if not (Path(src) / level_name(index) / "DONE").exists():
            raise SearchError(f"--masks-from {src}: {level_name(index)} is not finished there, so its "
                              "IMP masks are not available yet")
        try:
            ticket = Ticket.load(path)
        except (TicketError, FileNotFoundError) as e:
            raise RunDirError(f"--masks-from {src}: {e}") from None
        got = ticket.provenance.get("sparsity_target")
        if got is None or abs(float(got) - target) > 1e-9:
            raise SearchError(f"--masks-from {src}: {level_name(index)} was pruned to sparsity {got}, "
                              f"but this search's schedule asks for {target}; use the same "
                              "--prune-rate and --target-sparsity")
        want = {n for n, _ in masked_modules(task.models)}
        if set(ticket.masks) != want:
            raise SearchError(f"--masks-from {src}: its models do not match this search's "
                              "(a different --gan or --preset)")
        for n, m in masked_modules(task.models):
            if tuple(ticket.masks[n].shape) != tuple(m.mask.shape):
                raise SearchError(f"--masks-from {src}: mask {n!r} has shape {list(ticket.masks[n].shape)}, "
                                  f"this model {list(m.mask.shape)}")
        groups = set(task.generators) | (set(task.discriminators) if self.cfg.prune_d else set())
        for n, m in masked_modules(task.models):
            if self._owner(n) in groups:
                m.set_mask(ticket.masks[n], apply=True)

    def _transfer_ticket(self) -> Ticket:
        try:
            return Ticket.load(self.cfg.ticket)
        except (TicketError, FileNotFoundError) as e:
            raise SearchError(f"--ticket {self.cfg.ticket}: {e}") from None

    def _masks_from_ticket(self, task) -> None:
        ticket = self._transfer_ticket()
        try:
            ticket.validate(task.models)
        except TicketError as e:
            raise SearchError(f"--ticket {self.cfg.ticket} does not fit the model: {e}") from None
        for n, m in masked_modules(task.models):
            m.set_mask(ticket.masks[n], apply=True)

    def _kd_teacher(self):
        if not self.cfg.kd_d:
            return None
        task = self._build()
        _load_models(task.models, self._checkpoint(0), self.dir / "dense")
        return nn.ModuleDict({d: task.models[d] for d in task.discriminators})

    # ------------------------------------------------------------------ one level

    def _run_level(self, index: int, target: float) -> dict:
        name = level_name(index)
        ldir = self.dir / name
        if (ldir / "DONE").exists():
            if self.main and (ldir / "train_state.pt").exists():  # killed right after DONE
                (ldir / "train_state.pt").unlink()
            return self._finished(ldir)
        if index == 0 and not self.cfg.dense:
            return {}
        t_start = time.time()
        task = self._build()
        ticket_path = ldir / "ticket.safetensors"
        if ticket_path.exists():
            try:
                ticket = Ticket.load(ticket_path)
            except TicketError as e:
                raise RunDirError(f"{ticket_path}: {e}") from None
        else:
            ticket = self._ticket_for(index, target, task)
            if self.main:
                ticket.save(ticket_path)
            _dist.barrier()
        try:
            ticket.apply(task.models)
        except TicketError as e:
            raise RunDirError(f"{ticket_path} does not fit the model: {e}") from None
        self._check_sparsity(task, index, target)

        kd = self._kd_teacher() if index > 0 else None
        trainer = _gans.make_trainer(task, self._train_data(), iterations=self.res.iterations,
                                     device=self.res.device, seed=self.cfg.seed, amp=self.cfg.amp,
                                     kd_teacher=kd, kd_weight=self.cfg.kd_weight)
        trainer.reset()
        state_path = ldir / "train_state.pt"
        elapsed = 0.0
        last: dict = {}
        if state_path.exists():
            try:
                saved = torch.load(state_path, map_location="cpu", weights_only=True)
                trainer.load_state_dict(saved["trainer"])
                elapsed = float(saved.get("train_time_s", 0.0))
                last = dict(saved.get("losses", {}))
            except Exception as e:  # torch.load raises many types on a damaged file
                raise RunDirError(f"{state_path} is corrupt ({type(e).__name__}: {e}); delete it to "
                                  f"restart {name} from its beginning") from None
            self._say(f"{name}: resuming from iteration {trainer.iteration}/{trainer.iterations}")

        last, elapsed = self._train(trainer, name, target, index, state_path, elapsed, last)
        train_time = elapsed

        # the final checkpoint is what is compared (no best-of selection)
        t_eval = time.time()
        if self.main:
            save_checkpoint(ldir / "checkpoint.safetensors", task, trainer,
                            {"level": name, "iteration": trainer.iteration})
        g_report = _group_report(task, task.generators, self._sel())
        d_report = _group_report(task, task.discriminators, self._sel())
        row = None
        if self.main:
            row, pairs = evaluate_models(
                task, trainer.eval_models(), self._evaluation_data(), n_samples=self.res.eval_samples,
                extractor=self.res.extractor, inception_weights=self.cfg.inception_weights,
                seed=self.cfg.seed, device=self.res.device)
            grid = _sample_grid(pairs, self._evaluation_data(), self.gan)
            _save_grid(ldir / "samples.png", grid, nrow=8)
        row = _dist.broadcast_object(row)
        eval_time = time.time() - t_eval

        dense = self._dense_metrics() if index > 0 else None
        metrics = {
            "level": index, "name": name, "method": "dense" if index == 0 else self.cfg.method,
            "gan": self.gan, "data": self.res.data, "sparsity_target": target,
            "sparsity": g_report["prunable_sparsity"], "sparsity_overall": g_report["overall_sparsity"],
            "d_sparsity": d_report["prunable_sparsity"],
            "groups": {g: {k: v for k, v in r.items() if k != "layers"}
                       for g, r in g_report["groups"].items()},
            **row,
            "checkpoint": "final", "selection": "final checkpoint of the round (no best-of selection)",
            "iterations": trainer.iteration, "final_losses": last,
            "train_time_s": round(train_time, 3), "eval_time_s": round(eval_time, 3),
            "time_s": round(train_time + eval_time, 3), "seed": self.cfg.seed,
            "rewind": ticket.provenance.get("rewind"), "d_init": None if index == 0 else self.res.d_init,
            "tolerance": self.cfg.tolerance,
        }
        if self.res.d_init == "reseed" and index > 0:
            metrics["d_seed"] = _reseed_seed(self.cfg.seed, index)
        if index == 0:
            metrics["dense_fid"], metrics["matching"] = row.get("fid"), None
        else:
            metrics["dense_fid"] = dense.get("fid") if dense is not None else None
            metrics["matching"] = judge(row.get("fid"), metrics["dense_fid"], self.cfg.tolerance)
        if self.main:
            atomic_write_json(ldir / "sparsity_report.json", {
                "generators": g_report, "discriminators": d_report})
            atomic_write_json(ldir / "metrics.json", metrics)
            atomic_write_text(ldir / "DONE", f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            if state_path.exists():
                state_path.unlink()
        _dist.barrier()
        self._say(_round_line(metrics, time.time() - t_start))
        return metrics

    def _check_sparsity(self, task, index: int, target: float) -> None:
        for g in task.generators + (task.discriminators if self.cfg.prune_d else ()):
            ws = _prune.prunable(task.models[g], **self._sel())
            total = sum(w.mask.numel() for w in ws)
            zeros = total - sum(int(w.mask.count_nonzero()) for w in ws)
            want = _prune.target_zeros(target, total) if index > 0 else 0
            if self.cfg.method == TRANSFER and index > 0:
                continue
            if zeros != want:
                raise RunDirError(f"{level_name(index)}: {g} has {zeros} of {total} prunable weights "
                                  f"pruned, but sparsity {target} needs {want}; the run directory "
                                  "is inconsistent")

    def _train(self, trainer, name, target, index, state_path, elapsed, last):
        from tqdm.auto import tqdm

        every = self.res.checkpoint_every
        k = self.res.rewind_iteration
        snap = self.dir / "dense" / "rewind.safetensors"
        if index == 0 and k > 0 and trainer.iteration > k and not snap.exists():
            raise RunDirError(f"{snap} is missing although the dense run is past iteration {k}")
        desc = name if index == 0 else f"{name} ({100 * target:.2f}%)"
        bar = tqdm(total=trainer.iterations, initial=trainer.iteration, desc=desc, unit="it",
                   file=sys.stderr, disable=self.quiet or not self.main, dynamic_ncols=True,
                   leave=False, mininterval=0.5)
        t0 = time.time()
        try:
            while trainer.iteration < trainer.iterations:
                last = trainer.step()
                bar.update(1)
                it = trainer.iteration
                if index == 0 and k > 0 and it == k:
                    if self.main:
                        save_tensors(snap, trainer.task.models.state_dict(),
                                     {"what": "late-rewind snapshot", "iteration": k})
                    _dist.barrier()
                if it % 10 == 0 or it == trainer.iterations:
                    bar.set_postfix({n: f"{v:.3g}" for n, v in last.items() if n.startswith("loss")},
                                    refresh=False)
                if it % every == 0 or it == trainer.iterations:
                    self._save_train_state(trainer, state_path, elapsed + time.time() - t0, last)
        finally:
            bar.close()
        return last, elapsed + time.time() - t0

    def _save_train_state(self, trainer, path, elapsed, last) -> None:
        state = trainer.state_dict()  # collective under DDP
        if self.main:
            obj = {"trainer": state, "train_time_s": float(elapsed),
                   "losses": {k: float(v) for k, v in last.items()}}
            atomic_write(path, lambda tmp: torch.save(obj, tmp))
        _dist.barrier()

    def _finished(self, ldir: Path) -> dict:
        try:
            return json.loads((ldir / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{ldir} is marked DONE but its metrics.json is unreadable: {e}") from None

    def _dense_metrics(self) -> dict | None:
        if not self.cfg.dense:
            return None
        p = self.dir / "dense" / "metrics.json"
        return self._finished(self.dir / "dense") if p.exists() else None

    # ------------------------------------------------------------------ the whole search

    def run(self) -> list[dict]:
        rows = []
        for index, target in self.levels:
            m = self._run_level(index, target)
            if m:
                rows.append(m)
            if self.main:
                self._write_summaries()
            _dist.barrier()
        return rows

    def _write_summaries(self) -> None:
        lines = []
        for index, _ in [(0, 0.0)] + [(i + 1, s) for i, s in enumerate(self.res.schedule)]:
            ldir = self.dir / level_name(index)
            if (ldir / "DONE").exists():
                lines.append(json.dumps(self._finished(ldir), sort_keys=True))
        atomic_write_text(self.dir / "metrics.jsonl", "".join(l + "\n" for l in lines))
        _report.write_summary(self.dir)
        parent = _baseline_parent(self.dir)
        if parent is not None:
            try:
                _report.write_summary(parent)
            except RunDirError:
                pass  # the parent has not finished a level yet: nothing to add the baseline to


def judge(fid: float | None, dense_fid: float | None, tolerance: float = 0.0) -> bool | None:
    """The verdict: matching when ``fid <= dense_fid + tolerance`` (None without both FIDs)."""
    if fid is None or dense_fid is None:
        return None
    return bool(fid <= dense_fid + tolerance)


def _round_line(m: dict, seconds: float) -> str:
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


def _group_report(task, names, sel) -> dict:
    """Sparsity over the prunable weights and over all parameters of the models ``names``."""
    groups = {}
    total = zeros = params = pruned = 0
    for n in names:
        r = _prune.sparsity_report(task.models[n], **sel)
        groups[n] = {"prunable_sparsity": r.prunable_sparsity, "overall_sparsity": r.overall_sparsity,
                     "prunable_total": r.prunable_total, "prunable_zeros": r.prunable_zeros,
                     "total_params": r.total_params, "overall_pruned": r.overall_pruned,
                     "layers": [l.to_dict() for l in r.layers]}
        total += r.prunable_total
        zeros += r.prunable_zeros
        params += r.total_params
        pruned += r.overall_pruned
    return {"prunable_sparsity": zeros / total if total else 0.0,
            "overall_sparsity": pruned / params if params else 0.0,
            "prunable_total": total, "prunable_zeros": zeros, "total_params": params,
            "overall_pruned": pruned, "groups": groups}


def _ticket_sparsity(masks, task, sel) -> float:
    """Pruned share of the generators' prunable weights under ``masks``."""
    names = [f"{g}.{w.name}" for g in task.generators for w in _prune.prunable(task.models[g], **sel)]
    total = sum(masks[n].numel() for n in names)
    kept = sum(int(masks[n].count_nonzero()) for n in names)
    return 1.0 - kept / total if total else 0.0


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps)."""
    m = (1 << 64) - 1
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & m)) & m
        x = (x + 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        x ^= x >> 31
    return x >> 1


def _reinit_seed(seed: int) -> int:
    """random-ticket: the seed of the other random init."""
    return _mix(seed, 0x5449434B) % (2**31)


def _reseed_seed(seed: int, index: int) -> int:
    """--d-init reseed: the seed of round ``index``'s fresh D."""
    return _mix(seed, index, 0x44) % (2**31)


# --------------------------------------------------------------------------- run directories


def _baseline_parent(run_dir: Path) -> Path | None:
    p = Path(run_dir)
    if p.parent.name == "baselines" and (p.parent.parent / "config.json").exists():
        return p.parent.parent
    return None


def baseline_name(cfg: SearchConfig, parent: SearchConfig) -> str:
    """Folder name of a baseline: the method plus the variant keys that differ."""
    parts = [cfg.method]
    for k in sorted(_VARIANT_KEYS - {"method", "masks_from"}):
        a, b = getattr(cfg, k), getattr(parent, k)
        if a != b:
            v = a if not isinstance(a, bool) else ("on" if a else "off")
            k2 = k.replace("_", "-")
            parts.append(f"{k2}-{v}".replace(":", "-").replace("+", "-"))
    return "-".join(str(p) for p in parts)


def _is_run_dir(p: Path) -> bool:
    return (p / "config.json").exists()


def _plan(config: SearchConfig, out, command: str = "search"
          ) -> tuple[Resolved, Path, Callable[[Callable | None], None] | None]:
    """Choose the directory for ``config`` given ``--out`` without touching the disk: a new
    run, the same run (continue) or a baseline of the run already there. Returns the resolved
    config, the run directory and what creates it (None when it exists)."""
    res = resolve(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SearchError(f"--out {out} exists and is not a directory")
    if _is_run_dir(out):
        record = load_config(out)
        stored = _config_from_record(record, out)
        diff = _differing(stored, config)
        if not diff:
            return res, out, None
        if (record.get("command") == "train" and command == "search"
                and all(getattr(stored, k) == getattr(config, k) for k in _DENSE_KEYS)):
            # a search taking over a dense-only run (lthgan train) with the same dense settings
            return res, out, lambda log: _write_config(out, res, command)
        if not set(diff) <= _VARIANT_KEYS:
            raise ConfigMismatchError(out, diff, asdict(stored), asdict(config),
                                      hint="; choose another --out, or --resume it without changing them")
        # a baseline of the run in `out`: its own directory under out/baselines/
        bdir = out / "baselines" / baseline_name(config, stored)
        if config.method == "random-ticket" and config.masks_from is None:
            config = dataclasses.replace(config, masks_from=str(out.resolve()))
            res = resolve(config)
        if _is_run_dir(bdir):
            _check_same(bdir, config)
            return res, bdir, None

        def create(log):
            _write_config(bdir, res)
            _reuse_dense(out, stored, bdir, config, log)

        return res, bdir, create
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"--out {out} is a non-empty directory without config.json; it is not a run "
                          "directory (choose an empty or new folder)")
    return res, out, lambda log: _write_config(out, res, command)


def _write_config(run_dir: Path, res: Resolved, command: str = "search") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config_record(res, command))


def _check_same(run_dir: Path, config: SearchConfig) -> SearchConfig:
    stored = _config_from_record(load_config(run_dir), run_dir)
    diff = _differing(stored, config)
    if diff:
        raise ConfigMismatchError(run_dir, diff, asdict(stored), asdict(config),
                                  hint="; resume it without changing them, or start a new --out")
    return stored


def _reuse_dense(parent: Path, parent_cfg: SearchConfig, bdir: Path, cfg: SearchConfig, log) -> None:
    """Copy the parent's θ0/φ0 and finished dense level into a new baseline directory when the
    dense run would be identical (same data, model, schedule, seed and rewind point)."""
    same = all(getattr(parent_cfg, k) == getattr(cfg, k) for k in _DENSE_KEYS)
    if not same or not (parent / "dense" / "DONE").exists():
        return
    for sub in ("init", "dense"):
        for f in sorted((parent / sub).iterdir()):
            if f.name.startswith(".") or f.name in ("DONE", "train_state.pt") or not f.is_file():
                continue
            data = f.read_bytes()
            atomic_write(bdir / sub / f.name, lambda tmp, d=data: Path(tmp).write_bytes(d))
    atomic_write_text(bdir / "dense" / "DONE", f"copied from {parent}/dense\n")
    if log:
        log(f"dense: reused from {parent}/dense (same data, model, schedule and seed)")


def check_extractor(extractor: str, inception_weights=None) -> None:
    """:class:`SearchError` when the feature extractor cannot run here (Inception weights
    missing while lthgan never downloads them)."""
    from . import metrics as _metrics

    if extractor == "inception":
        if inception_weights is None and not _metrics.inception_cache_path().is_file():
            raise SearchError(
                "--extractor inception needs the Inception-v3 weights and lthgan never downloads "
                f"them: pass --inception-weights FILE (fetch {_metrics.inception_url()} on a connected "
                "machine), or use --extractor digits on the digit data sets")
        if inception_weights is not None and not Path(inception_weights).is_file():
            raise SearchError(f"--inception-weights {inception_weights}: no such file")
    elif inception_weights is not None:
        raise SearchError(f"--inception-weights applies to --extractor inception, not {extractor}")


def check_ready(res: Resolved):
    """Fail before any training on what would only fail later: the data (loaded and returned)
    and the feature extractor's weights."""
    cfg = res.config
    if cfg.ticket is not None and not Path(cfg.ticket).is_file():
        raise SearchError(f"--ticket {cfg.ticket}: no such file")
    if cfg.method == "random-ticket":
        if cfg.masks_from is None:
            raise SearchError("--method random-ticket needs --masks-from RUN_DIR: an IMP run whose round "
                              "masks it reuses (or run it with --out pointing at that IMP run)")
        src = _config_from_record(load_config(cfg.masks_from), cfg.masks_from)
        if src.method != "imp":
            raise SearchError(f"--masks-from {cfg.masks_from} is a {src.method} run, not an IMP run")
        diff = [k for k in ("gan", "preset", "data", "prune_rate", "target_sparsity", "prune_d", "layers")
                if getattr(src, k) != getattr(cfg, k)]
        if diff:
            raise SearchError(f"--masks-from {cfg.masks_from} was run with other settings ("
                              + ", ".join(f"{k}={getattr(src, k)!r}" for k in diff)
                              + "); a random ticket needs the same model, schedule and pruned layers")
    data = load_data(cfg.gan, res.data, res.gan_config.resolution, cfg.data_root, "train")
    check_extractor(res.extractor, cfg.inception_weights)
    return data


def run_search(config: SearchConfig, out, *, quiet: bool = False,
               log: Callable[[str], None] | None = None, max_level: int | None = None,
               command: str = "search") -> tuple[Path, list[dict]]:
    """Run (or continue) the search ``config`` in ``out``. Returns the run directory (``out``,
    or ``out/baselines/NAME`` for a variant of the search already in ``out``) and the metrics
    of its levels. ``command="train"`` marks a dense-only run (use ``max_level=0``)."""
    if command not in ("search", "train"):
        raise SearchError(f"command must be 'search' or 'train', got {command!r}")
    res, run_dir, create = _plan(config, out, command)
    data = check_ready(res)
    if create is not None:
        if _dist.is_main_process():
            create(None if quiet else (log or _default_log))
        _dist.barrier()
    search = Search(res, run_dir, quiet=quiet, log=log, max_level=max_level, train_data=data)
    return run_dir, search.run()


def resume_search(run_dir, overrides: Mapping[str, Any] | None = None, *, quiet: bool = False,
                  log: Callable[[str], None] | None = None, max_level: int | None = None
                  ) -> tuple[Path, list[dict]]:
    """Continue the search in ``run_dir`` from its last checkpoint. ``overrides`` are settings
    given again on the command line: any that differ from the stored ones (except
    ``checkpoint_every``) make it refuse with :class:`ConfigMismatchError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such directory")
    stored = _config_from_record(load_config(run_dir), run_dir)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(SearchConfig)})
    if unknown:
        raise SearchError(f"unknown settings {unknown}")
    given = dataclasses.replace(stored, **overrides)
    diff = _differing(stored, given)
    if diff:
        raise ConfigMismatchError(run_dir, diff, asdict(stored), asdict(given),
                                  hint="; resume without changing them, or start a new --out")
    res = resolve(given)
    data = check_ready(res)
    search = Search(res, run_dir, quiet=quiet, log=log, max_level=max_level, train_data=data)
    return run_dir, search.run()

"""State files of a run: safetensors with JSON metadata and a checksum (θ0/φ0, final
checkpoints, late-rewind snapshots), and the models rebuilt from them."""
from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from .. import __version__
from .. import gans as _gans
from .._io import atomic_write, jsonable, tensor_digest
from .errors import RunDirError
from .rundir import file_kind

__all__ = ["save_tensors", "load_tensors", "save_checkpoint", "load_checkpoint",
           "model_from_checkpoint", "load_models", "INIT_WHAT"]

INIT_WHAT = "theta0 and phi0"  # metadata of init/state.safetensors


def _digest(data: Mapping[str, Tensor], meta: str) -> str:
    return tensor_digest(meta, ((k, data[k]) for k in sorted(data)), lead="\n")


def save_tensors(path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """A safetensors file with JSON metadata and a checksum, written atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta_s = json.dumps(jsonable(dict(meta)), sort_keys=True)
    md = {"lthgan": meta_s, "sha256": _digest(data, meta_s)}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=md))


def load_tensors(path) -> tuple[dict[str, Tensor], dict]:
    """Read :func:`save_tensors`' files; :class:`RunDirError` when missing, corrupt, or
    another kind of file."""
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
    if md.get("format") == "lthgan.ticket":
        raise RunDirError(f"{path} is an lthgan ticket (masks and a start state), not a state or "
                          "checkpoint file")
    if "lthgan" not in md or "sha256" not in md:
        raise RunDirError(f"{path} is a safetensors file that lthgan did not write (no lthgan metadata)")
    if _digest(data, md["lthgan"]) != md["sha256"]:
        raise RunDirError(f"{path} is corrupt: its checksum does not match its contents")
    return data, json.loads(md["lthgan"])


def save_checkpoint(path, task, trainer=None, meta: Mapping | None = None) -> Path:
    """The trained state of ``task``'s models (``models/<key>``) and, when ``trainer`` keeps
    separate evaluation copies (an EMA of G), those too (``eval/<name>/<key>``)."""
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
    :func:`save_checkpoint`, or of ``init/state.safetensors`` (the untrained models)."""
    data, meta = load_tensors(path)
    if meta.get("what") == INIT_WHAT and not any(k.startswith("models/") for k in data):
        return dict(data), {}, meta
    models = {k[len("models/"):]: v for k, v in data.items() if k.startswith("models/")}
    evals: dict[str, dict[str, Tensor]] = {}
    for k, v in data.items():
        if k.startswith("eval/"):
            name, _, key = k[len("eval/"):].partition("/")
            evals.setdefault(name, {})[key] = v
    if not models:
        raise RunDirError(f"{path} holds no trained models (it is a {file_kind(path)} file)")
    return models, evals, meta


def load_models(module: nn.Module, state: Mapping[str, Tensor], where) -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line :class:`RunDirError`."""
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else str(e)
        raise RunDirError(f"{where} does not fit the model: {first}") from None


def model_from_checkpoint(path, device="cpu"):
    """Rebuild a task from a checkpoint: ``(task, eval_models, meta)`` where ``eval_models``
    is what would be evaluated (the EMA copies where the trainer kept them, else the
    generators)."""
    models, evals, meta = load_checkpoint(path)
    try:
        gan_cfg = _gans.config_from_dict(meta["gan"], meta["gan_config"])
        task = _gans.build(meta["gan"], gan_cfg, seed=0, device="cpu")
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable model description in its metadata ({e})") from None
    if meta.get("channels"):  # a structural level: the generators at their narrower widths
        from .structure import groups_of, kept_from_lists, slice_task

        slice_task(task, groups_of(_gans.family(meta["gan"]), gan_cfg), kept_from_lists(meta["channels"]))
    load_models(task.models, models, path)
    out: dict[str, nn.Module] = {}
    for g in task.generators:
        if g in evals:
            m = copy.deepcopy(task.models[g])
            load_models(m, evals[g], path)
            out[g] = m
        else:
            out[g] = task.models[g]
    task.models.to(device)
    for m in out.values():
        m.to(device).eval()
    return task, out, meta

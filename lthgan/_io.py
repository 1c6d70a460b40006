"""Atomic file writes, JSON of lthgan's records, and tensor digests.

A write goes to a temporary file in the same folder, is fsynced, given the mode the umask
allows a new file (as ``open`` would) and renamed over the target: a run killed at any moment
leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "json_default", "jsonable", "tensor_digest", "file_digest"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files follow the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _w)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    """JSON for what lthgan's records hold beside plain types: dataclasses, paths, sets,
    one-element tensors and numpy scalars, dtypes and devices."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (Path, os.PathLike)):
        return os.fspath(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (torch.dtype, torch.device)):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serializable")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(obj, default=json_default))


def tensor_digest(prefix: str, items: Iterable[tuple[str, torch.Tensor]], lead: str = "") -> str:
    """sha256 over ``prefix``, then for each ``(name, tensor)`` in the order given: ``lead``,
    a line ``name|dtype|shape`` and the tensor's bytes. Any flipped or missing byte changes it.
    (Tickets use ``lead=""``; run-directory state files ``lead="\n"``.)"""
    h = hashlib.sha256(prefix.encode())
    for name, t in items:
        h.update(f"{lead}{name}|{t.dtype}|{list(t.shape)}\n".encode())
        if t.numel():
            flat = t.detach().to("cpu").contiguous().reshape(-1)
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

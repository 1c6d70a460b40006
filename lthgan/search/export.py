"""``lthgan export``: a level's generator as a standalone file that runs without lthgan.

A structural level's generator is the narrower network itself; an unstructured level's is the
dense layers with the pruned weights baked in as zeros. The file is a ``torch.export`` program
(``.pt2``, loaded with ``torch.export.load(FILE).module()``), or TorchScript
(``torch.jit.load(FILE)``) where a model cannot be exported (see :func:`lthgan.channels.export`).
"""
from __future__ import annotations

from pathlib import Path

from .. import gans as _gans
from .checkpoints import model_from_checkpoint
from .errors import RunDirError, SearchError
from .rundir import RunDir, check_writable, eval_checkpoints

__all__ = ["export_level"]


def export_level(path, out, generator: str | None = None) -> tuple[Path, str, str]:
    """Export the generator ``generator`` (default: the family's first) of the level at
    ``path`` (a level folder or a checkpoint file; what its evaluation scores, the EMA copy
    where one is kept) to ``out``. Returns ``(out, format, generator)``."""
    from .. import channels

    path, out = Path(path), Path(out)
    if path.is_dir() and RunDir(path).exists:
        raise RunDirError(f"{path} is a run directory; name one of its levels, e.g. {path}/round-03")
    ckpt = eval_checkpoints(path)[-1]
    task, models, _ = model_from_checkpoint(ckpt)
    g = generator or next(iter(models))
    if g not in models:
        raise SearchError(f"generator {g!r} is not one of this {task.name} level's: {', '.join(models)}",
                          "generator")
    check_writable(out.parent)
    example = _gans.family(task.name).generator_input(task.config, 2)
    return out, channels.export(models[g].eval(), example, out), g

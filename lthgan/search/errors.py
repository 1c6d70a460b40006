"""The search layer's errors. Each names the settings (``fields``) or files at fault; the CLI
turns field names into flags."""
from __future__ import annotations

from typing import Mapping

__all__ = ["SearchError", "RunDirError", "ConfigMismatchError"]


class SearchError(ValueError):
    """A search cannot run as configured. ``fields`` names the settings at fault."""

    def __init__(self, message: str, *fields: str):
        super().__init__(message)
        self.fields = tuple(fields)


class RunDirError(ValueError):
    """A run directory is missing, corrupt, locked, or not what was expected."""

    def __init__(self, message: str, *fields: str):
        super().__init__(message)
        self.fields = tuple(fields)


class ConfigMismatchError(RunDirError):
    """A run directory holds a search with another configuration. ``fields`` lists the
    settings that differ; ``stored`` and ``given`` their values."""

    def __init__(self, run_dir, keys, stored: Mapping, given: Mapping, hint: str = ""):
        keys = list(keys)
        self.stored = {k: stored.get(k) for k in keys}
        self.given = {k: given.get(k) for k in keys}
        diffs = ", ".join(f"{k} (stored {self.stored[k]!r}, given {self.given[k]!r})" for k in keys)
        super().__init__(f"{run_dir} holds a search with a different configuration; differing "
                         f"settings: {diffs}{hint}", *keys)

    @property
    def keys(self) -> list[str]:
        return list(self.fields)

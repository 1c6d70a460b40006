"""lthgan: lottery tickets in GANs.

Importing the package loads the compiled core, so ``torch.ops.lthgan.*`` is available
to any project that does ``import lthgan``.
"""
from __future__ import annotations

__version__ = "0.1.0"

import torch  # noqa: F401  (the extension links against torch's libraries)

try:
    from . import _C  # noqa: F401  registers torch.ops.lthgan.*
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "lthgan's compiled core (lthgan._C) could not be loaded: "
        f"{e}. Build it with `make build` (or `pip install --no-build-isolation -e .`)."
    ) from e

from . import ops  # noqa: E402,F401  registers fake kernels and vmap rules
from . import optim  # noqa: E402,F401  Adam / AdamW on the fused step

__all__ = ["__version__", "ops", "optim"]

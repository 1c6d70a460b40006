"""Lottery tickets: masks plus the state to rewind to, saved in one safe file.

A :class:`Ticket` holds

* ``masks``: a bool tensor per lthgan masked layer, keyed by the module's qualified name;
* ``state``: a full ``state_dict()`` to rewind to -- theta_0 for every parameter and buffer
  (norm running stats, spectral-norm vectors, ...) or a late-rewind snapshot. The mask
  buffers themselves are carried by ``masks`` and never by ``state``: keys of the form
  ``"<layer>.mask"`` for the ticket's layers are dropped from ``state``, so a raw
  ``model.state_dict()`` can be passed as is;
* ``provenance``: a JSON-ready dict (round, sparsity, seed, config, lthgan version, creation
  time, and whatever the caller adds).

File format (one safetensors file, never a pickle)
--------------------------------------------------
* tensor ``mask/<layer>``: the layer's mask bit-packed at 1 bit per entry (``uint8``,
  big-endian bit order within a byte, as ``numpy.packbits``), its shape in the metadata;
* tensor ``state/<key>``: the state tensors as they are;
* metadata: ``format = "lthgan.ticket"``, ``format_version`` (2; version 1 files, which lack
  ``channels``, still load), ``layout`` (JSON: ``masks``, a list of ``[layer, shape]``;
  ``state``, a list of keys, in order; and for a structural ticket ``channels``, the kept
  channel indices of every channel group of every generator), ``provenance`` (JSON) and
  ``sha256``: a digest over the format version, the layout, the provenance and every
  tensor's dtype, shape and bytes in that order, so any flipped or missing byte is caught.

The file is written atomically (temporary file, fsync, rename).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from . import __version__, ops
from ._io import atomic_write, json_default, tensor_digest
from .nn import masked_modules, raw_weight

__all__ = ["Ticket", "TicketError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "lthgan.ticket"
FORMAT_VERSION = 2
#: versions this lthgan reads: 1 (lthgan 0.1: masks and state) and 2 (adds kept channels)
READ_VERSIONS = (1, 2)

_MASK_PREFIX = "mask/"
_STATE_PREFIX = "state/"


class TicketError(ValueError):
    """A ticket file is unreadable, corrupt, or does not fit the model it is applied to."""


# --------------------------------------------------------------------------- helpers


def _normalise_provenance(provenance: Mapping | None) -> dict:
    if provenance is None:
        return {}
    if not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    try:
        return json.loads(json.dumps(dict(provenance), default=json_default, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"provenance must be JSON-serialisable: {e}") from e


def _normalise_channels(channels: Mapping | None) -> dict | None:
    if channels is None:
        return None
    try:
        return {str(g): {str(n): [int(i) for i in idx] for n, idx in by.items()} for g, by in channels.items()}
    except (AttributeError, TypeError, ValueError) as e:
        raise TypeError(f"channels must map generator -> group -> kept indices: {e}") from None


def _mask_key(layer: str) -> str:
    return f"{layer}.mask" if layer else "mask"


def _pack(mask: torch.Tensor) -> torch.Tensor:
    bits = mask.detach().to("cpu", torch.bool).reshape(-1).numpy()
    return torch.from_numpy(np.packbits(bits))


def _unpack(packed: torch.Tensor, shape: tuple[int, ...], layer: str) -> torch.Tensor:
    n = math.prod(shape)
    want = (n + 7) // 8
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != want:
        raise TicketError(
            f"mask of layer {layer!r}: expected {want} packed bytes (uint8, 1-D) for shape "
            f"{list(shape)}, found {packed.dtype} {list(packed.shape)}"
        )
    bits = np.unpackbits(packed.numpy(), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def _digest(layout: str, provenance: str, tensors: list[tuple[str, torch.Tensor]],
            version: int = FORMAT_VERSION) -> str:
    return tensor_digest(f"{FORMAT}/{version}\n{layout}\n{provenance}\n", tensors)


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}"


# --------------------------------------------------------------------------- ticket


class Ticket:
    """Masks, the state to rewind to, and where they came from.

    ``Ticket(masks, state, provenance)`` copies nothing; use :meth:`from_model` to capture a
    model's masks with a snapshot of a state.
    """

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
        provenance: Mapping | None = None,
        channels: Mapping | None = None,
    ):
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a dict of bool tensors by layer name, got {type(masks).__name__}")
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a state_dict (dict of tensors), got {type(state).__name__}")
        self.masks: dict[str, torch.Tensor] = {}
        for name, m in masks.items():
            if not isinstance(name, str):
                raise TypeError(f"mask keys must be layer names (str), got {name!r}")
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                what = _describe(m) if isinstance(m, torch.Tensor) else type(m).__name__
                raise TypeError(f"mask of layer {name!r} must be a bool tensor, got {what}")
            self.masks[name] = m
        mask_keys = {_mask_key(n) for n in self.masks}
        self.state: dict[str, torch.Tensor] = {}
        for key, t in state.items():
            if not isinstance(key, str):
                raise TypeError(f"state keys must be str, got {key!r}")
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"state[{key!r}] must be a tensor, got {type(t).__name__}")
            if key in mask_keys:
                continue  # the masks travel in `masks`
            self.state[key] = t
        self.provenance: dict = _normalise_provenance(provenance)
        #: a structural ticket's kept channels: generator -> channel group -> indices of the
        #: full-width model (its masks and state are then those of the narrower model)
        self.channels: dict | None = _normalise_channels(channels)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        state: Mapping[str, torch.Tensor] | None = None,
        provenance: Mapping | None = None,
    ) -> "Ticket":
        """Capture ``model``'s masks (every lthgan masked layer) with ``state`` to rewind to.

        ``state`` is a ``state_dict()`` of the same architecture (theta_0, or a late-rewind
        snapshot); None snapshots the model's current state. Tensors are copied to the CPU,
        so later training does not change the ticket. ``provenance`` gets ``lthgan_version``,
        ``created`` (UTC, ISO 8601) and ``sparsity`` (pruned share of the masked weights)
        unless given, and ``round``, ``seed``, ``config`` default to None. The state is
        checked against the model (:meth:`validate`).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        layers = masked_modules(model)
        if not layers:
            raise TicketError(
                "the model has no lthgan masked layers, so there is no mask to put in a ticket; "
                "convert it with `lthgan.nn.masked(model)` first"
            )
        if state is None:
            state = model.state_dict()
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a state_dict (dict of tensors), got {type(state).__name__}")
        for k, v in state.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"state[{k!r}] must be a tensor, got {type(v).__name__}")
        masks = {name: m.mask.detach().to("cpu", copy=True) for name, m in layers}
        snap = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        if provenance is not None and not isinstance(provenance, Mapping):
            raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
        prov = {"round": None, "seed": None, "config": None}
        prov.update(provenance or {})
        ticket = cls(masks, snap, prov)
        ticket.provenance.setdefault("sparsity", ticket.sparsity)
        ticket.provenance.setdefault("lthgan_version", __version__)
        ticket.provenance.setdefault(
            "created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        )
        ticket.validate(model)
        return ticket

    # ---------------------------------------------------------------- properties

    @property
    def total(self) -> int:
        """Entries covered by the masks."""
        return sum(m.numel() for m in self.masks.values())

    @property
    def pruned(self) -> int:
        """Entries pruned by the masks."""
        return sum(m.numel() - int(m.count_nonzero()) for m in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Pruned share of the masked weights."""
        t = self.total
        return self.pruned / t if t else 0.0

    def __repr__(self) -> str:
        return (
            f"Ticket({len(self.masks)} masks, sparsity={self.sparsity:.4f}, "
            f"{len(self.state)} state tensors, round={self.provenance.get('round')!r})"
        )

    # ---------------------------------------------------------------- saving

    def _layout(self) -> tuple[list, list]:
        return (
            [[name, list(m.shape)] for name, m in self.masks.items()],
            list(self.state.keys()),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ticket to ``path`` (a safetensors file), atomically. Returns the path."""
        from safetensors.torch import save_file

        masks_layout, state_keys = self._layout()
        tensors: list[tuple[str, torch.Tensor]] = []
        for name, m in self.masks.items():
            tensors.append((_MASK_PREFIX + name, _pack(m)))
        for key, t in self.state.items():
            tensors.append((_STATE_PREFIX + key, t.detach().to("cpu").contiguous().clone()))
        body = {"masks": masks_layout, "state": state_keys}
        if self.channels is not None:
            body["channels"] = self.channels
        layout = json.dumps(body, separators=(",", ":"))
        prov = json.dumps(self.provenance, separators=(",", ":"), sort_keys=True)
        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "layout": layout,
            "provenance": prov,
            "sha256": _digest(layout, prov, tensors),
        }
        data = dict(tensors)
        return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Ticket":
        """Read a ticket written by :meth:`save`; every check failure raises :class:`TicketError`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ticket file at {str(path)!r}")
        where = f"ticket file {str(path)!r}"
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                names = list(f.keys())
                raw = {n: f.get_tensor(n) for n in names}
        except Exception as e:  # safetensors raises its own error types, plus OSError
            raise TicketError(f"{where} is truncated or corrupt (not a readable safetensors file): {e}") from e

        if metadata.get("format") != FORMAT:
            raise TicketError(f"{where} is not an lthgan ticket (format={metadata.get('format')!r})")
        version = metadata.get("format_version")
        if version not in {str(v) for v in READ_VERSIONS}:
            raise TicketError(
                f"{where} has format_version={version!r}; this lthgan ({__version__}) reads "
                f"versions {', '.join(map(str, READ_VERSIONS))}"
            )
        for field in ("layout", "provenance", "sha256"):
            if field not in metadata:
                raise TicketError(f"{where} is corrupt: metadata field {field!r} is missing")
        try:
            layout = json.loads(metadata["layout"])
            provenance = json.loads(metadata["provenance"])
            masks_layout = [(str(n), tuple(int(d) for d in shape)) for n, shape in layout["masks"]]
            state_keys = [str(k) for k in layout["state"]]
            channels = layout.get("channels")
            if not isinstance(provenance, dict):
                raise TypeError(f"provenance is a {type(provenance).__name__}, not a dict")
        except (ValueError, TypeError, KeyError) as e:
            raise TicketError(f"{where} is corrupt: unreadable layout or provenance ({e})") from e

        expected = [_MASK_PREFIX + n for n, _ in masks_layout] + [_STATE_PREFIX + k for k in state_keys]
        missing = [n for n in expected if n not in raw]
        if missing:
            raise TicketError(f"{where} is corrupt: tensor {missing[0]!r} is missing")
        extra = [n for n in names if n not in set(expected)]
        if extra:
            raise TicketError(f"{where} is corrupt: unexpected tensor {extra[0]!r}")
        tensors = [(n, raw[n]) for n in expected]
        if _digest(metadata["layout"], metadata["provenance"], tensors, int(version)) != metadata["sha256"]:
            raise TicketError(f"{where} is corrupt: its checksum does not match its contents")

        try:
            masks = {n: _unpack(raw[_MASK_PREFIX + n], shape, n) for n, shape in masks_layout}
        except TicketError as e:
            raise TicketError(f"{where} is corrupt: {e}") from e
        state = {k: raw[_STATE_PREFIX + k] for k in state_keys}
        try:
            return cls(masks, state, provenance, channels=channels)
        except TypeError as e:
            raise TicketError(f"{where} is corrupt: {e}") from e

    # ---------------------------------------------------------------- applying

    def _plan(self, model: nn.Module):
        """Check the ticket against ``model`` and pair up tensors; raises TicketError."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        layers = masked_modules(model)
        names = {n for n, _ in layers}
        mask_plan = []  # (layer name, module, raw weight, ticket mask)
        for name, module in layers:
            if name not in self.masks:
                raise TicketError(f"the ticket has no mask for the model's masked layer {name!r}")
            w = raw_weight(module)
            m = self.masks[name]
            if tuple(m.shape) != tuple(w.shape):
                raise TicketError(
                    f"mask of layer {name!r} has shape {list(m.shape)}, but the model's weight "
                    f"there has shape {list(w.shape)}"
                )
            mask_plan.append((name, module, w, m))
        for name in self.masks:
            if name not in names:
                raise TicketError(
                    f"the ticket has a mask for layer {name!r}, which is not a masked layer of the model"
                )

        sd = model.state_dict(keep_vars=True)
        mask_ids = {id(module.mask) for _, module in layers}
        model_state = {k: v for k, v in sd.items() if id(v) not in mask_ids}
        for key, t in model_state.items():
            if key not in self.state:
                raise TicketError(f"the ticket's state has no tensor {key!r}, which the model has")
            src = self.state[key]
            if src.shape != t.shape or src.dtype != t.dtype:
                raise TicketError(
                    f"state tensor {key!r} is {_describe(src)} in the ticket but {_describe(t)} in the model"
                )
        for key in self.state:
            if key not in model_state:
                raise TicketError(f"the ticket's state has tensor {key!r}, which the model does not have")
        return mask_plan, model_state

    def validate(self, model: nn.Module) -> None:
        """Raise :class:`TicketError` naming the first tensor that does not fit ``model``."""
        self._plan(model)

    def apply(self, model: nn.Module) -> nn.Module:
        """Set the masks and rewind ``model`` to the ticket's state, in place; all or nothing.

        Everything is checked before the first write, and the model is left untouched on
        any error (:class:`TicketError` naming the tensor): layer names, shapes and dtypes, a
        missing or extra layer or state key; tied tensors whose ticket values differ; model
        tensors that cannot be written in place: two of them sharing memory (two Parameters
        on one storage), an expanded view (stride 0) the ticket would change, an inference
        tensor, a non-strided layout. Then every mask buffer is set in place, the parameters
        are rewound by one ``lthgan.ops.rewind_`` call per device (masked weights to
        ``where(mask, state, 0)``, the others to a plain copy) and every buffer is copied in
        place. Parameters and buffers keep their identity, so optimizers built on the model
        still refer to the right tensors. Returns the model.
        """
        mask_plan, model_state = self._plan(model)
        writes = _WritePlan.stage(self, mask_plan, model_state)
        writes.run()
        return model


def _byte_range(t: torch.Tensor) -> tuple[int, int, int]:
    """(storage pointer, first byte, one past the last byte) that ``t`` can touch."""
    lo = hi = 0
    for size, stride in zip(t.shape, t.stride()):
        reach = (size - 1) * stride
        lo, hi = (lo + reach, hi) if reach < 0 else (lo, hi + reach)
    start = t.storage_offset() * t.element_size()
    return (t.untyped_storage().data_ptr(), start + lo * t.element_size(),
            start + (hi + 1) * t.element_size())


def _check_writable(key: str, t: torch.Tensor, src: torch.Tensor) -> bool:
    """Whether ``t`` needs writing (False: an expanded view already equal to ``src``);
    raises TicketError where it cannot be written in place."""
    if t.layout != torch.strided:
        raise TicketError(f"the model's tensor {key!r} has layout {t.layout}; apply writes strided "
                          "tensors only")
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise TicketError(f"the model's tensor {key!r} is an inference tensor (made under "
                          "torch.inference_mode), which cannot be written outside it")
    if any(st == 0 and n > 1 for n, st in zip(t.shape, t.stride())):
        if torch.equal(t, src):
            return False
        raise TicketError(
            f"the model's tensor {key!r} is an expanded view (stride {list(t.stride())}), whose "
            "entries share memory, and the ticket's values for it differ; apply cannot write it")
    return True


class _WritePlan:
    """Every write of :meth:`Ticket.apply`, staged and checked before the first one runs."""

    def __init__(self):
        self.masks: list[tuple[nn.Module, torch.Tensor]] = []
        self.params: dict[torch.device, tuple[list, list, list]] = {}
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.targets: list[tuple[str, torch.Tensor]] = []  # every tensor written, by key

    @classmethod
    def stage(cls, ticket: "Ticket", mask_plan, model_state) -> "_WritePlan":
        plan = cls()
        # sources are moved to their target's device before anything is written
        masks_dev = {id(w): m.to(w.device) for _, _, w, m in mask_plan}
        for name, module, w, _ in mask_plan:
            plan.masks.append((module, masks_dev[id(w)]))
            plan.targets.append((_mask_key(name), module.mask))
        first_key: dict[int, str] = {}
        for key, t in model_state.items():
            src = ticket.state[key]
            if id(t) in first_key:  # tied tensors: written once, so their values must agree
                other = first_key[id(t)]
                if not torch.equal(src, ticket.state[other]):
                    raise TicketError(f"state tensors {other!r} and {key!r} are one tensor in the "
                                      "model (tied), but the ticket holds different values for them")
                continue
            first_key[id(t)] = key
            src = src.to(t.device)
            if not _check_writable(key, t, src):
                continue
            plan.targets.append((key, t))
            if isinstance(t, nn.Parameter):
                ps, ss, ms = plan.params.setdefault(t.device, ([], [], []))
                ps.append(t)
                ss.append(src)
                ms.append(masks_dev.get(id(t)))
            else:
                plan.buffers.append((t, src))
        for _, module, w, _ in mask_plan:
            if id(w) not in first_key:
                raise TicketError(
                    f"the raw weight of a masked {type(module).__name__} is not a parameter in the "
                    "model's state_dict, so it cannot be rewound"
                )
        plan._check_no_shared_memory()
        return plan

    def _check_no_shared_memory(self) -> None:
        spans = sorted((_byte_range(t), key) for key, t in self.targets
                       if t.numel() and t.device.type != "meta")
        for (a, key_a), (b, key_b) in zip(spans, spans[1:]):
            if a[0] == b[0] and b[1] < a[2]:
                raise TicketError(
                    f"the model's tensors {key_a!r} and {key_b!r} share memory, so writing one "
                    "would change the other; apply needs every tensor it writes to have its own")

    def run(self) -> None:
        with torch.no_grad():
            for module, m in self.masks:
                module.set_mask(m, apply=False)
            for ps, ss, ms in self.params.values():
                ops.rewind_(ps, ss, ms)
            for t, src in self.buffers:
                t.copy_(src)

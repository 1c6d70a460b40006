"""What ``lthgan profile`` measured (:class:`ProfileResult`) and the table it prints."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch


@dataclass
class ProfileResult:
    """Everything ``lthgan profile`` measured; :meth:`to_dict` is what ``--json`` prints."""

    target: str
    device: str
    preset: str | None
    amp: str | None
    layer_types: str
    steps: int
    warmup: int
    sparsity_target: float
    sparsity_reached: float
    prunable_weights: int
    dense_step_ms: list[float]
    masked_step_ms: list[float]
    ops_forward: dict[str, float]
    ops_backward: dict[str, float]
    ops_by_name: dict[str, dict[str, float]]
    one_off_ms: dict[str, float]
    time_source: str
    trace: str | None = None

    @property
    def dense_ms(self) -> float:
        return statistics.median(self.dense_step_ms)

    @property
    def masked_ms(self) -> float:
        return statistics.median(self.masked_step_ms)

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.masked_ms / self.dense_ms - 1.0)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "device": self.device,
            "preset": self.preset,
            "amp": self.amp,
            "layer_types": self.layer_types,
            "torch": torch.__version__,
            "steps": self.steps,
            "warmup": self.warmup,
            "sparsity": {"target": self.sparsity_target, "reached": self.sparsity_reached,
                         "prunable_weights": self.prunable_weights},
            "step_ms": {
                "dense": {"median": self.dense_ms, "min": min(self.dense_step_ms),
                          "all": self.dense_step_ms},
                "masked": {"median": self.masked_ms, "min": min(self.masked_step_ms),
                           "all": self.masked_step_ms},
            },
            "overhead_pct": self.overhead_pct,
            "lthgan_ops_ms_per_step": {"forward": self.ops_forward, "backward": self.ops_backward,
                                       "time_source": self.time_source},
            "lthgan_ops_by_name": self.ops_by_name,
            "one_off_ms": self.one_off_ms,
            "trace": self.trace,
        }


def _fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.1f} ms"
    if v >= 1:
        return f"{v:.2f} ms"
    return f"{v * 1e3:.1f} µs"


def format_table(r: ProfileResult) -> str:
    """The human-readable table ``lthgan profile`` prints."""
    head = (f"lthgan profile: {r.target}" + (f" (preset {r.preset})" if r.preset else "")
            + f" on {r.device}" + (f", amp {r.amp}" if r.amp else "")
            + f"; sparsity {r.sparsity_reached:.4f} of {r.prunable_weights:,} prunable "
            f"{r.layer_types} weights (target {r.sparsity_target:g}); "
            f"{r.steps} timed steps after {r.warmup} warm-up")
    fwd, bwd = r.ops_forward, r.ops_backward
    src = "GPU" if r.time_source == "cuda" else "CPU"
    rows = [
        ("time per step, dense (median)", _fmt_ms(r.dense_ms)),
        ("time per step, masked (median)", _fmt_ms(r.masked_ms)),
        ("overhead, masked vs dense", f"{r.overhead_pct:+.2f} %"),
        (f"lthgan ops, forward ({src} time/step)",
         f"{_fmt_ms(fwd['total'])} in {fwd['calls']:.0f} calls; masking {_fmt_ms(fwd['mask'])}"),
        (f"lthgan ops, backward ({src} time/step)",
         f"{_fmt_ms(bwd['total'])} in {bwd['calls']:.0f} calls; masking {_fmt_ms(bwd['mask'])}"),
        ("one-off: prune (global magnitude)", _fmt_ms(r.one_off_ms["prune"])),
        ("one-off: rewind (rewind_)", _fmt_ms(r.one_off_ms["rewind"])),
        ("one-off: reset optimizer", _fmt_ms(r.one_off_ms["reset_optimizer"])),
    ]
    if r.trace:
        rows.append(("Chrome trace (masked steps)", r.trace))
    w = max(len(k) for k, _ in rows)
    lines = [head, "-" * min(len(head), 100)]
    lines += [f"{k.ljust(w)}  {v}" for k, v in rows]
    if r.ops_by_name:
        lines.append("")
        lines.append("per op (per step)".ljust(w) + "  calls      total    masking")
        for name, d in sorted(r.ops_by_name.items()):
            lines.append(f"{('  ' + name).ljust(w)}  {d['calls']:5.0f} {_fmt_ms(d['total']):>10} "
                         f"{_fmt_ms(d['mask']):>10}")
    return "\n".join(lines)

"""Tables and plots of finished (or partly finished) searches.

A run directory (see :mod:`lthgan.search.rundir`) holds one finished level per ``dense/`` or
``round-NN/`` folder with a ``DONE`` marker and a ``metrics.json``. This module reads them and
writes ``summary.md``, ``summary.csv`` and ``fid_vs_sparsity.png``; :func:`compare` does the
same for several runs (``lthgan report RUN_DIR [RUN_DIR ...]``), for instance IMP beside random
pruning. Runs are only compared when their FIDs are comparable: the same GAN, data and feature
extractor.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .._io import atomic_write, atomic_write_text
from .rundir import RunDir, check_writable

__all__ = ["ReportError", "Run", "load_run", "load_runs", "check_comparable", "markdown_table",
           "csv_text", "plot", "summary_text", "write_summary", "compare"]


class ReportError(ValueError):
    """Runs that cannot be reported together (different extractors, GANs or data)."""


@dataclass
class Run:
    """A search's directory, its ``config.json`` and its finished levels' metrics."""

    path: Path
    config: dict
    levels: list[dict]
    label: str
    baselines: list["Run"] = field(default_factory=list)

    @property
    def search(self) -> dict:
        return self.config.get("search", {})

    @property
    def gan(self) -> str:
        return self.search.get("gan", "?")

    @property
    def method(self) -> str:
        return self.search.get("method", "?")

    @property
    def data(self) -> str:
        return self.config.get("resolved", {}).get("data", "?")

    @property
    def dense(self) -> dict | None:
        return next((l for l in self.levels if l.get("level") == 0), None)


def load_run(run_dir, label: str | None = None, with_baselines: bool = True, verify: bool = False) -> Run:
    """Read a run directory: its config and the metrics of every finished level (with
    ``verify``, each finished level's files are checked against its DONE manifest first)."""
    rd = RunDir(run_dir)
    config = rd.read_config()
    if verify:
        rd.verify()
    levels = sorted((lvl.read_metrics() for lvl in rd.finished()), key=lambda m: m["level"])
    run = Run(rd.path, config, levels, label or config["search"].get("method", rd.path.name))
    if with_baselines:
        run.baselines = [load_run(b.path, label=b.path.name, with_baselines=False, verify=verify)
                         for b in rd.baselines()]
    return run


def load_runs(paths: Sequence, verify: bool = False) -> list[Run]:
    """Runs of ``paths`` and their baselines, flattened, checked to be comparable."""
    runs: list[Run] = []
    for p in paths:
        r = load_run(p, verify=verify)
        runs.append(r)
        runs.extend(r.baselines)
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):  # disambiguate equal labels with the folder name
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path.name})"
    check_comparable(runs)
    return runs


def _extractor_key(level: dict) -> str:
    """The extractor of a level's metrics, with its weights' digest and FID layer when recorded
    (at the top of the row, or in its per-direction results)."""
    src = level
    if level.get("extractor_weights") is None:
        src = next(iter((level.get("directions") or {}).values()), level)
    key = str(level.get("extractor"))
    if src.get("extractor_weights") is not None:
        key += f" (weights {src['extractor_weights'][:19]}, layer {src.get('feature_layer_fid')})"
    return key


def check_comparable(runs: Sequence[Run]) -> None:
    """Raise :class:`ReportError` unless the runs' FIDs come from the same extractor (same weights
    and layer) on the same GAN and data."""
    extractors: dict[str, list[str]] = {}
    for r in runs:
        for lvl in r.levels:
            extractors.setdefault(_extractor_key(lvl), []).append(f"{r.path}/{lvl.get('name')}")
    if len(extractors) > 1:
        desc = "; ".join(f"{e}: {', '.join(v[:2])}{' ...' if len(v) > 2 else ''}" for e, v in extractors.items())
        raise ReportError(f"the runs use different feature extractors ({desc}); their FIDs are not "
                          "comparable")
    for attr in ("gan", "data"):
        vals = {getattr(r, attr) for r in runs}
        if len(vals) > 1:
            desc = ", ".join(f"{r.path}: {getattr(r, attr)}" for r in runs)
            raise ReportError(f"the runs have different {attr} ({desc}); their FIDs are not comparable")


# --------------------------------------------------------------------------- formatting


def _f(v, fmt: str = ".3f") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _pm(m, s, fmt) -> str:
    if m is None:
        return ""
    return f"{format(m, fmt)} ± {format(s, fmt)}" if s is not None else format(m, fmt)


def _time(s) -> str:
    if s is None:
        return ""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    mi, sec = divmod(rem, 60)
    return f"{h}h{mi:02d}m" if h else f"{mi}m{sec:02d}s"


def _verdict(lvl: dict) -> str:
    if lvl.get("level") == 0:
        return "dense"
    v = lvl.get("matching")
    return "" if v is None else ("yes" if v else "no")


def _directions(runs: Sequence[Run]) -> list[str]:
    dirs: list[str] = []
    for r in runs:
        for lvl in r.levels:
            for d in (lvl.get("directions") or {}):
                if d not in dirs:
                    dirs.append(d)
    return dirs if len(dirs) > 1 else []


def _rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[dict]]:
    """Header, formatted cells and raw records of every finished level of ``runs``."""
    dirs = _directions(runs)
    has_d = any((lvl.get("d_sparsity") or 0) > 0 for r in runs for lvl in r.levels)
    has_label = any(lvl.get("label_kept") is not None for r in runs for lvl in r.levels)
    multi = len(runs) > 1
    head = (["run"] if multi else []) + ["level", "target", "sparsity", "sparsity (all params)"]
    head += ["D sparsity"] if has_d else []
    head += [f"FID {d}" for d in dirs] + (["FID (mean)"] if dirs else ["FID"])
    head += ["IS", "KID"] + (["label kept"] if has_label else []) + ["matching", "time"]
    cells, records = [], []
    for r in runs:
        for lvl in r.levels:
            row = ([r.label] if multi else []) + [
                lvl.get("name", ""), f"{100 * (lvl.get('sparsity_target') or 0):.2f}%",
                f"{100 * lvl.get('sparsity', 0):.2f}%",
                f"{100 * lvl.get('sparsity_overall', 0):.2f}%"]
            if has_d:
                row.append(f"{100 * (lvl.get('d_sparsity') or 0):.2f}%")
            per = lvl.get("directions") or {}
            row += [_f((per.get(d) or {}).get("fid")) for d in dirs]
            row.append(_f(lvl.get("fid")))
            row.append(_pm(lvl.get("is_mean"), lvl.get("is_std"), ".3f"))
            row.append(_pm(lvl.get("kid_mean"), lvl.get("kid_std"), ".4f"))
            if has_label:
                lk = lvl.get("label_kept")
                row.append("" if lk is None else f"{100 * lk:.1f}%")
            row += [_verdict(lvl), _time(lvl.get("time_s"))]
            cells.append(row)
            rec = {"run": r.label, "run_dir": str(r.path), "method": lvl.get("method"),
                   "level": lvl.get("level"), "name": lvl.get("name"),
                   "sparsity_target": lvl.get("sparsity_target"), "sparsity": lvl.get("sparsity"),
                   "sparsity_overall": lvl.get("sparsity_overall"), "d_sparsity": lvl.get("d_sparsity"),
                   "fid": lvl.get("fid")}
            for d in dirs:
                rec[f"fid_{d}"] = (per.get(d) or {}).get("fid")
            rec.update({k: lvl.get(k) for k in ("is_mean", "is_std", "kid_mean", "kid_std", "label_kept",
                                                "matching", "dense_fid", "tolerance", "extractor",
                                                "train_time_s", "eval_time_s", "time_s")})
            records.append(rec)
    return head, cells, records


def markdown_table(runs: Sequence[Run]) -> str:
    head, cells, _ = _rows(runs)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    return "\n".join(out)


def csv_text(runs: Sequence[Run]) -> str:
    _, _, records = _rows(runs)
    buf = io.StringIO()
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for rec in records:
        w.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in keys})
    return buf.getvalue()


def summary_text(runs: Sequence[Run]) -> str:
    """Markdown: a title, how to read the table, and the table."""
    main = runs[0]
    s = main.search
    res = main.config.get("resolved", {})
    lines = [f"# lthgan search: {main.gan} on {main.data}", ""]
    what = ", ".join(f"{r.label}" for r in runs)
    lines.append(f"Runs: {what}. Preset {s.get('preset')}, seed {s.get('seed')}, "
                 f"prune rate {s.get('prune_rate')}, target sparsity {res.get('target_sparsity')}, "
                 f"layers {s.get('layers')}, prune D: {'yes' if s.get('prune_d') else 'no'}, "
                 f"D init: {res.get('d_init')}, rewind: {s.get('rewind')}"
                 f"{', KD from the dense D' if s.get('kd_d') else ''}.")
    lines.append("")
    ext = next((l.get("extractor") for r in runs for l in r.levels), res.get("extractor"))
    dense = main.dense
    tol = s.get("tolerance", 0.0)
    lines.append(f"- **Sparsity**: share of pruned weights among the generator's prunable weights "
                 f"({s.get('layers')} layers), as reached (target: the schedule's value, "
                 "1 - 0.8^r for IMP at rate 0.2, the last round clipped to the target), and among "
                 "all its parameters.")
    dense_txt = f"{dense['fid']:.3f}" if dense and dense.get("fid") is not None else "n/a"
    lines.append(f"- **Matching**: the round's final-checkpoint FID ≤ the dense FID ({dense_txt}) + "
                 f"tolerance ({tol:g}). The final checkpoint of each round is compared; no best-of "
                 "selection is made.")
    dirs = _directions(runs)
    if dirs:
        lines.append(f"- **Directions**: FID of each direction ({', '.join(dirs)}: the source domain "
                     "translated into the target domain and judged against the target's images); "
                     "the verdict uses their mean.")
    lines.append(f"- **Metrics**: FID, IS and KID with the `{ext}` feature extractor"
                 + ("; label kept: share of translated digits classified as their source digit."
                    if any(l.get("label_kept") is not None for r in runs for l in r.levels) else "."))
    n = sorted({json.dumps(l.get("n_fake")) for r in runs for l in r.levels})
    if len(n) > 1:
        lines.append(f"- Note: the runs were evaluated on different numbers of samples ({', '.join(n)}).")
    lines += ["", markdown_table(runs), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def plot(runs: Sequence[Run], path) -> Path:
    """FID against sparsity: a dense line, one series per run, matching rounds filled."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    denses: list[float] = []
    xmax = 0.0
    for i, r in enumerate(runs):
        c = colors[i % len(colors)]
        d = r.dense
        if d is not None and d.get("fid") is not None and not any(abs(d["fid"] - v) < 1e-9 for v in denses):
            denses.append(d["fid"])
            ax.axhline(d["fid"], color="k" if len(denses) == 1 else c, ls="--", lw=1,
                       label=f"dense (FID {d['fid']:.2f})" if len(denses) == 1 else f"dense, {r.label}")
            tol = r.search.get("tolerance", 0.0) or 0.0
            if tol > 0 and len(denses) == 1:
                ax.axhspan(d["fid"], d["fid"] + tol, color="k", alpha=0.07, lw=0,
                           label=f"dense + tolerance {tol:g}")
        pts = [l for l in r.levels if l.get("level", 0) > 0 and l.get("fid") is not None]
        if not pts:
            continue
        xs = [100 * l["sparsity"] for l in pts]
        ys = [l["fid"] for l in pts]
        xmax = max(xmax, *xs)
        ax.plot(xs, ys, "-o", color=c, lw=1.2, ms=6, label=r.label, zorder=2)
        miss = [(x, y) for x, y, l in zip(xs, ys, pts) if l.get("matching") is not True]
        if miss:  # hollow markers: not matching
            ax.plot([x for x, _ in miss], [y for _, y in miss], "o", ls="", ms=6, color=c,
                    markerfacecolor="white", zorder=3)
    main = runs[0]
    ax.set_xlabel("sparsity of the generator's prunable weights (%)")
    dirs = _directions(runs)
    ylabel = f"FID (mean of {' and '.join(dirs)})" if dirs else "FID"
    ext = next((l.get("extractor") for r in runs for l in r.levels), None)
    ax.set_ylabel(f"{ylabel}, {ext} features" if ext else ylabel)
    ax.set_title(f"{main.gan} on {main.data}: FID of the final checkpoint vs sparsity")
    ax.set_xlim(0, max(10.0, math.ceil(xmax / 10) * 10 + 2))
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="", color="0.4", label="filled: matching"),
                Line2D([], [], marker="o", ls="", color="0.4", markerfacecolor="white",
                       label="hollow: not matching")]
    if len(handles) > 6:
        fig.set_size_inches(10, 4.5)
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- writers


def write_summary(run_dir) -> list[Run]:
    """``summary.md``, ``summary.csv`` and ``fid_vs_sparsity.png`` of a run and its baselines."""
    rd = RunDir(run_dir)
    main = load_run(rd.path)
    runs = [main] + main.baselines
    try:
        check_comparable(runs)
    except ReportError:
        runs = [main]  # a baseline that cannot be compared stays out of the parent's summary
    atomic_write_text(rd.summary_md, summary_text(runs))
    atomic_write_text(rd.summary_csv, csv_text(runs))
    plot(runs, rd.plot)
    return runs


def compare(paths: Sequence, out=None) -> tuple[str, Path]:
    """Report several runs together: returns the markdown and the folder written to (``out``,
    default the first run): ``report.md``, ``report.csv``, ``fid_vs_sparsity.png``. Every
    finished level's files are verified first."""
    if not paths:
        raise ReportError("give at least one run directory")
    runs = load_runs(paths, verify=True)
    if not any(r.levels for r in runs):
        raise ReportError("none of the runs has a finished level yet")
    out = Path(out) if out is not None else Path(paths[0])
    check_writable(out)
    text = summary_text(runs)
    atomic_write_text(out / RunDir.REPORT_MD, text)
    atomic_write_text(out / RunDir.REPORT_CSV, csv_text(runs))
    plot(runs, out / RunDir.PLOT)
    return text, out

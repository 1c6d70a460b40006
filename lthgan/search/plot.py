"""``fid_vs_sparsity.png``: FID of the final checkpoint against sparsity, one panel per
direction (CycleGAN: A2B and B2A, each judged on its own), one series per run, the dense FID
as a dashed line, matching levels filled and the others hollow, and error bars (± one standard
deviation over the seeds) under ``--seeds``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .._io import atomic_write

__all__ = ["plot", "plot_macs", "macs_series"]


def _point(lvl: dict, direction: str | None) -> tuple[float | None, float | None, bool | None]:
    """(FID, its sd over seeds, matching) of a level in ``direction`` (None: the headline)."""
    if direction is None:
        return lvl.get("fid"), lvl.get("fid_sd"), lvl.get("matching")
    d = (lvl.get("directions") or {}).get(direction) or {}
    return d.get("fid"), d.get("fid_sd"), (lvl.get("matching_directions") or {}).get(direction)


def _panel(ax, runs, direction: str | None, colors) -> float:
    xmax = 0.0
    denses: list[float] = []
    for i, r in enumerate(runs):
        c = colors[i % len(colors)]
        dense = _point(r.dense, direction)[0] if r.dense else None
        if dense is not None and not any(abs(dense - v) < 1e-9 for v in denses):
            first = not denses
            denses.append(dense)
            ax.axhline(dense, color="k" if first else c, ls="--", lw=1,
                       label=f"dense (FID {dense:.2f})" if first else f"dense, {r.label}")
        pts = [(100 * lvl["sparsity"], *_point(lvl, direction)) for lvl in r.levels
               if lvl.get("level", 0) > 0 and _point(lvl, direction)[0] is not None]
        if not pts:
            continue
        xs, ys, sds, ok = zip(*pts)
        xmax = max(xmax, *xs)
        if any(s is not None for s in sds):
            ax.errorbar(xs, ys, yerr=[s or 0.0 for s in sds], color=c, lw=1.2, capsize=3, zorder=2,
                        label=r.label, fmt="-o", ms=6)
        else:
            ax.plot(xs, ys, "-o", color=c, lw=1.2, ms=6, label=r.label, zorder=2)
        miss = [(x, y) for x, y, m in zip(xs, ys, ok) if m is not True]
        if miss:  # hollow markers: not matching
            ax.plot(*zip(*miss), "o", ls="", ms=6, color=c, markerfacecolor="white", zorder=3)
    ax.set_xlim(0, max(10.0, math.ceil(xmax / 10) * 10 + 2))
    ax.grid(alpha=0.3)
    return xmax


def _figure(runs: Sequence, extra_width: float):
    """pyplot, the panels (one per direction; ``[None]`` for one direction), the figure, its
    axes and the colour cycle."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dirs: list[str] = []
    for r in runs:
        for lvl in r.levels:
            dirs += [d for d in (lvl.get("directions") or {}) if d not in dirs]
    panels = dirs if len(dirs) > 1 else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels) + extra_width, 4.5), dpi=120,
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    return plt, panels, fig, axes, colors


def plot(runs: Sequence, path) -> Path:
    """Write the plot of ``runs`` (:class:`lthgan.search.report.Run`) to ``path``."""
    from matplotlib.lines import Line2D

    plt, panels, fig, axes, colors = _figure(runs, extra_width=0)
    main = runs[0]
    ext = next((lvl.get("extractor") for r in runs for lvl in r.levels), None)
    seeds = max((r.seeds for r in runs), default=1)
    for ax, d in zip(axes[0], panels):
        _panel(ax, runs, d, colors)
        ax.set_xlabel("sparsity of the generator's prunable weights (%)")
        ylabel = f"FID {d}" if d else "FID"
        ax.set_ylabel(f"{ylabel}, {ext} features" if ext else ylabel)
        what = f"{d}: " if d else ""
        ax.set_title(f"{main.gan} on {main.data}: {what}final-checkpoint FID"
                     + (f" (mean ± sd, {seeds} seeds)" if seeds > 1 else ""), fontsize=10)
    handles, _ = axes[0][-1].get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="", color="0.4", label="filled: matching"),
                Line2D([], [], marker="o", ls="", color="0.4", markerfacecolor="white", label="hollow: not matching")]
    if len(handles) > 6:
        fig.set_size_inches(7 * len(panels) + 3, 4.5)
        axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def macs_series(runs: Sequence, direction: str | None) -> list[tuple[int, bool, list[tuple]]]:
    """The points of :func:`plot_macs` in one panel: ``(run index, structural, [(MACs in
    millions, FID, sd, matching, is dense)])`` per run with any. Structural levels sit at their
    own MACs, unstructured ones at the dense MACs (their level 0 left out). A dense level drawn
    already (a baseline reuses its parent's) is not drawn again."""
    dense_macs = next((r.dense.get("macs") for r in runs if r.dense and r.dense.get("macs")), None)
    denses: list[float] = []
    out = []
    for i, r in enumerate(runs):
        structural = r.search.get("structure") == "channel"
        pts = []
        for lvl in r.levels:
            fid, sd, ok = _point(lvl, direction)
            macs = lvl.get("macs") if structural else dense_macs
            is_dense = lvl.get("level", 0) == 0
            if fid is None or macs is None or (is_dense and not structural):
                continue
            if is_dense:
                if any(abs(fid - v) < 1e-9 for v in denses):
                    continue
                denses.append(fid)
            pts.append((macs / 1e6, fid, sd, ok, is_dense))
        if pts:
            out.append((i, structural, sorted(pts)))
    return out


def plot_macs(runs: Sequence, path) -> Path:
    """``fid_vs_macs.png``: FID (each direction's panel) against the generators' MACs per
    image (see :func:`macs_series`): unstructured levels drawn with an x marker, dense as a
    star, matching levels filled."""
    from matplotlib.ticker import LogLocator, NullFormatter, FuncFormatter

    plt, panels, fig, axes, colors = _figure(runs, extra_width=2)
    for ax, d in zip(axes[0], panels):
        for i, structural, pts in macs_series(runs, d):
            r, c = runs[i], colors[i % len(colors)]
            xs, ys, sds, oks, is_dense = zip(*pts)
            label = r.label + ("" if structural else " (unstructured: dense MACs)")
            marker = "o" if structural else "x"
            ax.errorbar(xs, ys, yerr=[s or 0.0 for s in sds], color=c, fmt=("-" if structural else "") + marker,
                        ms=6, capsize=3, lw=1.2, label=label)
            hollow = [(x, y) for x, y, ok, dn in zip(xs, ys, oks, is_dense) if ok is not True and not dn]
            if hollow and structural:
                ax.plot(*zip(*hollow), "o", ls="", ms=6, color=c, markerfacecolor="white", zorder=3)
            dn = [(x, y) for x, y, isd in zip(xs, ys, is_dense) if isd]
            if dn:
                ax.plot(*zip(*dn), "*", ms=12, color=c, zorder=4)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("generator MACs per image (millions, log scale)")
        ax.set_ylabel(f"FID {d}" if d else "FID")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"{runs[0].gan} on {runs[0].data}: FID against compute" + (f" ({d})" if d else ""),
                     fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)

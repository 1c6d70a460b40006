"""Tables of finished (or partly finished) searches.

A run directory (see :mod:`lthgan.search.rundir`) holds one finished level per ``dense/`` or
``round-NN/`` folder with a ``DONE`` marker and a ``metrics.json``; under ``--seeds`` one such
run per seed, reported here as one row per level with the mean ± standard deviation over the
seeds and the verdict over them (:mod:`lthgan.search.verdict`). This module writes
``summary.md``, ``summary.csv`` (``summary_seeds.csv``: every seed's rows) and, through
:mod:`lthgan.search.plot`, ``fid_vs_sparsity.png``; :func:`compare` does the same for several
runs (``lthgan report RUN_DIR [RUN_DIR ...]``), for instance IMP beside random pruning. Runs are
only compared when their FIDs are comparable: the same GAN, data and feature extractor.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .._io import atomic_write_text
from .evaluation import fid_size_note
from .plot import plot, plot_macs
from .rundir import RunDir, check_writable
from .verdict import level_row, rule_text

__all__ = ["ReportError", "Run", "load_run", "load_runs", "check_comparable", "markdown_table",
           "csv_text", "plot", "summary_text", "write_summary", "compare", "largest_matching"]


class ReportError(ValueError):
    """Runs that cannot be reported together (different extractors, GANs or data)."""


@dataclass
class Run:
    """A search's directory, its ``config.json`` and its finished levels' metrics (under
    ``--seeds``, per level over the seeds; ``seed_runs`` then holds each seed's run)."""

    path: Path
    config: dict
    levels: list[dict]
    label: str
    baselines: list["Run"] = field(default_factory=list)
    seed_runs: list["Run"] = field(default_factory=list)

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
    def seeds(self) -> int:
        return int(self.search.get("seeds", 1))

    @property
    def dense(self) -> dict | None:
        return next((lvl for lvl in self.levels if lvl.get("level") == 0), None)


def load_run(run_dir, label: str | None = None, with_baselines: bool = True, verify: bool = False) -> Run:
    """Read a run directory: its config and the metrics of every finished level (with
    ``verify``, each finished level's files are checked against its DONE manifest first).
    Under ``--seeds``, a level is reported once every seed has finished it."""
    rd = RunDir(run_dir)
    config = rd.read_config()
    if verify:
        rd.verify()
    label = label or config["search"].get("method", rd.path.name)
    if rd.seeds > 1:
        seeds = [load_run(s.path, label=f"{label} {s.path.name}", with_baselines=False)
                 for s in rd.seed_runs()]
        levels = _seed_levels(seeds, float(config["search"].get("tolerance", 0.0)))
        run = Run(rd.path, config, levels, label, seed_runs=seeds)
    else:
        levels = sorted((lvl.read_metrics() for lvl in rd.finished()), key=lambda m: m["level"])
        run = Run(rd.path, config, levels, label)
    if with_baselines:
        run.baselines = [load_run(b.path, label=b.path.name, with_baselines=False, verify=verify)
                         for b in rd.baselines()]
    return run


def _seed_levels(seeds: Sequence[Run], tolerance: float) -> list[dict]:
    """One row per level finished by every seed."""
    by = [{m["level"]: m for m in s.levels} for s in seeds]
    common = sorted(set.intersection(*(set(b) for b in by))) if by else []
    dense = [b[0] for b in by] if 0 in common else None
    return [level_row([b[i] for b in by], dense, tolerance) for i in common]


def load_runs(paths: Sequence, verify: bool = False) -> list[Run]:
    """Runs of ``paths`` and their baselines, flattened, checked to be comparable."""
    runs: list[Run] = []
    for p in paths:
        r = load_run(p, verify=verify)
        runs.append(r)
        runs.extend(r.baselines)
    labels = [r.label for r in runs]
    for r in runs:  # disambiguate equal labels with the folder name
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
    per = lvl.get("matching_directions") or {}
    if lvl.get("matching") is None:
        return ""
    if lvl["matching"] or len(per) < 2 or not any(per.values()):
        return "yes" if lvl["matching"] else "no"
    return " ".join(d for d, v in per.items() if v) + " only"


def _images(lvl: dict) -> str:
    """Generated (or translated) / reference images of an evaluation, the smallest direction's."""
    nf, nr = lvl.get("n_fake"), lvl.get("n_real")
    if isinstance(nf, dict):
        nf, nr = min(nf.values()), min(nr.values())
    return "" if nf is None else f"{nf}/{nr}"


def _directions(runs: Sequence[Run]) -> list[str]:
    dirs: list[str] = []
    for r in runs:
        for lvl in r.levels:
            dirs += [d for d in (lvl.get("directions") or {}) if d not in dirs]
    return dirs if len(dirs) > 1 else []


def _si(v) -> str:
    if v is None:
        return ""
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= f:
            return f"{v / f:.3g}{unit}"
    return f"{v:.3g}"


def _cost_cells(r: Run, lvl: dict) -> list[str]:
    """Parameters, MACs per image (and the reduction against the run's dense level) and CPU
    latency at batch 1 / 64 of the evaluated generators (structural searches)."""
    dense = (r.dense or {}).get("macs")
    macs = lvl.get("macs")
    red = f"{dense / macs:.2f}x" if dense and macs else ""
    b1, b64 = lvl.get("latency_cpu_b1_ms"), lvl.get("latency_cpu_b64_ms")
    lat = f"{b1:.2f} / {b64:.1f}" if b1 is not None and b64 is not None else ""
    return [_si(lvl.get("params")), _si(macs), red, lat]


def _cells(r: Run, lvl: dict, dirs, has_d, has_label, has_seeds, multi, has_cost=False) -> list[str]:
    row = ([r.label] if multi else []) + [
        lvl.get("name", ""), f"{100 * (lvl.get('sparsity_target') or 0):.2f}%",
        f"{100 * lvl.get('sparsity', 0):.2f}%", f"{100 * lvl.get('sparsity_overall', 0):.2f}%"]
    if has_d:
        row.append(f"{100 * (lvl.get('d_sparsity') or 0):.2f}%")
    if has_seeds:
        row.append(str(lvl.get("seeds", 1)))
    per = lvl.get("directions") or {}
    row += [_pm((per.get(d) or {}).get("fid"), (per.get(d) or {}).get("fid_sd"), ".3f") for d in dirs]
    row.append(_pm(lvl.get("fid"), lvl.get("fid_sd"), ".3f"))
    row.append(_pm(lvl.get("is_mean"), lvl.get("is_std"), ".3f"))
    row.append(_pm(lvl.get("kid_mean"), lvl.get("kid_std"), ".4f"))
    if has_label:
        lk, sd = lvl.get("label_kept"), lvl.get("label_kept_sd")
        row.append("" if lk is None else f"{100 * lk:.1f}%" + (f" ± {100 * sd:.1f}" if sd is not None else ""))
    row += _cost_cells(r, lvl) if has_cost else []
    row += [_images(lvl), _verdict(lvl)]
    if has_seeds:
        row.append(" / ".join(f"{p:.3f}" for p in (lvl.get("p_values") or {}).values()))
    return row + [_time(lvl.get("time_s"))]


def _record(r: Run, lvl: dict, dirs) -> dict:
    per = lvl.get("directions") or {}
    rec = {"run": r.label, "run_dir": str(r.path), "method": lvl.get("method"), "level": lvl.get("level"),
           "name": lvl.get("name"), "seeds": lvl.get("seeds", 1), "seed": lvl.get("seed"),
           "sparsity_target": lvl.get("sparsity_target"), "sparsity": lvl.get("sparsity"),
           "sparsity_overall": lvl.get("sparsity_overall"), "d_sparsity": lvl.get("d_sparsity"),
           "fid": lvl.get("fid"), "fid_sd": lvl.get("fid_sd")}
    for d in dirs:
        rec[f"fid_{d}"] = (per.get(d) or {}).get("fid")
        rec[f"fid_{d}_sd"] = (per.get(d) or {}).get("fid_sd")
        rec[f"matching_{d}"] = (lvl.get("matching_directions") or {}).get(d)
        rec[f"p_{d}"] = (lvl.get("p_values") or {}).get(d)
    rec.update({k: lvl.get(k) for k in ("is_mean", "is_std", "kid_mean", "kid_std", "label_kept",
                                        "label_kept_sd", "matching", "dense_fid", "tolerance", "extractor",
                                        "reference", "params", "macs", "latency_cpu_b1_ms",
                                        "latency_cpu_b64_ms", "latency_cuda_b1_ms", "latency_cuda_b64_ms",
                                        "train_time_s", "eval_time_s", "time_s")})
    nf, nr = lvl.get("n_fake"), lvl.get("n_real")
    rec["n_fake"], rec["n_real"] = (json.dumps(nf), json.dumps(nr)) if isinstance(nf, dict) else (nf, nr)
    if not dirs:
        rec["p"] = (lvl.get("p_values") or {}).get("G")
    return rec


def _rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[dict]]:
    """Header, formatted cells and raw records of every finished level of ``runs``."""
    dirs = _directions(runs)
    has_d = any((lvl.get("d_sparsity") or 0) > 0 for r in runs for lvl in r.levels)
    has_label = any(lvl.get("label_kept") is not None for r in runs for lvl in r.levels)
    has_seeds = any(r.seeds > 1 for r in runs)
    has_cost = any(lvl.get("macs") is not None for r in runs for lvl in r.levels)
    multi = len(runs) > 1
    head = (["run"] if multi else []) + ["level", "target", "sparsity", "sparsity (all params)"]
    head += (["D sparsity"] if has_d else []) + (["seeds"] if has_seeds else [])
    head += [f"FID {d}" for d in dirs] + (["FID (mean)"] if dirs else ["FID"])
    head += ["IS", "KID"] + (["label kept"] if has_label else [])
    head += ["params", "MACs/img", "MACs vs dense", "CPU ms b1 / b64"] if has_cost else []
    head += ["images", "matching"] + (["p"] if has_seeds else []) + ["time"]
    cells = [_cells(r, lvl, dirs, has_d, has_label, has_seeds, multi, has_cost) for r in runs for lvl in r.levels]
    records = [_record(r, lvl, dirs) for r in runs for lvl in r.levels]
    return head, cells, records


def markdown_table(runs: Sequence[Run]) -> str:
    head, cells, _ = _rows(runs)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]

    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(c) for c in cells])


def _csv(records: Sequence[dict]) -> str:
    buf = io.StringIO()
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for rec in records:
        w.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in keys})
    return buf.getvalue()


def csv_text(runs: Sequence[Run]) -> str:
    return _csv(_rows(runs)[2])


def seeds_csv_text(runs: Sequence[Run]) -> str:
    """Every seed's rows of the several-seed runs among ``runs``."""
    seed_runs = [s for r in runs for s in r.seed_runs]
    return _csv(_rows(seed_runs)[2]) if seed_runs else ""


def largest_matching(run: Run) -> dict[str, float | None]:
    """The largest sparsity at which ``run`` still matched: overall (every direction) and per
    direction (None where no round matched)."""
    out: dict[str, float | None] = {"all": None}
    for lvl in run.levels:
        if lvl.get("level", 0) == 0 or lvl.get("matching") is None:
            continue
        s = lvl.get("sparsity", 0.0)
        if lvl["matching"]:
            out["all"] = max(out["all"] or 0.0, s)
        for d, v in (lvl.get("matching_directions") or {}).items():
            out.setdefault(d, None)
            if v:
                out[d] = max(out[d] or 0.0, s)
    return out


def _largest_text(r: Run) -> str:
    lm = largest_matching(r)
    pct = (lambda v: "none" if v is None else f"{100 * v:.2f}%")
    per = [f"{d} {pct(v)}" for d, v in lm.items() if d not in ("all", "G")]
    return f"{r.label}: {pct(lm['all'])}" + (f" ({', '.join(per)})" if per else "")


def summary_text(runs: Sequence[Run]) -> str:
    """Markdown: a title, how to read the table, and the table."""
    main = runs[0]
    s, res = main.search, main.config.get("resolved", {})
    seeds = main.seeds
    seed_txt = (f"seeds {s.get('seed')}..{s.get('seed', 0) + seeds - 1} ({seeds} independent searches)"
                if seeds > 1 else f"seed {s.get('seed')}")
    lines = [f"# lthgan search: {main.gan} on {main.data}", "",
             f"Runs: {', '.join(r.label for r in runs)}. Preset {s.get('preset')}, {seed_txt}, prune rate "
             f"{s.get('prune_rate')}, target sparsity {res.get('target_sparsity')}"
             f"{' (then on while rounds match)' if s.get('until_unmatched') else ''}, layers {s.get('layers')}, "
             f"prune D: {'yes' if s.get('prune_d') else 'no'}, D init: {res.get('d_init')}, rewind: "
             f"{s.get('rewind')}{', KD from the dense D' if s.get('kd_d') else ''}.", ""]
    dirs = _directions(runs) or ["G"]
    if s.get("structure") == "channel":
        lines.append("- **Sparsity**: share of the generators' prunable channels removed (the generators are "
                     "rebuilt narrower); params, MACs per image and CPU latency (median forward time, batch "
                     "1 / 64) are those of the evaluated generators.")
    else:
        lines.append(f"- **Sparsity**: share of pruned weights among the generator's prunable weights "
                     f"({s.get('layers')} layers), as reached, and among all its parameters.")
    lines.append(f"- **Matching**: {rule_text(seeds, s.get('tolerance', 0.0), dirs)}. The final "
                 "checkpoint of each round is compared; no best-of selection is made.")
    lines.append("- **Largest matching sparsity**: " + "; ".join(_largest_text(r) for r in runs) + ".")
    if seeds > 1:
        lines.append("- **Several seeds**: FID, IS, KID and label kept are mean ± standard deviation over "
                     f"the seeds; p is the test's one-sided p-value; each seed's rows are in "
                     f"{RunDir.SUMMARY_SEEDS_CSV}.")
    ref = next((lvl.get("reference") for r in runs for lvl in r.levels if lvl.get("reference")), None)
    if len(dirs) > 1:
        lines.append(f"- **Directions**: FID of each direction ({', '.join(dirs)}: the source domain's test "
                     f"images translated and judged against the target domain's {ref or 'reference'} "
                     "images); FID (mean) is their mean.")
    ext = next((lvl.get("extractor") for r in runs for lvl in r.levels), res.get("extractor"))
    lines.append(f"- **Metrics**: FID, IS and KID with the `{ext}` feature extractor"
                 + (f", against the {ref} split" if ref and len(dirs) < 2 else "")
                 + ("; label kept: share of translated digits classified as their source digit."
                    if any(lvl.get("label_kept") is not None for r in runs for lvl in r.levels) else "."))
    lines += _image_notes(runs, ext)
    return "\n".join(lines + ["", markdown_table(runs), ""])


def _image_notes(runs: Sequence[Run], ext) -> list[str]:
    sizes = sorted({_images(lvl) for r in runs for lvl in r.levels if _images(lvl)})
    out = [f"- **Images** (generated or translated / reference, per evaluation): {', '.join(sizes)}"
           + (" — the runs differ, so their FIDs are biased differently." if len(sizes) > 1 else ".")]
    for size in sizes:
        nf, nr = (int(x) for x in size.split("/"))
        note = fid_size_note(ext, nf, nr)
        if note:
            out.append(f"- **{note[0].upper()}{note[1:]}**.")
    return out


# --------------------------------------------------------------------------- writers


def write_summary(run_dir) -> list[Run]:
    """``summary.md``, ``summary.csv`` (and ``summary_seeds.csv``) and ``fid_vs_sparsity.png``
    of a run and its baselines."""
    rd = RunDir(run_dir)
    main = load_run(rd.path)
    runs = [main] + main.baselines
    try:
        check_comparable(runs)
    except ReportError:
        runs = [main]  # a baseline that cannot be compared stays out of the parent's summary
    atomic_write_text(rd.summary_md, summary_text(runs))
    atomic_write_text(rd.summary_csv, csv_text(runs))
    if any(r.seed_runs for r in runs):
        atomic_write_text(rd.summary_seeds_csv, seeds_csv_text(runs))
    plot(runs, rd.plot)
    if any(lvl.get("macs") is not None for r in runs for lvl in r.levels):
        plot_macs(runs, rd.path / RunDir.PLOT_MACS)
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
    if any(lvl.get("macs") is not None for r in runs for lvl in r.levels):
        plot_macs(runs, out / RunDir.PLOT_MACS)
    return text, out

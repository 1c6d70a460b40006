"""Is a sparse level *matching*, i.e. no worse than the dense model? The rules, stated once.

* **One seed**: a level matches in a direction when its final-checkpoint FID is at most the
  dense FID plus ``tolerance`` (the paper's rule with tolerance 0).
* **Several seeds**: FIDs of short runs scatter by more than the differences between levels,
  so a single comparison is a coin toss. For each seed ``s`` (its own θ0, data order and noise,
  shared by its dense run and its rounds) take ``d_s = FID_level,s - FID_dense,s - tolerance``.
  A one-sided paired t-test asks whether the mean of ``d`` is above 0; the level matches unless
  it is, at ``1 - alpha`` (95%) confidence: ``t = mean(d) / (sd(d) / sqrt(n)) <= t_{1-alpha, n-1}``.
  Equal dense and level FIDs for every seed (sd 0) match.
* **Several directions** (CycleGAN's A2B and B2A): each direction is judged on its own FID, as
  the paper reports them; the level is matching when every direction is, and a search that
  runs ``until_unmatched`` goes on while any direction still matches.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

__all__ = ["ALPHA", "judge_directions", "judge_seeds", "paired_test", "rule_text", "aggregate",
           "direction_fids", "level_row"]

ALPHA = 0.05


def paired_test(level: Sequence[float], dense: Sequence[float], tolerance: float = 0.0,
                alpha: float = ALPHA) -> tuple[bool, float]:
    """The several-seed rule for one direction: ``(matching, p)``, ``p`` the one-sided p-value
    of "the level's FID is above dense + tolerance"."""
    if len(level) != len(dense) or len(level) < 2:
        raise ValueError(f"a paired test needs two or more pairs, got {len(level)} and {len(dense)}")
    from scipy import stats

    d = [a - b - tolerance for a, b in zip(level, dense)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if sd == 0.0:
        p = 0.0 if mean > 0 else 1.0
    else:
        p = float(stats.t.sf(mean / (sd / math.sqrt(n)), n - 1))
    return p >= alpha, p


def judge_directions(fids: Mapping[str, float | None], dense: Mapping[str, float | None],
                     tolerance: float = 0.0) -> dict:
    """The one-seed rule per direction: ``{"matching": all match, "matching_any": some match,
    "matching_directions": {dir: bool}}`` (None where a FID is missing)."""
    per = {d: (None if fids.get(d) is None or dense.get(d) is None else bool(fids[d] <= dense[d] + tolerance))
           for d in fids}
    return _combine(per)


def judge_seeds(fids: Mapping[str, Sequence[float]], dense: Mapping[str, Sequence[float]],
                tolerance: float = 0.0, alpha: float = ALPHA) -> dict:
    """The several-seed rule per direction, with ``p_values``."""
    per, ps = {}, {}
    for d, vals in fids.items():
        per[d], ps[d] = paired_test(vals, dense[d], tolerance, alpha)
    return {**_combine(per), "p_values": ps}


def _combine(per: Mapping[str, bool | None]) -> dict:
    vals = list(per.values())
    if any(v is None for v in vals) or not vals:
        return {"matching": None, "matching_any": None, "matching_directions": dict(per)}
    return {"matching": all(vals), "matching_any": any(vals), "matching_directions": dict(per)}


def rule_text(seeds: int, tolerance: float, directions: Sequence[str]) -> str:
    """One paragraph of summary.md saying which rule judged the levels."""
    if seeds < 2:
        txt = (f"a round matches when its final-checkpoint FID is at most the dense FID + tolerance "
               f"({tolerance:g}); one seed, so no test of the run-to-run spread")
    else:
        txt = (f"{seeds} seeds; a level matches unless a one-sided paired t-test over the seeds says, "
               f"at {100 * (1 - ALPHA):.0f}%, that its FID minus tolerance ({tolerance:g}) is above the "
               "dense FID of the same seed (p below 0.05: not matching)")
    if len(directions) > 1:
        txt += (f"; each direction ({', '.join(directions)}) is judged on its own FID, and a level is "
                "matching when every direction is")
    return txt


def aggregate(rows: Sequence[Mapping]) -> dict:
    """Mean and standard deviation (over seeds) of a level's numbers: ``fid``, ``is_mean``,
    ``kid_mean``, ``label_kept``, the sparsities and, per direction, the FID."""
    out: dict = {"seeds": len(rows)}
    for k in ("fid", "is_mean", "kid_mean", "label_kept", "sparsity", "sparsity_overall", "d_sparsity",
              "time_s", "train_time_s", "eval_time_s", "params", "macs", "latency_cpu_b1_ms",
              "latency_cpu_b64_ms", "latency_cuda_b1_ms", "latency_cuda_b64_ms"):
        vals = [r.get(k) for r in rows]
        if all(v is not None for v in vals) and vals:
            out[k], out[f"{k}_sd"] = _mean_sd(vals)
    dirs = {}
    for d in (rows[0].get("directions") or {}) if rows else ():
        vals = [(r.get("directions") or {}).get(d, {}).get("fid") for r in rows]
        if all(v is not None for v in vals):
            m, s = _mean_sd(vals)
            dirs[d] = {"fid": m, "fid_sd": s, "fids": vals}
    out["directions"] = dirs
    out["fids"] = [r.get("fid") for r in rows]
    return out


def _mean_sd(vals: Sequence[float]) -> tuple[float, float | None]:
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return mean, sd


def direction_fids(row: Mapping | None) -> dict[str, float | None]:
    """The FID of each direction of a metrics row (``{"G": fid}`` for one direction)."""
    if not row:
        return {}
    per = row.get("directions") or {}
    return {d: m.get("fid") for d, m in per.items()} if per else {"G": row.get("fid")}


#: what a several-seed level row takes over from its first seed's row unchanged
_SHARED = ("level", "name", "method", "gan", "data", "sparsity_target", "extractor", "extractor_weights",
           "feature_layer_fid", "reference", "n_fake", "n_real", "verdict_on", "tolerance", "rewind",
           "d_init", "checkpoint", "selection")


def level_row(rows: Sequence[Mapping], dense_rows: Sequence[Mapping] | None, tolerance: float = 0.0) -> dict:
    """One level of a several-seed search: the seeds' rows (same order as ``dense_rows``, their
    dense levels) as means and standard deviations, and the verdict over the seeds."""
    out = {k: rows[0].get(k) for k in _SHARED}
    out.update(aggregate(rows))
    out["seed_values"] = [r.get("seed") for r in rows]
    # IS and KID: the spread shown beside them is the spread over the seeds
    out["is_std"], out["kid_std"] = out.get("is_mean_sd"), out.get("kid_mean_sd")
    out["matching"] = None
    if out["level"] == 0 or not dense_rows:
        return out
    dirs = list(direction_fids(rows[0]))
    fids = {d: [direction_fids(r)[d] for r in rows] for d in dirs}
    dense = {d: [direction_fids(r)[d] for r in dense_rows] for d in dirs}
    if any(v is None for vals in (*fids.values(), *dense.values()) for v in vals):
        return out
    out["dense_fid"] = _mean_sd([r["fid"] for r in dense_rows])[0]
    if len(rows) >= 2:
        out.update(judge_seeds(fids, dense, tolerance))
    else:
        out.update(judge_directions({d: v[0] for d, v in fids.items()}, {d: v[0] for d, v in dense.items()},
                                    tolerance))
    return out

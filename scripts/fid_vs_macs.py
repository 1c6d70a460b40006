"""FID against generator MACs for finished structural runs beside a *published* unstructured run.

`lthgan report` draws ``fid_vs_macs.png`` from run directories. A published result keeps only its
tables (``report.csv`` and ``config.json`` under ``docs/results/NAME``), not the run, so this script
reads one such table as a further series: its tickets sit at the dense MACs of the structural run
(masks save no compute) and are drawn with an x marker, as `lthgan report` draws unstructured runs.

    python scripts/fid_vs_macs.py RUN [RUN ...] --published docs/results/cyclegan-quick-3seeds \
        --label imp --out fid_vs_macs.png

The runs and the published table must share the GAN, the data and the feature extractor (their FIDs
are comparable only then); the script stops with one line otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from lthgan.search import report
from lthgan.search.plot import plot_macs


def _float(v: str):
    return float(v) if v not in ("", None) else None


def _bool(v: str):
    return {"True": True, "False": False}.get(v)


def published_run(folder: Path, label: str) -> report.Run:
    """The rows of ``label`` (the ``run`` column) of ``folder/report.csv`` as a :class:`report.Run`
    with the per-level fields the plots read (mean FID, its sd and the verdict, per direction)."""
    config = json.loads((folder / "config.json").read_text())
    with open(folder / "report.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["run"] == label]
    if not rows:
        raise SystemExit(f"{folder / 'report.csv'}: no rows with run={label!r}")
    dirs = [c[len("fid_"):] for c in rows[0] if c.startswith("fid_") and not c.endswith("_sd")]
    levels = []
    for r in rows:
        lvl = {"level": int(r["level"]), "sparsity": float(r["sparsity"]), "fid": _float(r["fid"]),
               "fid_sd": _float(r["fid_sd"]), "matching": _bool(r["matching"]), "macs": _float(r["macs"])}
        if dirs:
            lvl["directions"] = {d: {"fid": _float(r[f"fid_{d}"]), "fid_sd": _float(r[f"fid_{d}_sd"])} for d in dirs}
            lvl["matching_directions"] = {d: _bool(r.get(f"matching_{d}", "")) for d in dirs}
        levels.append(lvl)
    config.setdefault("search", {}).setdefault("structure", None)
    return report.Run(folder, config, levels, f"{label}, {folder.name}")


def _key(run: report.Run) -> tuple:
    """What makes FIDs comparable. A published table keeps no extractor weights digest, so the
    extractor is compared by name (``report.check_comparable`` needs the digest)."""
    return run.gan, run.data, run.config.get("resolved", {}).get("extractor")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories (with their baselines)")
    ap.add_argument("--published", type=Path, required=True, help="a docs/results folder with report.csv")
    ap.add_argument("--label", default="imp", help="which run of the published report.csv (its `run` column)")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    a = ap.parse_args(argv)
    runs = report.load_runs(a.runs)
    pub = published_run(a.published, a.label)
    if _key(pub) != _key(runs[0]):
        print(f"{a.published}: GAN, data, extractor {_key(pub)} differ from the runs' {_key(runs[0])}; "
              "their FIDs are not comparable", file=sys.stderr)
        return 2
    where = plot_macs([*runs, pub], a.out)
    print(f"wrote {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

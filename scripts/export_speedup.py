"""The CPU speed-up of exported generators: each level is written with ``lthgan export`` and
timed in a fresh Python process where lthgan cannot be imported (plain torch, as a user of the
exported file runs it), against the first level given (usually ``dense``).

    python scripts/export_speedup.py RUN/seed-00/dense RUN/seed-00/round-02 [--threads 1]

Batches of 1 and 64; each timing is the median of ``--repeats`` calls after warm-up, and the
levels are timed in turn ``--rounds`` times, so drift on a shared machine falls on every level
alike; the table gives the median over rounds. MACs and parameters come from each level's
``metrics.json``. Prints a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lthgan import gans
from lthgan.search.checkpoints import model_from_checkpoint
from lthgan.search.export import export_level
from lthgan.search.rundir import Level, eval_checkpoints

BATCHES = (1, 64)

#: run in a process without lthgan: load each file, time it, print JSON {file: {batch: [ms per round]}}.
#: It repeats what lthgan.channels.load_exported and latency_ms do, because it must not import lthgan.
TIMER = r"""
import json, statistics, sys, time
sys.modules["lthgan"] = None
import torch
files, inputs, threads, repeats, rounds = json.loads(sys.argv[1])
torch.set_num_threads(threads)
models = {}
for f in files:
    try:
        models[f] = torch.export.load(f).module()
    except Exception:
        models[f] = torch.jit.load(f)
xs = {b: torch.load(p) for b, p in inputs.items()}
out = {f: {b: [] for b in xs} for f in files}
with torch.no_grad():
    for _ in range(rounds):
        for f, m in models.items():
            for b, x in xs.items():
                for _ in range(2):
                    m(x)
                t = []
                for _ in range(repeats):
                    s = time.perf_counter(); m(x); t.append(time.perf_counter() - s)
                out[f][b].append(statistics.median(t) * 1e3)
print(json.dumps(out))
"""


def _costs(level: Path, generator: str) -> dict:
    """``params`` and ``macs`` of ``generator`` at ``level`` (its metrics hold them per generator
    where there are several, as for CycleGAN; else the level's own)."""
    m = json.loads((level / Level.METRICS).read_text())
    return (m.get("per_generator") or {}).get(generator, m)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("levels", nargs="+", type=Path, help="level folders; the first is the reference")
    ap.add_argument("--generator", default=None, help="which generator (CycleGAN: G_AB or G_BA)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the timing process")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="times every level is measured, in turn")
    args = ap.parse_args(argv)
    for p in args.levels:
        if not (p / Level.METRICS).is_file():
            sys.exit(f"{p}: not a finished level (no {Level.METRICS})")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i, p in enumerate(args.levels):
            out, _, g = export_level(p, tmp / f"g{i}.pt2", args.generator)
            files.append(str(out))
        task, _, _ = model_from_checkpoint(eval_checkpoints(args.levels[0])[-1])
        inputs = {}
        for b in BATCHES:
            inputs[b] = str(tmp / f"x{b}.pt")
            torch.save(gans.family(task.name).generator_input(task.config, b, seed=b), inputs[b])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = str(args.threads)
        spec = json.dumps([files, inputs, args.threads, args.repeats, args.rounds])
        p = subprocess.run([sys.executable, "-c", TIMER, spec], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"the timing process failed:\n{p.stderr}")
        times = json.loads(p.stdout)
    med = [{int(b): statistics.median(v) for b, v in times[f].items()} for f in files]
    print(f"Exported {g} (plain torch, lthgan not importable), {args.threads} thread(s), median of "
          f"{args.repeats} calls, median over {args.rounds} rounds; speed-up against {args.levels[0]}.\n")
    print("| level | params | MACs/img | MAC reduction | " +
          " | ".join(f"batch {b} ms | speed-up b{b}" for b in BATCHES) + " |")
    print("|---|---|---|---|" + "---|---|" * len(BATCHES))
    ref = _costs(args.levels[0], g)
    for p, m in zip(args.levels, med):
        mt = _costs(p, g)
        red = f"{ref['macs'] / mt['macs']:.2f}x" if mt.get("macs") and ref.get("macs") else ""
        cells = " | ".join(f"{m[b]:.4g} | {med[0][b] / m[b]:.2f}x" for b in BATCHES)
        print(f"| {p} | {mt.get('params', '')} | {mt.get('macs', '')} | {red} | {cells} |")


if __name__ == "__main__":
    main()

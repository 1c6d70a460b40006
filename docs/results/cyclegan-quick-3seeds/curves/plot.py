"""A2B and B2A digit-FID against iteration: the dense run and round tickets of seed 0.

    python plot.py dense-s0.json imp36-s0.json [random36-s0.json]   # writes curves.png
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for path in sys.argv[1:]:
    rec = json.loads(Path(path).read_text())
    label = Path(path).stem
    it = [r["iteration"] for r in rec["rows"]]
    for ax, d in zip(axes, ("A2B", "B2A")):
        ax.plot(it, [r[f"fid_{d}"] for r in rec["rows"]], marker="o", ms=3, label=label)
for ax, d in zip(axes, ("A2B", "B2A")):
    ax.set_title(f"{d} (seed 0)")
    ax.set_xlabel("iteration")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("digit-FID (EMA generators)")
axes[1].legend()
fig.tight_layout()
fig.savefig(Path(__file__).with_name("curves.png"), dpi=110)

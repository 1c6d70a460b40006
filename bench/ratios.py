"""Ratio tables of a saved benchmark run (``pytest bench --benchmark-json=RUN.json``).

    python bench/ratios.py RUN.json [MORE.json ...] [--out FILE]

Prints Markdown: the machine, then for each suite the medians side by side with their ratios
(lthgan / dense, prune-hook / dense, top-k speedups, rewind ratios, the one-off share of an
IMP round), then each target of the benchmarks issue as met or missed with its figure.
Several files are merged (a row present in more than one is taken from the last), e.g. a main
run plus a run of ``LTHGAN_BENCH_PAPER_STEP=1 pytest bench/test_bench_round.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

SPARSITIES = (0.0, 0.74, 0.9)


def load(paths: list[Path]) -> tuple[dict, list[dict]]:
    rows: dict[str, dict] = {}
    meta: dict = {}
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"ratios.py: cannot read {p}: {e}")
        if "benchmarks" not in doc:
            raise SystemExit(f"ratios.py: {p} is not a pytest-benchmark JSON file (no 'benchmarks')")
        if not meta:
            meta = doc
        for b in doc["benchmarks"]:
            rows[b["fullname"]] = b
    return meta, list(rows.values())


def med(b: dict) -> float:
    return float(b["stats"]["median"])


def ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    v *= 1e3
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.3f}"


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _index(rows: list[dict], suite: str):
    """{group: {(impl, sparsity): row}}"""
    groups: dict[str, dict] = defaultdict(dict)
    for b in rows:
        info = b.get("extra_info", {})
        if info.get("suite") != suite:
            continue
        groups[b["group"]][(info.get("impl"), info.get("sparsity"))] = b
    return groups


def _get(g: dict, impl: str, s) -> float | None:
    b = g.get((impl, s))
    return med(b) if b else None


def header(meta: dict, rows: list[dict]) -> str:
    mi = meta.get("machine_info", {})
    cpu = mi.get("cpu", {})
    brand = cpu.get("brand_raw") or mi.get("processor") or "?"
    loads = [b["extra_info"]["load1"] for b in rows if "load1" in b.get("extra_info", {})]
    lines = [
        f"- machine: {brand}, {cpu.get('count', '?')} logical CPUs"
        + (f"; GPU {mi['gpu']} (CUDA {mi.get('cuda')})" if mi.get("gpu") else ""),
        f"- torch {mi.get('torch', '?')} ({mi.get('torch_threads', '?')} threads), "
        f"Python {mi.get('python_version', '?')}, lthgan {mi.get('lthgan', '?')}",
        f"- device {mi.get('bench_device', '?')}, GAN preset {mi.get('bench_preset', '?')}",
        f"- run at {meta.get('datetime', '?')}, commit "
        f"{(meta.get('commit_info') or {}).get('id', '?')[:12]}",
    ]
    if loads:
        lines.append(f"- 1-minute load average when each row started: median "
                     f"{sorted(loads)[len(loads) // 2]:.2f}, max {max(loads):.2f} "
                     f"(on {cpu.get('count', '?')} CPUs; other work on the machine skews rows)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ suites


def layers(rows, targets: dict) -> str:
    groups = _index(rows, "layers")
    body = []
    worst_sngan: dict[str, tuple[float, str]] = {}
    lthgan_vs_hook = []
    for name in sorted(groups):
        g = groups[name]
        some = next(iter(g.values()))["extra_info"]
        case, mode, prec = some["case"], some["mode"], some["precision"]
        dense = _get(g, "dense", None)
        for s in SPARSITIES:
            lt, ph = _get(g, "lthgan", s), _get(g, "prune-hook", s)
            if lt is None and ph is None:
                continue
            body.append([case, mode, prec, f"{s:g}", ms(dense), ms(lt), ms(ph), ratio(lt, dense),
                         ratio(ph, dense), ratio(lt, ph)])
            if lt is not None and ph is not None:
                lthgan_vs_hook.append((lt / ph, f"{case} {mode} {prec} sp{s:g}"))
            if case.startswith("sngan") and mode == "fwd+bwd" and prec == "fp32" \
                    and lt is not None and dense:
                r = lt / dense
                if case not in worst_sngan or r > worst_sngan[case][0]:
                    worst_sngan[case] = (r, f"sp{s:g}")
    targets["layers_sngan_fwdbwd"] = worst_sngan
    targets["layers_vs_hook"] = lthgan_vs_hook
    return table(["layer", "mode", "precision", "sparsity", "dense ms", "lthgan ms",
                  "prune-hook ms", "lthgan/dense", "prune-hook/dense", "lthgan/prune-hook"], body)


def topk(rows, targets: dict) -> str:
    groups = _index(rows, "topk")
    body = []
    speedups = defaultdict(list)

    def key(name):
        info = next(iter(groups[name].values()))["extra_info"]
        return (info["numel"], info["sparsity"])

    for name in sorted(groups, key=key):
        g = groups[name]
        info = next(iter(g.values()))["extra_info"]
        s = info["sparsity"]
        lt, kv, tk = (_get(g, i, s) for i in ("lthgan", "cat+kthvalue", "cat+topk"))
        body.append([info["size"], f"{info['numel']:,}", f"{s:g}", ms(lt), ms(kv), ms(tk),
                     ratio(kv, lt), ratio(tk, lt)])
        if lt and kv:
            speedups[info["size"]].append((kv / lt, f"sp{s:g}"))
    targets["topk_speedup"] = dict(speedups)
    return table(["weights", "count", "prior sparsity", "lthgan ms", "cat+kthvalue ms",
                  "cat+topk ms", "kthvalue/lthgan (speed-up)", "topk/lthgan (speed-up)"], body)


def rewind(rows, targets: dict) -> str:
    groups = _index(rows, "rewind")
    body = []
    vs_foreach = []

    def key(name):
        info = next(iter(groups[name].values()))["extra_info"]
        return (info["numel"], info["sparsity"])

    for name in sorted(groups, key=key):
        g = groups[name]
        info = next(iter(g.values()))["extra_info"]
        s = info["sparsity"]
        lt, lsd, fe = (_get(g, i, s) for i in ("lthgan", "load_state_dict", "foreach_copy+mul"))
        body.append([info["size"], f"{s:g}", ms(lt), ms(lsd), ms(fe), ratio(lt, fe), ratio(lt, lsd)])
        if lt and fe:
            vs_foreach.append((lt / fe, f"{info['size']} sp{s:g}"))
    targets["rewind_vs_foreach"] = vs_foreach
    return table(["weights", "sparsity", "rewind_ ms", "load_state_dict ms",
                  "foreach copy+mul ms", "rewind_/foreach", "rewind_/load_state_dict"], body)


_VS_DENSE_HEAD = ["sparsity", "dense ms", "lthgan ms", "prune-hook ms", "lthgan/dense",
                  "prune-hook/dense", "lthgan/prune-hook"]


def _vs_dense(rows, suite: str, label: list[str]):
    """Rows of a dense / lthgan / prune-hook suite: the table body (``label`` fields of the
    extra_info first) and, for fp32 rows, (lthgan/dense, prune-hook/dense or None, name)."""
    groups = _index(rows, suite)
    body, figures = [], []
    for name in sorted(groups):
        g = groups[name]
        info = next(iter(g.values()))["extra_info"]
        dense = _get(g, "dense", None)
        for s in SPARSITIES:
            lt, ph = _get(g, "lthgan", s), _get(g, "prune-hook", s)
            if lt is None and ph is None:
                continue
            cells = [str(info.get(k, "?")) for k in label]
            body.append(cells + [f"{s:g}", ms(dense), ms(lt), ms(ph), ratio(lt, dense),
                                 ratio(ph, dense), ratio(lt, ph)])
            if lt and dense and info.get("precision", "fp32") == "fp32":
                figures.append((lt / dense, ph / dense if ph else None, " ".join(cells) + f" sp{s:g}"))
    return body, figures


def step(rows, targets: dict) -> str:
    body, figures = _vs_dense(rows, "step", ["gan", "preset", "precision"])
    targets["step"] = [(r, n) for r, _, n in figures]
    targets["step_vs_hook"] = [(r, h, n) for r, h, n in figures if h is not None]
    return table(["GAN", "preset", "precision"] + _VS_DENSE_HEAD, body)


def resnet(rows, targets: dict) -> str:
    body, figures = _vs_dense(rows, "resnet", ["case"])
    targets["resnet"] = figures
    return table(["model"] + _VS_DENSE_HEAD, body)


def penalty(rows, targets: dict) -> str:
    body, figures = _vs_dense(rows, "penalty", ["case"])
    targets["penalty"] = figures
    return table(["critic step"] + _VS_DENSE_HEAD, body)


def round_(rows, targets: dict) -> str:
    groups = _index(rows, "round")
    body = []
    shares = []
    for name in sorted(groups):
        g = groups[name]
        by = {impl: med(b) for (impl, _), b in g.items()}
        info = next(iter(g.values()))["extra_info"]
        iters = int(info["iterations"])
        st = by.get("step")
        pr, rw, ta, rs = by.get("prune"), by.get("rewind"), by.get("ticket-apply"), by.get("reset")
        round_s = st * iters if st is not None else None
        if round_s and pr is not None and rw is not None:
            s2 = 100 * (pr + rw) / round_s
            s3 = 100 * (pr + rw + (rs or 0.0)) / round_s
            share2, share3 = f"{s2:.2g} %", f"{s3:.2g} %"
            shares.append((s2, s3, info["gan"], info["recipe"]))
        else:
            share2 = share3 = "n/a (no step of this size measured)"
        body.append([info["gan"], info["recipe"], ms(st), f"{iters:,}",
                     f"{round_s / 3600:.3g} h" if round_s else "n/a", ms(pr), ms(rw), ms(ta),
                     ms(rs), share2, share3])
    targets["round"] = shares
    return table(["GAN", "sizes / recipe", "step ms", "iterations", "round (training)",
                  "prune ms", "rewind_ ms", "Ticket.apply ms", "reset ms",
                  "(prune+rewind)/round", "(prune+rewind+reset)/round"], body)


def verdicts(targets: dict, device: str) -> str:
    gpu = device.startswith("cuda")
    lim_layer = 1.03 if gpu else 1.05
    lim_step = 1.03 if gpu else 1.05
    out = []

    def line(ok: bool | None, text: str) -> None:
        tag = "n/a" if ok is None else ("**met**" if ok else "**missed**")
        out.append(f"- {tag}: {text}")

    w = targets.get("layers_sngan_fwdbwd", {})
    if w:
        figs = ", ".join(f"{c} {r:.3f}× ({where})" for c, (r, where) in sorted(w.items()))
        line(all(r <= lim_layer for r, _ in w.values()),
             f"masked layer fwd+bwd ≤ {lim_layer}× dense at the SNGAN shapes (worst sparsity per "
             f"layer): {figs}")
    else:
        line(None, "masked layer fwd+bwd vs dense: no layer rows")
    vh = targets.get("layers_vs_hook", [])
    if vh:
        worst = max(vh)
        n_below = sum(r < 1 for r, _ in vh)
        line(n_below == len(vh), f"masked layers below prune-hook everywhere: {n_below} of {len(vh)} "
             f"rows; worst lthgan/prune-hook {worst[0]:.3f} ({worst[1]})")
    st = targets.get("step", [])
    if st:
        worst = max(st)
        line(worst[0] <= lim_step, f"training step ≤ {lim_step}× dense: worst {worst[0]:.3f}× "
             f"({worst[1]}); all: " + ", ".join(f"{r:.3f} ({n})" for r, n in st))
    else:
        line(None, "training step vs dense: no step rows")
    _step_verdicts(targets, lim_step, line, out)
    sp = targets.get("topk_speedup", {}).get("11.4M", [])
    if sp and not gpu:
        worst = min(sp)
        line(worst[0] >= 5.0, f"global_topk_masks ≥ 5× faster than cat + kthvalue on CPU at "
             f"11.4 M: slowest {worst[0]:.2f}× ({worst[1]}); all: "
             + ", ".join(f"{r:.2f}× ({n})" for r, n in sp))
    elif sp:
        out.append("- (top-k CPU target: this run is on GPU; speed-ups at 11.4 M: "
                   + ", ".join(f"{r:.2f}× ({n})" for r, n in sp) + ")")
    rf = targets.get("rewind_vs_foreach", [])
    if rf:
        worst = max(rf)
        line(worst[0] <= 1.0, f"rewind_ at least as fast as _foreach_copy_ + multiply: worst "
             f"rewind_/foreach {worst[0]:.3f} ({worst[1]})")
    rd = [s for s in targets.get("round", []) if s[3] == "paper"]
    if rd:
        figs = ", ".join(f"{g} {s2:.2g} % (with reset {s3:.2g} %)" for s2, s3, g, _ in rd)
        line(all(s2 <= 0.1 for s2, *_ in rd), f"pruning + rewinding ≤ 0.1 % of a paper-recipe "
             f"round: {figs}")
    else:
        line(None, "pruning + rewinding vs a paper-recipe round: no paper-size step in this run "
             "(LTHGAN_BENCH_PAPER_STEP=1, or --bench-preset paper)")
    return "\n".join(out)


def _step_verdicts(targets: dict, lim_step: float, line, out: list[str]) -> None:
    """resnet18 against dense; the masked steps' overhead against the prune hook's; the
    gradient-penalty step's cost (no target: a figure)."""
    rn = targets.get("resnet", [])
    if rn:
        worst = max(rn, key=lambda f: f[0])
        line(worst[0] <= lim_step, f"resnet18 training step ≤ {lim_step}× dense (Adam fused=True): "
             f"{worst[0]:.3f}× ({worst[2]})")
    else:
        line(None, "resnet18 training step vs dense: no resnet rows")
    vs_hook = [(r, h, n) for r, h, n in targets.get("step_vs_hook", []) + rn if h is not None]
    if vs_hook:
        # overhead share: (lthgan − dense) / (prune-hook − dense); below 0.5 meets the target
        shares = [(max(r - 1, 0.0) / (h - 1) if h > 1 else (0.0 if r <= 1 else float("inf")), n)
                  for r, h, n in vs_hook]
        worst = max(shares)
        line(worst[0] < 0.5, "masked step overhead < half the prune hook's: worst "
             f"{worst[0]:.2f} of it ({worst[1]})")
    pen = targets.get("penalty", [])
    if pen:
        out_figs = ", ".join(f"{r:.3f}× ({n})" for r, _, n in pen)
        out.append(f"- (no target) gradient-penalty (WGAN-GP) critic step, lthgan/dense: {out_figs}")


def report(meta: dict, rows: list[dict]) -> str:
    targets: dict = {}
    mi = meta.get("machine_info", {})
    parts = ["## Run", header(meta, rows)]
    sections = [("Masked layers (suite 1)", layers), ("Selection (suite 2)", topk),
                ("Rewinding (suite 3)", rewind), ("One training step (suite 4)", step),
                ("One IMP round: one-off costs (suite 5)", round_),
                ("A gradient-penalty critic step (suite 6)", penalty),
                ("A resnet18 training step (suite 7)", resnet)]
    for title, fn in sections:
        text = fn(rows, targets)
        parts += [f"## {title}", "Medians in milliseconds.", text]
    parts += ["## Targets", verdicts(targets, str(mi.get("bench_device", "cpu")))]
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="pytest-benchmark JSON files")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = ap.parse_args(argv)
    meta, rows = load(args.runs)
    text = report(meta, rows)
    sys.stdout.write(text)
    if args.out is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from lthgan._io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

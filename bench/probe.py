"""Probes behind the findings in BENCHMARKS.md: where lthgan's CPU overhead comes from.

    python bench/probe.py [--threads N] [--repeats R]

1. ``fixed``: the per-call cost of a masked layer on a tiny conv (2 channels, 2x2 pixels),
   where the arithmetic is negligible: dense ``nn.Conv2d``, ``MaskedConv2d``, the raw op
   ``torch.ops.lthgan.masked_conv2d`` and the hand-rolled ``F.conv2d(x, w * mask)``.
2. ``faults``: a 256->256 3x3 conv at batch 4, 8x8: time and minor page faults per
   forward+backward, dense against masked. Run it once as is and once with
   ``MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=100000000000`` to see glibc's
   trimming at work.
3. ``topk``: ``global_topk_masks`` over 11.4 M weights whose prior masks are random against
   the same sparsity with the pruned entries in one block per tensor.
4. ``layers``: suite 1's forward+backward rows at 74%, dense / lthgan / prune-hook
   interleaved call by call (steadier ratios than pytest-benchmark's row after row when the
   machine is shared). Slow: the SNGAN conv takes seconds per call.

Rows are interleaved (A, B, A, B, ...) and the median is reported, so a change in machine
load hits every row alike.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lthgan  # noqa: E402,F401
from benchutil import WEIGHT_SETS, random_masks, random_weights  # noqa: E402
from lthgan import ops  # noqa: E402
from lthgan.nn import MaskedConv2d  # noqa: E402


def interleaved(fns: dict, repeats: int, warmup: int = 10) -> dict[str, tuple[float, float]]:
    """{name: (median seconds, minor page faults per call)}"""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    faults = {k: 0 for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            faults[k] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    return {k: (sorted(v)[len(v) // 2], faults[k] / repeats) for k, v in times.items()}


def _conv_pair(cin, cout, hw, batch):
    torch.manual_seed(0)
    d = nn.Conv2d(cin, cout, 3, padding=1)
    m = MaskedConv2d(cin, cout, 3, padding=1)
    m.load_state_dict(d.state_dict(), strict=False)
    x = torch.randn(batch, cin, hw, hw, requires_grad=True)
    g = torch.randn(batch, cout, hw, hw)
    return d, m, x, g


def probe_fixed(repeats: int) -> None:
    d, m, x, g = _conv_pair(2, 2, 2, 1)
    w, mask, b = m.weight, m.mask, m.bias
    raw = torch.ops.lthgan.masked_conv2d

    def step(fwd):
        def f():
            for p in (d.weight, d.bias, w, b, x):
                p.grad = None
            fwd().backward(g)
        return f

    fb = interleaved({
        "nn.Conv2d": step(lambda: d(x)),
        "MaskedConv2d": step(lambda: m(x)),
        "torch.ops.lthgan.masked_conv2d": step(lambda: raw(x, w, mask, b, [1, 1], [1, 1], [1, 1], 1)),
        "F.conv2d(x, w * mask)": step(lambda: F.conv2d(x, w * mask, b, padding=1)),
    }, repeats)
    with torch.no_grad():
        fw = interleaved({
            "nn.Conv2d": lambda: d(x),
            "MaskedConv2d": lambda: m(x),
            "torch.ops.lthgan.masked_conv2d": lambda: raw(x, w, mask, b, [1, 1], [1, 1], [1, 1], 1),
            "F.conv2d(x, w * mask)": lambda: F.conv2d(x, w * mask, b, padding=1),
        }, repeats)
    print("\n1. fixed per-call cost, 2->2 conv on 2x2 pixels (µs, median)")
    print(f"{'':34s} {'fwd+bwd':>9s} {'fwd, no_grad':>13s}")
    for k in fb:
        print(f"{k:34s} {fb[k][0] * 1e6:9.1f} {fw[k][0] * 1e6:13.1f}")


def probe_faults(repeats: int) -> None:
    d, m, x, g = _conv_pair(256, 256, 8, 4)

    def fd():
        d.weight.grad = d.bias.grad = x.grad = None
        d(x).backward(g)

    def fm():
        m.weight.grad = m.bias.grad = x.grad = None
        m(x).backward(g)

    r = interleaved({"dense nn.Conv2d": fd, "MaskedConv2d": fm}, max(5, repeats // 50))
    print("\n2. 256->256 3x3 conv, batch 4, 8x8: forward+backward (median ms, minor faults/call)")
    for k, (t, f) in r.items():
        print(f"{k:34s} {t * 1e3:9.2f} ms {f:9.0f} faults")


def probe_topk(repeats: int) -> None:
    shapes = WEIGHT_SETS["11.4M"]
    cpu = torch.device("cpu")
    ws = random_weights(shapes, cpu)
    print("\n3. global_topk_masks, 11.4 M weights, keep 80% of the survivors (median ms)")
    print(f"{'prior sparsity':>14s} {'random masks':>13s} {'block masks':>12s}")
    for s in (0.0, 0.5, 0.74, 0.9):
        rm = random_masks(shapes, s, cpu)
        bm = []
        for w in ws:
            mm = torch.ones(w.numel(), dtype=torch.bool)
            mm[int(round((1 - s) * w.numel())):] = False
            bm.append(mm.view(w.shape))
        kr = int(round(0.8 * sum(int(t.sum()) for t in rm)))
        kb = int(round(0.8 * sum(int(t.sum()) for t in bm)))
        r = interleaved({"random": lambda: ops.global_topk_masks(ws, rm, kr),
                         "block": lambda: ops.global_topk_masks(ws, bm, kb)},
                        max(5, repeats // 100), warmup=1)
        print(f"{s:14g} {r['random'][0] * 1e3:13.1f} {r['block'][0] * 1e3:12.1f}")


def probe_layers(repeats: int) -> None:
    from torch.nn.utils import prune as tprune

    from benchutil import layer_mask
    from test_bench_layers import CASES

    print("\n4. masked layers, forward+backward, interleaved (median ms; ratio to dense)")
    print(f"{'layer':18s} {'sparsity':>8s} {'dense':>9s} {'lthgan':>16s} {'prune-hook':>16s}")
    cpu = torch.device("cpu")
    for case in ("sngan-conv3x3", "sngan-convT4x4", "sngan-linear", "cyclegan-conv3x3",
                 "cyclegan-convT3x3"):
        plain_cls, masked_cls, args, kwargs, shape = CASES[case]
        g = torch.Generator().manual_seed(7)
        x = torch.randn(shape, generator=g).requires_grad_(True)
        for s in (0.74,):
            torch.manual_seed(3)
            dense = plain_cls(*args, **kwargs)
            lt = masked_cls(*args, **kwargs)
            lt.load_state_dict(dense.state_dict(), strict=False)
            hook = plain_cls(*args, **kwargs)
            hook.load_state_dict(dense.state_dict())
            mask = layer_mask(dense.weight.shape, s, cpu)
            lt.set_mask(mask)
            tprune.custom_from_mask(hook, "weight", mask)
            with torch.no_grad():
                gout = torch.randn_like(dense(x))

            def fb(layer):
                def f():
                    for p in layer.parameters():
                        p.grad = None
                    x.grad = None
                    layer(x).backward(gout)
                return f

            one = fb(dense)
            t0 = time.perf_counter()
            one()
            t = time.perf_counter() - t0
            n = int(min(max(repeats * 2e-3 / max(t, 1e-6), 5), repeats))
            r = interleaved({"dense": one, "lthgan": fb(lt), "hook": fb(hook)}, n, warmup=1)
            d = r["dense"][0]
            print(f"{case:18s} {s:8g} {d * 1e3:9.2f} {r['lthgan'][0] * 1e3:9.2f} "
                  f"({r['lthgan'][0] / d:5.3f}) {r['hook'][0] * 1e3:9.2f} ({r['hook'][0] / d:5.3f})"
                  f"   [{n} rounds]")


PROBES = {"fixed": probe_fixed, "faults": probe_faults, "topk": probe_topk,
          "layers": probe_layers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=500)
    ap.add_argument("probes", nargs="*", metavar="PROBE",
                    help=f"some of {', '.join(PROBES)} (default: all)")
    args = ap.parse_args(argv)
    probes = args.probes or list(PROBES)
    bad = [p for p in probes if p not in PROBES]
    if bad:
        ap.error(f"unknown probe(s) {bad}; expected some of {', '.join(PROBES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for p in probes:
        PROBES[p](args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

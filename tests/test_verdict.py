"""The matching rules (lthgan.search.verdict) on constructed inputs, against scipy's paired test."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lthgan.search import verdict as V


def test_one_seed_rule_per_direction():
    v = V.judge_directions({"G": 10.0}, {"G": 10.0})
    assert v == {"matching": True, "matching_any": True, "matching_directions": {"G": True}}
    assert V.judge_directions({"G": 10.0 + 1e-9}, {"G": 10.0})["matching"] is False
    assert V.judge_directions({"G": 10.4}, {"G": 10.0}, tolerance=0.5)["matching"] is True
    v = V.judge_directions({"A2B": 5.0, "B2A": 9.0}, {"A2B": 6.0, "B2A": 7.0})
    assert v["matching_directions"] == {"A2B": True, "B2A": False}
    assert v["matching"] is False and v["matching_any"] is True
    v = V.judge_directions({"G": None}, {"G": 10.0})
    assert v["matching"] is None and v["matching_any"] is None


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_paired_test_is_scipys_one_sided_paired_t_test(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        dense = rng.normal(10, 1, n)
        level = dense + rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1), n)
        tol = float(rng.choice([0.0, 0.3]))
        ok, p = V.paired_test(level.tolist(), dense.tolist(), tol)
        ref = stats.ttest_rel(level - tol, dense, alternative="greater").pvalue
        assert p == pytest.approx(ref, rel=1e-9, abs=1e-12)
        assert ok == (ref >= 0.05)


def test_paired_test_decisions():
    dense = [5.0, 6.0, 7.0]
    assert V.paired_test([6.0, 7.1, 7.9], dense)[0] is False       # worse by ~1 every seed
    assert V.paired_test([4.0, 7.5, 6.8], dense)[0] is True        # scattered around dense
    assert V.paired_test([4.0, 5.0, 6.0], dense)[0] is True        # better every seed
    assert V.paired_test([5.2, 6.2, 7.2], dense, tolerance=0.5)[0] is True
    ok, p = V.paired_test(dense, dense)                            # identical: sd 0, matching
    assert ok and p == 1.0
    ok, p = V.paired_test([6.0, 7.0, 8.0], dense)                  # worse by exactly 1: sd 0
    assert not ok and p == 0.0
    with pytest.raises(ValueError, match="two or more"):
        V.paired_test([5.0], [5.0])


def test_several_seeds_per_direction():
    v = V.judge_seeds({"A2B": [6.0, 7.1, 7.9], "B2A": [4.0, 5.0, 6.0]},
                      {"A2B": [5.0, 6.0, 7.0], "B2A": [5.0, 6.0, 7.0]})
    assert v["matching_directions"] == {"A2B": False, "B2A": True}
    assert v["matching"] is False and v["matching_any"] is True
    assert v["p_values"]["A2B"] < 0.05 <= v["p_values"]["B2A"]


def test_aggregate_is_mean_and_sample_sd():
    rows = [{"fid": f, "is_mean": 2.0 + i, "sparsity": 0.2, "directions": {"A2B": {"fid": f + 1}}}
            for i, f in enumerate([4.0, 5.0, 9.0])]
    a = V.aggregate(rows)
    assert a["seeds"] == 3 and a["fid"] == pytest.approx(6.0)
    assert a["fid_sd"] == pytest.approx(float(np.std([4.0, 5.0, 9.0], ddof=1)))
    assert a["directions"]["A2B"]["fid"] == pytest.approx(7.0) and a["fids"] == [4.0, 5.0, 9.0]
    assert a["sparsity_sd"] == pytest.approx(0.0, abs=1e-12) and "kid_mean" not in a
    one = V.aggregate(rows[:1])
    assert one["fid"] == 4.0 and one["fid_sd"] is None


def test_rule_text_names_the_rule():
    assert "tolerance (0.5)" in V.rule_text(1, 0.5, ["G"])
    t = V.rule_text(3, 0.0, ["A2B", "B2A"])
    assert "3 seeds" in t and "paired t-test" in t and "95%" in t and "every direction" in t
    assert not math.isnan(V.ALPHA)

"""scripts/learning_curve.py: the tool the quick presets were tuned with (tiny preset, seconds)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("gan", ["sngan", "cyclegan"])
def test_learning_curve_rows(lc, gan, tmp_path, capsys):
    out = tmp_path / "curve.json"
    assert lc.main(["--gan", gan, "--preset", "tiny", "--set", "iterations=12", "--every", "5",
                    "--eval-samples", "40", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["config"]["iterations"] == 12
    rows = rec["rows"]
    # the untrained model first, then every 5 iterations, and the last iteration
    assert [r["iteration"] for r in rows] == [0, 5, 10, 12]
    assert rows[0]["train_s"] == 0.0 and rows[-1]["train_s"] > 0
    assert all(math.isfinite(r["fid"]) and r["fid"] > 0 for r in rows)
    if gan == "cyclegan":
        assert all(0.0 <= r["label_kept"] <= 1.0 and "fid_A2B" in r and "fid_B2A" in r for r in rows)
    else:
        assert all(r["label_kept"] is None for r in rows)
    printed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert len(printed) == len(rows)


@pytest.mark.parametrize("item, text", [("iterations", "FIELD=VALUE"), ("colour=3", "colour"),
                                        ("ema=1.5", "ema")])
def test_learning_curve_rejects_a_bad_override(lc, item, text, capsys):
    with pytest.raises(SystemExit) as e:
        lc.main(["--gan", "sngan", "--preset", "tiny", "--set", item])
    assert e.value.code == 2 and text in capsys.readouterr().err

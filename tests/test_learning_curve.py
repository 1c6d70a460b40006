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


def _curve(lc, tmp_path, name, extra=()):
    out = tmp_path / f"{name}.json"
    assert lc.main(["--gan", "cyclegan", "--preset", "tiny", "--set", "iterations=6", "--every", "3",
                    "--eval-samples", "32", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_learning_curve_of_a_ticket(lc, tmp_path):
    """--ticket trains the ticket's masked model from its start state: an all-ones ticket of
    the seed's θ0 gives exactly the dense curve, a 50% ticket another one, and its sparsity is
    recorded."""
    import torch

    from lthgan import gans
    from lthgan.prune import random_masks
    from lthgan.ticket import Ticket

    task = gans.build("cyclegan", gans.default_config("cyclegan", "tiny"), seed=0)
    theta0 = task.initial_state()
    Ticket.from_model(task.models, theta0).save(tmp_path / "ones.safetensors")
    for g in task.generators:
        random_masks(task.models[g], 0.5, generator=torch.Generator().manual_seed(1))
    Ticket.from_model(task.models, theta0).save(tmp_path / "half.safetensors")

    dense = _curve(lc, tmp_path, "dense")
    ones = _curve(lc, tmp_path, "ones", ["--ticket", str(tmp_path / "ones.safetensors")])
    half = _curve(lc, tmp_path, "half", ["--ticket", str(tmp_path / "half.safetensors")])
    assert dense["sparsity"] == ones["sparsity"] == 0.0 and half["sparsity"] == pytest.approx(0.5, abs=0.01)
    fids = lambda rec: [r["fid"] for r in rec["rows"]]  # noqa: E731
    assert fids(ones) == fids(dense)
    assert fids(half) != fids(dense)


def test_learning_curve_refuses_a_bad_ticket(lc, tmp_path, capsys):
    bad = tmp_path / "not-a-ticket.safetensors"
    bad.write_bytes(b"nonsense")
    with pytest.raises(SystemExit) as e:
        lc.main(["--gan", "sngan", "--preset", "tiny", "--ticket", str(bad)])
    assert e.value.code == 2 and "--ticket" in capsys.readouterr().err

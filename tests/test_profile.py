"""`lthgan profile` at tiny size: the GANs, a user model, --json, --trace, bad input."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lthgan import profile as lprofile
from lthgan.nn import MaskedConv2d, masked, masked_modules
from lthgan.prune import global_magnitude
from lthgan.cli import profile_command

HERE = __name__  # importable under pytest's rootdir-relative import mode


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is as fast, and far steadier on a shared machine
    (OpenMP regions otherwise wait on descheduled threads)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- user factories (referred to as f"{HERE}:name")


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 8 * 8, 4),
    )


def cnn_with_example():
    return small_cnn(), torch.randn(3, 3, 8, 8)


def transpose_net():
    return nn.Sequential(nn.ConvTranspose2d(3, 2, 4, 2, 1), nn.Tanh())


def example_input():
    """Used for factories in this module that return no example."""
    return torch.randn(2, 3, 8, 8)


def not_a_model():
    return 42


def no_prunable_layers():
    return nn.Sequential(nn.Flatten(), nn.Tanh())


def _invoke(args):
    res = CliRunner().invoke(profile_command, args, catch_exceptions=False)
    return res


def _json(args):
    res = _invoke(args + ["--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_model_factory_json_counts_ops_and_prunes():
    out = _json(["--model", f"{HERE}:small_cnn", "--steps", "2", "--warmup", "1",
                 "--sparsity", "0.5"])
    # two 3x3 convs: 3*6*9 + 6*6*9 prunable weights, half of them pruned
    n = 3 * 6 * 9 + 6 * 6 * 9
    assert out["sparsity"]["prunable_weights"] == n
    assert out["sparsity"]["reached"] == pytest.approx(round(0.5 * n) / n)
    assert out["layer_types"] == "conv"
    dense, masked_ = out["step_ms"]["dense"], out["step_ms"]["masked"]
    assert len(dense["all"]) == 2 and len(masked_["all"]) == 2
    assert all(t > 0 for t in dense["all"] + masked_["all"])
    assert out["overhead_pct"] == pytest.approx(100 * (masked_["median"] / dense["median"] - 1))
    ops = out["lthgan_ops_ms_per_step"]
    # one masked_conv2d per conv forward, one masked_convolution_backward per conv backward
    assert ops["forward"]["calls"] == 2
    assert ops["backward"]["calls"] == 2
    # the masked step's optimizer is lthgan.optim.Adam: its op is listed by name, not in a phase
    assert set(out["lthgan_ops_by_name"]) == {"lthgan::masked_conv2d",
                                              "lthgan::masked_convolution_backward",
                                              "lthgan::adam_step_"}
    assert out["lthgan_ops_by_name"]["lthgan::adam_step_"]["calls"] > 0
    for phase in ("forward", "backward"):
        d = ops[phase]
        assert d["total"] > 0
        assert d["mask"] == pytest.approx(d["total"] - d["compute"])
        assert 0 <= d["compute"] <= d["total"]
    for k in ("prune", "rewind", "reset_optimizer"):
        assert out["one_off_ms"][k] > 0
    assert out["device"] == "cpu"
    assert out["trace"] is None


def test_model_conv_plus_linear_and_example_from_factory():
    out = _json(["--model", f"{HERE}:cnn_with_example", "--layers", "conv+linear",
                 "--steps", "1", "--warmup", "0"])
    n = 3 * 6 * 9 + 6 * 6 * 9 + 6 * 8 * 8 * 4
    assert out["sparsity"]["prunable_weights"] == n
    assert abs(out["sparsity"]["reached"] - 0.74) <= 1 / n
    by = out["lthgan_ops_by_name"]
    assert by["lthgan::masked_linear"]["calls"] == 1
    assert by["lthgan::masked_linear_backward"]["calls"] == 1
    assert by["lthgan::masked_conv2d"]["calls"] == 2


def test_model_file_path_and_input_shape(tmp_path):
    src = tmp_path / "usermodel.py"
    src.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 1))\n")
    out = _json(["--model", f"{src}:build", "--input-shape", "2,2,6,6",
                 "--steps", "1", "--warmup", "0", "--sparsity", "0.9"])
    assert out["sparsity"]["prunable_weights"] == 2 * 4 * 9 + 4
    assert out["lthgan_ops_ms_per_step"]["forward"]["calls"] == 2


def test_conv_transpose_model_uses_module_example_input():
    # no example from the factory and no --input-shape: example_input() (2x3x8x8) is used
    out = _json(["--model", f"{HERE}:transpose_net", "--steps", "1", "--warmup", "0"])
    assert out["sparsity"]["prunable_weights"] == 3 * 2 * 16
    by = out["lthgan_ops_by_name"]
    assert by["lthgan::masked_conv_transpose2d"]["calls"] == 1
    assert by["lthgan::masked_convolution_backward"]["calls"] == 1


def test_input_shape_beats_module_example_input():
    # small_cnn's Linear wants 8x8 inputs: a 9x9 --input-shape must reach the model and fail
    res = CliRunner().invoke(profile_command, ["--model", f"{HERE}:small_cnn",
                                               "--input-shape", "2,3,9,9", "--steps", "1"])
    assert res.exit_code != 0
    assert "shapes cannot be multiplied" in str(res.exception)


def test_model_table():
    res = _invoke(["--model", f"{HERE}:small_cnn", "--steps", "1", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    for needle in (f"{HERE}:small_cnn on cpu", "sparsity 0.7", "time per step, dense",
                   "time per step, masked", "overhead, masked vs dense", "lthgan ops, forward",
                   "lthgan ops, backward", "one-off: prune", "one-off: rewind",
                   "one-off: reset optimizer", "lthgan::masked_conv2d",
                   "lthgan::masked_convolution_backward"):
        assert needle in res.output, needle


def test_gan_json_and_trace_prune_generator_only(tmp_path):
    from lthgan import gans

    trace = tmp_path / "sub" / "trace.json"
    out = _json(["--gan", "sngan", "--preset", "tiny", "--steps", "1", "--warmup", "0",
                 "--trace", str(trace)])
    task = gans.build("sngan", gans.default_config("sngan", "tiny"))
    n_g = sum(m.weight.numel() for _, m in masked_modules(task.models["G"])
              if isinstance(m, nn.Conv2d))
    assert out["target"] == "sngan" and out["preset"] == "tiny"
    assert out["sparsity"]["prunable_weights"] == n_g
    assert abs(out["sparsity"]["reached"] - 0.74) <= 1 / n_g
    assert out["lthgan_ops_ms_per_step"]["forward"]["calls"] > 0
    assert out["lthgan_ops_ms_per_step"]["backward"]["calls"] > 0
    assert out["trace"] == str(trace)
    data = json.loads(trace.read_text())
    names = {e.get("name") for e in data["traceEvents"]}
    assert "lthgan::masked_conv2d" in names
    assert "lthgan::masked_convolution_backward" in names


def test_cyclegan_tiny_runs():
    pytest.importorskip("lthgan.gans.cyclegan")
    out = _json(["--gan", "cyclegan", "--preset", "tiny", "--steps", "1", "--warmup", "0"])
    assert out["target"] == "cyclegan"
    names = set(out["lthgan_ops_by_name"])
    assert "lthgan::masked_conv2d" in names
    assert "lthgan::masked_conv_transpose2d" in names


@pytest.mark.parametrize("args, needle", [
    ([], "exactly one of"),
    (["--gan", "sngan", "--model", f"{HERE}:small_cnn"], "exactly one of"),
    (["--model", f"{HERE}:small_cnn", "--preset", "tiny"], "--gan only"),
    (["--gan", "sngan", "--input-shape", "1,2"], "--model only"),
    (["--model", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    (["--model", f"{HERE}:missing"], "has no attribute 'missing'"),
    (["--model", "nocolon"], "module:factory"),
    (["--model", f"{HERE}:not_a_model"], "returned a int"),
    (["--model", f"{HERE}:no_prunable_layers", "--input-shape", "2,3"], "no layer of the types"),
    (["--model", f"{HERE}:small_cnn", "--input-shape", "2,x"], "comma-separated"),
    (["--gan", "sngan", "--sparsity", "1.0"], "sparsity"),
    (["--gan", "gan9000"], "gan9000"),
])
def test_bad_input_is_a_usage_error(args, needle):
    res = CliRunner().invoke(profile_command, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_gpu_is_a_usage_error():
    res = CliRunner().invoke(profile_command, ["--model", f"{HERE}:small_cnn", "--device", "cuda"])
    assert res.exit_code == 2
    assert "torch.cuda.is_available() is False" in res.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_profile_uses_gpu_time():
    out = _json(["--model", f"{HERE}:small_cnn", "--device", "cuda", "--steps", "2"])
    assert out["lthgan_ops_ms_per_step"]["time_source"] == "cuda"
    assert out["lthgan_ops_ms_per_step"]["forward"]["calls"] == 2


def test_rewinder_restores_masked_initial_state():
    torch.manual_seed(1)
    model = masked(nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Conv2d(5, 2, 1)))
    global_magnitude(model, 0.6)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    rew = lprofile.Rewinder(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        model(torch.randn(4, 3, 6, 6)).square().mean().backward()
        opt.step()
        with torch.no_grad():  # also dirty the pruned entries, as a foreign update might
            model[0].weight.add_(1.0)
    assert not torch.equal(model[1].running_mean, ref["1.running_mean"])
    params = [p for p in model.parameters()]
    rew()
    assert [p for p in model.parameters()] == params  # identity kept
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    for _, m in masked_modules(model):
        assert torch.all(m.weight[~m.mask] == 0)
    assert isinstance(model[0], MaskedConv2d)


def test_op_time_split_sums():
    """forward + backward per-op rows add up to the phase totals."""
    out = _json(["--model", f"{HERE}:cnn_with_example", "--layers", "conv+linear",
                 "--steps", "1", "--warmup", "0"])
    by = out["lthgan_ops_by_name"]
    ops = out["lthgan_ops_ms_per_step"]
    layer = {n: d for n, d in by.items() if n.startswith("lthgan::masked_")}
    assert set(by) - set(layer) == {"lthgan::adam_step_"}
    fwd = sum(d["total"] for n, d in layer.items() if "backward" not in n)
    bwd = sum(d["total"] for n, d in layer.items() if "backward" in n)
    assert fwd == pytest.approx(ops["forward"]["total"])
    assert bwd == pytest.approx(ops["backward"]["total"])

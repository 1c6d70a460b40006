"""SNGAN (Miyato et al. 2018) as used by the paper for CIFAR-10: a ResNet generator with
BatchNorm and a spectrally normalised ResNet discriminator, trained with the hinge loss.

At the paper configuration (32×32, G 256 channels, D 128) G has 4,276,739 parameters
(3,742,464 prunable conv weights) and D 1,053,824, matching the paper's 4.28 M / 3.74 M /
1.05 M. Every conv is an ``lthgan.nn.MaskedConv2d``; G's input layer is a
``MaskedLinear`` (prunable only with ``--layers conv+linear``); D carries
``lthgan.nn.spectral_norm`` on every conv and on its final Linear.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import nn as lnn
from ..channels import ChannelGroup, Slice
from .base import (
    GANTask,
    Trainer,
    _check_betas,
    _check_float,
    _check_image_set,
    _check_positive_int,
    _Sampler,
    _set_requires_grad,
    ema_copy_,
    ema_update_,
    hinge_d_loss,
    hinge_g_loss,
)
from .family import Family, ImageData, unconditional_grid, unconditional_pairs

__all__ = ["SNGANConfig", "Generator", "Discriminator", "SNGANTrainer", "FAMILY"]


@dataclass
class SNGANConfig:
    """SNGAN architecture and training recipe (defaults: the paper's CIFAR-10 recipe).

    G maps z (``z_dim``) through a Linear to ``g_channels`` × b × b with
    b = resolution / 2**g_blocks, then ``g_blocks`` up-blocks. D is an optimized down block,
    a down block and two plain blocks of ``d_channels``. Batches are global: under DDP each
    of N processes draws batch / N. The LR is constant until ``decay_start`` × iterations and
    then decays linearly to 0 (1.0: no decay, the paper)."""

    resolution: int = 32
    channels: int = 3
    z_dim: int = 128
    g_channels: int = 256
    d_channels: int = 128
    g_blocks: int = 3
    g_batch: int = 128
    d_batch: int = 64
    n_dis: int = 5
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    ema: float = 0.999
    iterations: int = 50_000
    decay_start: float = 1.0

    def __post_init__(self):
        for name in ("resolution", "channels", "z_dim", "g_channels", "d_channels", "g_blocks",
                     "g_batch", "d_batch", "n_dis", "iterations"):
            _check_positive_int(name, getattr(self, name))
        step = 2 ** self.g_blocks
        if self.resolution % step:
            raise ValueError(f"resolution={self.resolution} must be divisible by 2**g_blocks={step}")
        if self.resolution % 4:
            raise ValueError(f"resolution={self.resolution} must be divisible by 4 (D downsamples twice)")
        _check_float("lr_g", self.lr_g, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_float("lr_d", self.lr_d, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_float("ema", self.ema, 0.0, 1.0, hi_open=True)
        _check_float("decay_start", self.decay_start, 0.0, 1.0)
        self.betas = _check_betas("betas", self.betas)


def _paper() -> SNGANConfig:
    return SNGANConfig()


def _quick() -> SNGANConfig:
    # 32x32 on 2 CPU cores: ~8.8 iterations/s with both cores free (5 on one) on the machine
    # that set it, so a round of 1000 iterations is ~2 min and a search to 0.67 (6 levels)
    # ~12 min; the 2-core machine of 2026-12-02 reaches 1.85 on one core, ~9 min a round
    # (BENCHMARKS.md, "Quick-preset searches, 3 seeds"). One D step per
    # G step and a short EMA (time constant ~50 iterations) suit the short schedule. The
    # learning curve (scripts/learning_curve.py, BENCHMARKS.md) falls from digit-FID 60
    # (untrained) to ~13 at 300-400 iterations and levels off near 5 from ~900: a round ends
    # past the steep part, so rounds are compared on where they converge, not on speed.
    return SNGANConfig(g_channels=32, d_channels=32, g_batch=32, d_batch=32, n_dis=1,
                       iterations=1000, ema=0.98)


def _tiny() -> SNGANConfig:
    return SNGANConfig(resolution=16, z_dim=16, g_channels=8, d_channels=8, g_blocks=2,
                       g_batch=8, d_batch=8, n_dis=2, iterations=20, ema=0.9)


# --------------------------------------------------------------------------- models


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3, plus a learnt up-conv1×1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.b1 = nn.BatchNorm2d(cin)
        self.c1 = lnn.MaskedConv2d(cin, cout, 3, 1, 1)
        self.b2 = nn.BatchNorm2d(cout)
        self.c2 = lnn.MaskedConv2d(cout, cout, 3, 1, 1)
        self.c_sc = lnn.MaskedConv2d(cin, cout, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(_up(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        # nearest upsampling commutes with a 1×1 conv: convolve first, 4× cheaper
        return h + _up(self.c_sc(x))


class Generator(nn.Module):
    def __init__(self, z_dim: int = 128, channels: int = 256, bottom: int = 4, blocks: int = 3,
                 out_channels: int = 3):
        super().__init__()
        self.z_dim = z_dim
        self.ch = channels
        self.bottom = bottom
        self.linear = lnn.MaskedLinear(z_dim, channels * bottom * bottom)
        self.blocks = nn.Sequential(*[GBlock(channels, channels) for _ in range(blocks)])
        self.bn = nn.BatchNorm2d(channels)
        self.conv_out = lnn.MaskedConv2d(channels, out_channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        # the width from the Linear, not self.ch: a channel-pruned G is narrower
        h = self.linear(z).view(z.shape[0], -1, self.bottom, self.bottom)
        h = self.blocks(h)
        return torch.tanh(self.conv_out(F.relu(self.bn(h))))


class OptimizedDBlock(nn.Module):
    """D's first block: conv3-ReLU-conv3-avgpool, shortcut avgpool-conv1×1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1 = lnn.MaskedConv2d(cin, cout, 3, 1, 1)
        self.c2 = lnn.MaskedConv2d(cout, cout, 3, 1, 1)
        self.c_sc = lnn.MaskedConv2d(cin, cout, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    """ReLU-conv3-ReLU-conv3[-avgpool]; a learnt 1×1 shortcut when downsampling or
    changing width, the identity otherwise."""

    def __init__(self, cin: int, cout: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = lnn.MaskedConv2d(cin, cout, 3, 1, 1)
        self.c2 = lnn.MaskedConv2d(cout, cout, 3, 1, 1)
        self.c_sc = lnn.MaskedConv2d(cin, cout, 1, 1, 0) if (downsample or cin != cout) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        sc = x
        if self.downsample:
            h = F.avg_pool2d(h, 2)
            sc = F.avg_pool2d(sc, 2)  # pooling commutes with the 1×1 conv: pool first
        if self.c_sc is not None:
            sc = self.c_sc(sc)
        return h + sc


class Discriminator(nn.Module):
    def __init__(self, channels: int = 128, in_channels: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(
            OptimizedDBlock(in_channels, channels),
            DBlock(channels, channels, downsample=True),
            DBlock(channels, channels, downsample=False),
            DBlock(channels, channels, downsample=False),
        )
        self.linear = lnn.MaskedLinear(channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h)


def _apply_spectral_norm(model: nn.Module) -> None:
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            lnn.spectral_norm(m)


# --------------------------------------------------------------------------- init


def _weight(m: nn.Module) -> Tensor:
    return lnn.raw_weight(m)


def _uniform(shape, bound: float, g: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=g)


@torch.no_grad()
def init_weights(module: nn.Module, seed: int) -> None:
    """The official init (GAN-LTH ``SNGAN/generate_initial_weights.py``, ``weights_init``
    with ``--init_type xavier_uniform``, on top of PyTorch's layer defaults): Xavier-uniform
    (gain 1) on conv weights only; conv biases and Linear weights and biases keep PyTorch's
    defaults, U(±1/√fan_in); BN γ ~ N(1, 0.02), β = 0, running stats reset. Drawn in
    ``named_modules`` order (a layer's weight, then its bias) from a CPU generator seeded
    with ``seed``, so the global RNG is neither used nor touched; pruned entries stay zero."""
    g = torch.Generator().manual_seed(seed)
    touched_sn = []
    for _, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = _weight(m)
            fan_out, fan_in = w.shape[0], w.shape[1]
            rf = w[0, 0].numel() if w.dim() > 2 else 1
            default = 1.0 / math.sqrt(fan_in * rf)  # PyTorch's kaiming_uniform_(a=√5) bound
            xavier = math.sqrt(6.0 / (fan_in * rf + fan_out * rf))
            w.copy_(_uniform(w.shape, xavier if isinstance(m, nn.Conv2d) else default, g))
            if lnn.is_masked(m):
                w.mul_(m.mask)
            if m.bias is not None:
                m.bias.copy_(_uniform(m.bias.shape, default, g))
            if _has_spectral_norm(m):
                touched_sn.append(m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.copy_(torch.empty(m.weight.shape).normal_(1.0, 0.02, generator=g))
                m.bias.zero_()
            if m.running_mean is not None:
                m.reset_running_stats()
    _refresh_spectral_norm(touched_sn)


def _has_spectral_norm(m: nn.Module) -> bool:
    return getattr(m, "sn_eps", None) is not None


@torch.no_grad()
def _refresh_spectral_norm(modules, iterations: int = 15) -> None:
    """Re-converge the power-iteration estimates (``sn_u``/``sn_v``) after the weights
    changed: each training-mode evaluation of the effective weight runs one iteration."""
    for m in modules:
        was = m.training
        m.train()
        try:
            for _ in range(iterations):
                m.effective_weight()
        finally:
            m.train(was)


def build(config: SNGANConfig, seed: int) -> GANTask:
    bottom = config.resolution // 2 ** config.g_blocks
    G = Generator(config.z_dim, config.g_channels, bottom, config.g_blocks, config.channels)
    D = Discriminator(config.d_channels, config.channels)
    models = nn.ModuleDict({"G": G, "D": D})
    init_weights(models, seed)
    # after the init, so spectral norm starts from converged estimates of these weights
    _apply_spectral_norm(D)
    return GANTask("sngan", config, models, ("G",), ("D",))


# --------------------------------------------------------------------------- training


class SNGANTrainer(Trainer):
    """Hinge-loss SNGAN training: ``n_dis`` D steps on D-batches of real and generated
    images, then one G step on a G-batch, then the EMA update of G.

    D sees real and fake images in one forward pass (one spectral-norm power iteration per
    D step). During the G step D's parameters are frozen so no D gradients are computed."""

    family = "sngan"
    _ddp_buffers = {"G": True, "D": True}  # BN running stats; spectral-norm vectors

    def _setup_data(self, data) -> None:
        _check_image_set(data, "SNGAN training data", self.config)
        self.data = data
        self.sampler = _Sampler(len(data), self._gen)
        self.d_batch = self._per_rank_batch("d_batch", self.config.d_batch)
        self.g_batch = self._per_rank_batch("g_batch", self.config.g_batch)

    def _build_extra(self) -> None:
        G = self.task.models["G"]
        self.ema = copy.deepcopy(G)
        self.ema.requires_grad_(False)
        self.ema.eval()
        self._d_params = list(self.task.models["D"].parameters())

    def _optimizer_groups(self):
        cfg = self.config
        m = self.task.models
        return {"G": (list(m["G"].parameters()), cfg.lr_g, cfg.betas),
                "D": (list(m["D"].parameters()), cfg.lr_d, cfg.betas)}

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.config.z_dim, generator=self._noise_gen, device=self.device)

    def _train_step(self) -> dict[str, Tensor]:
        cfg = self.config
        G_raw = self.task.models["G"]
        D_raw = self.task.models["D"]
        D = self._ddp["D"]
        G = self._ddp["G"]
        opt_d, opt_g = self.optimizers["D"], self.optimizers["G"]
        losses: dict[str, Tensor] = {}
        nb = self.d_batch

        for j in range(cfg.n_dis):
            real = self._real(self.data, self.sampler, nb)
            with torch.no_grad(), self._autocast():
                fake = G_raw(self._noise(nb))
            x = torch.cat((real, fake.to(real.dtype)))
            with self._autocast():
                out = D(x)
            out = out.float()
            loss = hinge_d_loss(out[:nb], out[nb:])
            losses[f"loss_d[{j}]"] = loss
            kd = self._kd("D", x, out)
            if kd is not None:
                losses[f"loss_kd[{j}]"] = kd
                loss = loss + self.kd_weight * kd
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()

        _set_requires_grad(self._d_params, False)
        try:
            z = self._noise(self.g_batch)
            with self._autocast():
                fake = G(z)
                out = D_raw(fake)
            loss_g = hinge_g_loss(out.float())
            content = self._content("G", z, fake)
            if content is not None:
                losses["loss_content"] = content
                loss_g = loss_g + content
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            _set_requires_grad(self._d_params, True)
        losses["loss_g"] = loss_g
        ema_update_(self.ema, G_raw, cfg.ema)
        return losses

    def _summarise(self, vals: dict[str, float]) -> dict[str, float]:
        out = {"loss_d": sum(vals[f"loss_d[{j}]"] for j in range(self.config.n_dis)) / self.config.n_dis,
               "loss_g": vals["loss_g"]}
        if "loss_content" in vals:
            out["loss_content"] = vals["loss_content"]
        if self.kd_teacher is not None:
            out["loss_kd"] = sum(vals[f"loss_kd[{j}]"] for j in range(self.config.n_dis)) / self.config.n_dis
        return out

    def _reset_extra(self) -> None:
        ema_copy_(self.ema, self.task.models["G"])

    def _extra_state(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def _load_extra_state(self, state: Mapping) -> None:
        self.ema.load_state_dict(state["ema"])

    def _local_state(self) -> dict:
        s = super()._local_state()
        s["sampler"] = self.sampler.state_dict()
        return s

    def _load_local_state(self, state: Mapping) -> None:
        super()._load_local_state(state)
        self.sampler.load_state_dict(state["sampler"])

    def eval_models(self) -> dict[str, nn.Module]:
        """``{"G": the EMA copy of G}`` (eval mode; its masks are G's)."""
        return {"G": self.ema}


# --------------------------------------------------------------------------- channel groups


def channel_groups(config: SNGANConfig) -> dict[str, list[ChannelGroup]]:
    """G's tied channels (:mod:`lthgan.channels`). ``stream{i}`` is what enters block i (the
    Linear's output viewed as C × b × b for i = 0, else block i-1's c2 and c_sc outputs, which
    are summed), read by block i's b1, c1 and c_sc (or, after the last block, by the final
    bn and conv_out), scored by the norm that reads it. ``block{i}.inner`` is c1's output,
    normalised by b2 and read by c2, scored by b2. ``rgb``, conv_out's outputs, is never
    pruned."""
    bottom = config.resolution // 2 ** config.g_blocks
    c, n = config.g_channels, config.g_blocks
    groups = []
    for i in range(n + 1):
        if i == 0:
            made = [Slice("linear", "out", repeat=bottom * bottom)]
        else:
            made = [Slice(f"blocks.{i - 1}.c2", "out"), Slice(f"blocks.{i - 1}.c_sc", "out")]
        if i < n:
            norm = f"blocks.{i}.b1"
            read = [Slice(norm, "norm"), Slice(f"blocks.{i}.c1", "in"), Slice(f"blocks.{i}.c_sc", "in")]
        else:
            norm = "bn"
            read = [Slice(norm, "norm"), Slice("conv_out", "in")]
        groups.append(ChannelGroup(f"stream{i}", c, tuple(made + read), score_norm=norm))
        if i < n:
            b = f"blocks.{i}"
            groups.append(ChannelGroup(f"block{i}.inner", c, (
                Slice(f"{b}.c1", "out"), Slice(f"{b}.b2", "norm"), Slice(f"{b}.c2", "in")),
                score_norm=f"{b}.b2"))
    groups.append(ChannelGroup("rgb", config.channels, (Slice("conv_out", "out"),), score_norm=None,
                               prunable=False))
    return {"G": groups}


# --------------------------------------------------------------------------- the family


def _batch_override(config: SNGANConfig, batch_size: int) -> dict:
    """A search's batch size is D's; G's keeps the preset's ratio (2x in the paper)."""
    return {"d_batch": batch_size,
            "g_batch": max(1, int(round(batch_size * config.g_batch / config.d_batch)))}


FAMILY = Family(
    name="sngan",
    title="SNGAN (Miyato et al. 2018): ResNet G with BatchNorm, spectrally normalised ResNet D, "
          "hinge loss",
    config_class=SNGANConfig,
    presets={"tiny": _tiny, "quick": _quick, "paper": _paper},
    build=build,
    init_weights=init_weights,
    trainer=SNGANTrainer,
    eval_pairs=unconditional_pairs,
    sample_grid=unconditional_grid,
    batch_override=_batch_override,
    data=ImageData(),
    default_data="digits",
    # the paper's last matching SNGAN ticket: 5 rounds of 20%, 1 - 0.8^5 = 67.232%
    default_target=0.67232,
    # generated images per evaluation (the paper: 50k)
    eval_samples={"tiny": 128, "quick": 1000, "paper": 50_000},
    reference_split="train",  # samples are judged against the training set, as in the paper
    channel_groups=channel_groups,
)

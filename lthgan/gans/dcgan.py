"""DCGAN (Radford et al. 2016) at 32×32: a generator of transposed convolutions with
BatchNorm and ReLU, a discriminator of strided convolutions with BatchNorm and LeakyReLU 0.2,
the non-saturating GAN loss, Adam 2e-4 with betas (0.5, 0.999).

The generator maps z ∈ R^``z_dim`` (a 1×1 map) through a 4×4 transposed conv to
2^(k-1)·``g_filters`` channels at 4×4, then k stride-2 transposed convs (k = log2(res/4)),
halving the width each time and ending in ``channels`` outputs and tanh. The discriminator
mirrors it: k stride-2 convs (no BatchNorm on the first), then a 4×4 conv to one logit. Every
conv and transposed conv is an ``lthgan.nn`` masked layer; as in the reference implementation,
convs feeding a BatchNorm have no bias, and the init is N(0, 0.02) on every conv and
N(1, 0.02) / 0 on BatchNorm's γ / β.
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
)
from .family import Family, ImageData, single_batch_override, unconditional_grid, unconditional_pairs

__all__ = ["DCGANConfig", "Generator", "Discriminator", "DCGANTrainer", "FAMILY"]


@dataclass
class DCGANConfig:
    """DCGAN architecture and training recipe (defaults: CIFAR-10 at 32×32).

    ``batch`` is global (split across DDP processes); one D step then one G step per
    iteration. ``ema`` > 0 evaluates an exponential moving average of G (0: G itself, as in
    the DCGAN paper). The LR is constant until ``decay_start`` × iterations, then decays
    linearly to 0 (1.0: no decay)."""

    resolution: int = 32
    channels: int = 3
    z_dim: int = 100
    g_filters: int = 64
    d_filters: int = 64
    batch: int = 128
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    iterations: int = 50_000
    decay_start: float = 1.0
    ema: float = 0.0

    def __post_init__(self):
        for name in ("resolution", "channels", "z_dim", "g_filters", "d_filters", "batch", "iterations"):
            _check_positive_int(name, getattr(self, name))
        k = math.log2(self.resolution / 4) if self.resolution >= 8 else 0
        if self.resolution < 8 or k != int(k):
            raise ValueError(f"resolution={self.resolution} must be 4·2^k with k >= 1 (8, 16, 32, 64, ...)")
        _check_float("lr", self.lr, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_float("decay_start", self.decay_start, 0.0, 1.0)
        _check_float("ema", self.ema, 0.0, 1.0, hi_open=True)
        self.betas = _check_betas("betas", self.betas)

    @property
    def n_up(self) -> int:
        """Stride-2 layers between 4×4 and the output resolution."""
        return int(math.log2(self.resolution // 4))


def _paper() -> DCGANConfig:
    # DCGAN's recipe; 50k iterations at batch 128 (≈128 epochs of CIFAR-10), as SNGAN's rounds
    return DCGANConfig()


def _quick() -> DCGANConfig:
    # 32x32 digits on 2 CPU cores. Measured learning curve (scripts/learning_curve.py, seed 0,
    # one thread, 2026-12-02): digit-FID 116 untrained, 53 at 500 iterations, 39 at 1000, 32 at
    # 1500, 24 at 2000, still falling; DCGAN learns the digits more slowly than SNGAN (5 at 1000).
    # 2000 iterations (~4 it/s on one core, ~8 min a round) end past the steepest part.
    return DCGANConfig(g_filters=32, d_filters=32, batch=64, iterations=2000)


def _tiny() -> DCGANConfig:
    return DCGANConfig(resolution=16, z_dim=16, g_filters=8, d_filters=8, batch=8, iterations=20)


# --------------------------------------------------------------------------- models


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, filters: int = 64, n_up: int = 3, out_channels: int = 3):
        super().__init__()
        self.z_dim = z_dim
        width = filters * 2 ** (n_up - 1)
        layers: list[nn.Module] = [lnn.MaskedConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [lnn.MaskedConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [lnn.MaskedConvTranspose2d(width, out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, filters: int = 64, n_down: int = 3, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [lnn.MaskedConv2d(in_channels, filters, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        width = filters
        for _ in range(n_down - 1):
            layers += [lnn.MaskedConv2d(width, width * 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [lnn.MaskedConv2d(width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0], 1)


@torch.no_grad()
def init_weights(module: nn.Module, seed: int) -> None:
    """N(0, 0.02) on conv and transposed-conv weights, BatchNorm γ ~ N(1, 0.02) and β = 0,
    drawn in ``named_modules`` order from a CPU generator seeded with ``seed``; pruned
    entries stay zero."""
    g = torch.Generator().manual_seed(seed)
    for _, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = lnn.raw_weight(m)
            w.copy_(torch.empty(w.shape).normal_(0.0, 0.02, generator=g))
            if lnn.is_masked(m):
                w.mul_(m.mask)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.empty(m.weight.shape).normal_(1.0, 0.02, generator=g))
            m.bias.zero_()
            m.reset_running_stats()


def channel_groups(config: DCGANConfig) -> dict[str, list[ChannelGroup]]:
    """G's tied channels (:mod:`lthgan.channels`): ``up{i}``, the outputs of the i-th hidden
    transposed conv (``net.{3i}``), normalised by its BatchNorm (``net.{3i+1}``, the score)
    and read by the next transposed conv (``net.{3i+3}``); ``rgb``, the last transposed
    conv's outputs, is never pruned."""
    groups = []
    width = config.g_filters * 2 ** (config.n_up - 1)
    for i in range(config.n_up):
        conv, norm, nxt = f"net.{3 * i}", f"net.{3 * i + 1}", f"net.{3 * i + 3}"
        groups.append(ChannelGroup(f"up{i}", width, (
            Slice(conv, "out"), Slice(norm, "norm"), Slice(nxt, "in")), score_norm=norm))
        width //= 2
    last = f"net.{3 * config.n_up}"
    groups.append(ChannelGroup("rgb", config.channels, (Slice(last, "out"),), score_norm=None,
                               prunable=False))
    return {"G": groups}


def build(config: DCGANConfig, seed: int) -> GANTask:
    models = nn.ModuleDict({
        "G": Generator(config.z_dim, config.g_filters, config.n_up, config.channels),
        "D": Discriminator(config.d_filters, config.n_up, config.channels),
    })
    init_weights(models, seed)
    return GANTask("dcgan", config, models, ("G",), ("D",))


# --------------------------------------------------------------------------- training


def ns_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """Non-saturating D loss: BCE(D(x), 1) + BCE(D(G(z)), 0), from logits."""
    return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()


def ns_g_loss(fake_out: Tensor) -> Tensor:
    """Non-saturating G loss: BCE(D(G(z)), 1) = mean(softplus(-D(G(z))))."""
    return F.softplus(-fake_out).mean()


class DCGANTrainer(Trainer):
    """One iteration: a D step on a real batch and a batch of fakes (separate forward passes,
    so BatchNorm sees each on its own, as in the DCGAN reference), then a G step on the same
    fakes with D frozen, then the EMA update of G when ``config.ema`` > 0."""

    family = "dcgan"
    _ddp_buffers = {"G": True, "D": True}  # BatchNorm running stats

    def _setup_data(self, data) -> None:
        _check_image_set(data, "DCGAN training data", self.config)
        self.data = data
        self.sampler = _Sampler(len(data), self._gen)
        self.batch = self._per_rank_batch("batch", self.config.batch)

    def _build_extra(self) -> None:
        self._d_params = list(self.task.models["D"].parameters())
        self.ema = None
        if self.config.ema > 0:
            self.ema = copy.deepcopy(self.task.models["G"]).requires_grad_(False).eval()

    def _optimizer_groups(self):
        cfg, m = self.config, self.task.models
        return {"G": (list(m["G"].parameters()), cfg.lr, cfg.betas),
                "D": (list(m["D"].parameters()), cfg.lr, cfg.betas)}

    def _train_step(self) -> dict[str, Tensor]:
        G, D = self._ddp["G"], self._ddp["D"]
        opt_d, opt_g = self.optimizers["D"], self.optimizers["G"]
        real = self._real(self.data, self.sampler, self.batch)
        z = torch.randn(self.batch, self.config.z_dim, generator=self._noise_gen, device=self.device)
        with self._autocast():
            fake = G(z)
            real_out = D(real).float()
            fake_out = D(fake.detach()).float()
        loss_d = ns_d_loss(real_out, fake_out)
        losses = {"loss_d": loss_d}
        loss = loss_d
        if self.kd_teacher is not None:
            kd = 0.5 * (self._kd("D", real, real_out) + self._kd("D", fake.detach(), fake_out))
            losses["loss_kd"] = kd
            loss = loss + self.kd_weight * kd
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

        _set_requires_grad(self._d_params, False)
        try:
            with self._autocast():
                out = self.task.models["D"](fake).float()
            loss_g = ns_g_loss(out)
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
        if self.ema is not None:
            ema_update_(self.ema, self.task.models["G"], self.config.ema)
        return losses

    def _reset_extra(self) -> None:
        if self.ema is not None:
            ema_copy_(self.ema, self.task.models["G"])

    def _extra_state(self) -> dict:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def _load_extra_state(self, state: Mapping) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def _local_state(self) -> dict:
        return {**super()._local_state(), "sampler": self.sampler.state_dict()}

    def _load_local_state(self, state: Mapping) -> None:
        super()._load_local_state(state)
        self.sampler.load_state_dict(state["sampler"])

    def eval_models(self) -> dict[str, nn.Module]:
        """``{"G": G}``, or its EMA copy when ``config.ema`` > 0."""
        return {"G": self.ema if self.ema is not None else self.task.models["G"]}


# --------------------------------------------------------------------------- the family

FAMILY = Family(
    name="dcgan",
    title="DCGAN (Radford et al. 2016): transposed-conv G with BatchNorm and ReLU, conv D with "
          "LeakyReLU, non-saturating loss",
    config_class=DCGANConfig,
    presets={"tiny": _tiny, "quick": _quick, "paper": _paper},
    build=build,
    init_weights=init_weights,
    trainer=DCGANTrainer,
    eval_pairs=unconditional_pairs,
    sample_grid=unconditional_grid,
    batch_override=single_batch_override,
    data=ImageData(),
    default_data="digits",
    default_target=0.67232,  # no paper figure for DCGAN: SNGAN's 5 rounds of 20% (1 - 0.8^5)
    eval_samples={"tiny": 128, "quick": 1000, "paper": 50_000},
    reference_split="train",
    channel_groups=channel_groups,
)

"""CycleGAN (Zhu et al. 2017) as used by the paper for horse2zebra: two ResNet generators
(A→B and B→A) with InstanceNorm and transposed-conv upsampling, two 70×70 PatchGAN
discriminators, least-squares GAN loss on per-image scores (each patch map's mean), cycle
×10, identity ×5, a history buffer of 50 fakes and an LR that decays linearly to 0 over
the second half of training.

At the paper configuration (256×256, 64 filters, 9 blocks) each generator has 11,383,555
parameters (the paper: 11.38 M) and each PatchGAN 2,766,529, the official code's counts
(``norm_affine="official"``; 11,378,179 and 2,764,737 with ``"none"``); either way
11,372,928 of G's are prunable conv weights. Every conv and transposed conv is an
``lthgan.nn`` masked layer.

``D_A`` judges domain-A images (real A against ``G_BA``'s fakes), ``D_B`` domain B.
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
    EvalPair,
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
    lsgan_loss,
)
from .family import EvalData, Family, UnpairedData, single_batch_override

NORM_AFFINE = ("official", "none")

__all__ = ["CycleGANConfig", "ResnetGenerator", "PatchDiscriminator", "HistoryBuffer",
           "CycleGANTrainer", "FAMILY", "image_scores"]


@dataclass
class CycleGANConfig:
    """CycleGAN architecture and training recipe (defaults: the paper's horse2zebra recipe).

    ``iterations`` = 200 epochs of max(|A|, |B|) = 1334 images at batch 1; the LR is
    constant for the first ``decay_start`` share of the iterations and then decays linearly
    to 0. ``batch`` is global: under DDP each of N processes draws batch / N. ``ema`` > 0
    evaluates exponential moving averages of the generators (decay ``ema`` per iteration)
    instead of the generators themselves; 0 (the paper) evaluates the trained generators.

    ``norm_affine``: which InstanceNorms learn a scale and shift. "official" (the paper): as
    the official code's default ``--upsample transconv`` models (VITA-Group/GAN-LTH,
    ``CycleGAN/models.py``: ``Generator``, ``Discriminator``): in G the norms after the
    first conv, the first down conv, each residual block's first conv and both up convs;
    not after the second down conv nor after a residual block's second conv. In D every
    norm. "none": no affine norm anywhere (lthgan before issue 12)."""

    resolution: int = 256
    channels: int = 3
    g_filters: int = 64
    d_filters: int = 64
    n_blocks: int = 9
    d_layers: int = 3
    batch: int = 1
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    pool_size: int = 50
    iterations: int = 266_800
    decay_start: float = 0.5
    ema: float = 0.0
    norm_affine: str = "official"

    def __post_init__(self):
        for name in ("resolution", "channels", "g_filters", "d_filters", "n_blocks", "d_layers",
                     "batch", "iterations"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("pool_size", self.pool_size, minimum=0)
        if self.resolution % 4:
            raise ValueError(f"resolution={self.resolution} must be divisible by 4 "
                             "(the generator downsamples twice)")
        out = patch_output_size(self.resolution, self.d_layers)
        if out < 1:
            need = 3 * 2 ** self.d_layers
            raise ValueError(f"a PatchGAN with d_layers={self.d_layers} needs resolution >= {need}, "
                             f"got {self.resolution}; lower d_layers")
        _check_float("lr", self.lr, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_float("cycle_weight", self.cycle_weight, 0.0, math.inf, hi_open=True)
        _check_float("identity_weight", self.identity_weight, 0.0, math.inf, hi_open=True)
        _check_float("decay_start", self.decay_start, 0.0, 1.0)
        _check_float("ema", self.ema, 0.0, 1.0, hi_open=True)
        self.betas = _check_betas("betas", self.betas)
        _affine(self.norm_affine)


def patch_output_size(resolution: int, d_layers: int) -> int:
    """Side of the PatchGAN's output map: ``d_layers`` stride-2 k4 convs, then two stride-1."""
    s = resolution
    for _ in range(d_layers):
        s = (s + 2 - 4) // 2 + 1
    return s - 2


# every preset keeps the paper's norm_affine="official", the official models: no measurement
# argues for another choice (the quick figures below predate it, issue 12)


def _paper() -> CycleGANConfig:
    return CycleGANConfig()


def _quick() -> CycleGANConfig:
    # 32x32 on 2 CPU cores: ~17 iterations/s with both cores free (12 on one) on the machine
    # that set it, so a round is ~1 min and a search to 0.74 (8 levels) ~9 min; the 2-core
    # machine of 2026-12-02 reaches 3.3-4.7 on one core, ~4 min a round (BENCHMARKS.md,
    # "Quick-preset searches, 3 seeds"). Measured learning curves
    # (scripts/learning_curve.py; BENCHMARKS.md, "Quick presets"): the trained generators'
    # A2B digit-FID swings between ~7 and ~32 from one checkpoint to the next, and from
    # ~1000 iterations on it drifts up (busier photo textures over the digit), with or
    # without the LR decay. An EMA of the generators (0.995) removes the swings, and at
    # 1000 iterations with a constant LR it sits at its best (mean FID 6.8 and 6.3 for
    # seeds 0 and 1). So: EMA generators, 1000 iterations, no decay.
    return CycleGANConfig(resolution=32, g_filters=16, d_filters=16, n_blocks=3, d_layers=2,
                          batch=4, iterations=1000, pool_size=50, decay_start=1.0, ema=0.995)


def _tiny() -> CycleGANConfig:
    return CycleGANConfig(resolution=16, g_filters=8, d_filters=8, n_blocks=1, d_layers=2,
                          batch=2, iterations=20, pool_size=4)


# --------------------------------------------------------------------------- models


def _norm(c: int, affine: bool = False) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=affine, track_running_stats=False)


def _affine(norm_affine: str) -> bool:
    if norm_affine not in NORM_AFFINE:
        raise ValueError(f"norm_affine must be one of {', '.join(NORM_AFFINE)}, got {norm_affine!r}")
    return norm_affine == "official"


class ResnetBlock(nn.Module):
    """Two reflect-pad conv3 + InstanceNorm, ReLU between, identity shortcut; ``affine``
    gives the first norm a scale and shift (the second never has one, as officially)."""

    def __init__(self, c: int, affine: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), lnn.MaskedConv2d(c, c, 3), _norm(c, affine), nn.ReLU(True),
            nn.ReflectionPad2d(1), lnn.MaskedConv2d(c, c, 3), _norm(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Reflect-pad conv7, two stride-2 conv3 downs, ``n_blocks`` residual blocks, two
    stride-2 ConvTranspose2d ups, reflect-pad conv7, tanh; InstanceNorm throughout, affine
    where :class:`CycleGANConfig`'s ``norm_affine`` says."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, filters: int = 64, n_blocks: int = 9,
                 norm_affine: str = "official"):
        super().__init__()
        f = filters
        a = _affine(norm_affine)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), lnn.MaskedConv2d(in_channels, f, 7), _norm(f, a), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            # officially the first down conv's norm is affine, the second's not
            layers += [lnn.MaskedConv2d(f * m, f * m * 2, 3, stride=2, padding=1), _norm(f * m * 2, a and i == 0),
                       nn.ReLU(True)]
        layers += [ResnetBlock(f * 4, a) for _ in range(n_blocks)]
        for i in range(2):
            m = 2 ** (2 - i)
            layers += [lnn.MaskedConvTranspose2d(f * m, f * m // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(f * m // 2, a), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), lnn.MaskedConv2d(f, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: k4 s2 conv + LReLU(0.2); ``d_layers - 1`` more k4 s2 convs and one k4 s1
    conv, each with InstanceNorm + LReLU (widths doubling, capped at 8× filters); a final
    k4 s1 conv to one channel. ``d_layers=3`` is the 70×70 PatchGAN. Its output is the
    patch map; the LSGAN loss averages it per image (:func:`image_scores`)."""

    def __init__(self, in_channels: int = 3, filters: int = 64, d_layers: int = 3, norm_affine: str = "official"):
        super().__init__()
        f = filters
        a = _affine(norm_affine)
        layers: list[nn.Module] = [lnn.MaskedConv2d(in_channels, f, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, d_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [lnn.MaskedConv2d(f * prev, f * mult, 4, 2, 1), _norm(f * mult, a), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** d_layers, 8)
        layers += [lnn.MaskedConv2d(f * prev, f * mult, 4, 1, 1), _norm(f * mult, a), nn.LeakyReLU(0.2, True)]
        layers += [lnn.MaskedConv2d(f * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def image_scores(patch_map: Tensor) -> Tensor:
    """One score per image: the mean of a PatchGAN's output map (the official
    ``Discriminator.forward``'s ``avg_pool2d`` over the whole map)."""
    return patch_map.flatten(1).mean(1)


@torch.no_grad()
def init_weights(module: nn.Module, seed: int) -> None:
    """N(0, 0.02) on conv, transposed-conv and linear weights, zero biases; affine
    InstanceNorms get γ = 1, β = 0 (the official ``weights_init_normal`` leaves them at
    PyTorch's defaults), BatchNorms γ ~ N(1, 0.02), β = 0. Drawn in ``named_modules`` order
    from a CPU generator seeded with ``seed``; pruned entries stay zero."""
    g = torch.Generator().manual_seed(seed)
    for _, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = lnn.raw_weight(m)
            w.copy_(torch.empty(w.shape).normal_(0.0, 0.02, generator=g))
            if lnn.is_masked(m):
                w.mul_(m.mask)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.copy_(torch.empty(m.weight.shape).normal_(1.0, 0.02, generator=g))
                m.bias.zero_()


def _generator_groups(config: CycleGANConfig) -> list[ChannelGroup]:
    """One :class:`ResnetGenerator`'s tied channels, by its ``model`` indices: 1 conv7,
    4 and 7 the down convs, 10 .. 9+n the residual blocks (``body``: 1 conv, 2 norm, 5 conv,
    6 norm), 10+n and 13+n the up convs, 17+n the output conv7; a conv's norm follows it."""
    f, n = config.g_filters, config.n_blocks
    affine = _affine(config.norm_affine)
    up0, up1, out = 10 + n, 13 + n, 17 + n

    def group(name, size, made, norm, reads, scored=affine):
        sl = (Slice(f"model.{made}", "out"), Slice(f"model.{norm}", "norm"), Slice(reads, "in"))
        return ChannelGroup(name, size, sl, score_norm=f"model.{norm}" if scored else None)

    blocks = [f"model.{10 + i}.body" for i in range(n)]
    # the residual stream: down1's output and every block's second conv add into it; its
    # norms have no scale (officially), so its score is the L1 of its producers' filters
    stream = [Slice("model.7", "out"), Slice("model.8", "norm")]
    for b in blocks:
        stream += [Slice(f"{b}.1", "in"), Slice(f"{b}.5", "out"), Slice(f"{b}.6", "norm")]
    stream.append(Slice(f"model.{up0}", "in"))
    return [
        group("conv_in", f, 1, 2, "model.4"),
        group("down0", 2 * f, 4, 5, "model.7"),
        ChannelGroup("stream", 4 * f, tuple(stream), score_norm=None),
        *[ChannelGroup(f"block{i}.inner", 4 * f, (
            Slice(f"{b}.1", "out"), Slice(f"{b}.2", "norm"), Slice(f"{b}.5", "in")),
            score_norm=f"{b}.2" if affine else None) for i, b in enumerate(blocks)],
        group("up0", 2 * f, up0, up0 + 1, f"model.{up1}"),
        group("up1", f, up1, up1 + 1, f"model.{out}"),
        ChannelGroup("rgb", config.channels, (Slice(f"model.{out}", "out"),), score_norm=None,
                     prunable=False),
    ]


def channel_groups(config: CycleGANConfig) -> dict[str, list[ChannelGroup]]:
    """Each generator's tied channels (:mod:`lthgan.channels`), the same for both: the first
    conv7's outputs (``conv_in``) and the first down conv's (``down0``), scored by their
    affine norms; the residual ``stream`` (the second down conv's outputs, every block's
    second conv outputs, the identity adds, the first up conv's inputs) as ONE group across
    all blocks; each block's inner channels (``block{i}.inner``); the two up convs' outputs
    (``up0``, ``up1``); ``rgb``, never pruned. Groups without an affine norm (the stream;
    everything under ``norm_affine="none"``) are scored by their producers' filter L1."""
    return {"G_AB": _generator_groups(config), "G_BA": _generator_groups(config)}


def build(config: CycleGANConfig, seed: int) -> GANTask:
    c = config.channels
    models = nn.ModuleDict({
        "G_AB": ResnetGenerator(c, c, config.g_filters, config.n_blocks, config.norm_affine),
        "G_BA": ResnetGenerator(c, c, config.g_filters, config.n_blocks, config.norm_affine),
        "D_A": PatchDiscriminator(c, config.d_filters, config.d_layers, config.norm_affine),
        "D_B": PatchDiscriminator(c, config.d_filters, config.d_layers, config.norm_affine),
    })
    init_weights(models, seed)
    return GANTask("cyclegan", config, models, ("G_AB", "G_BA"), ("D_A", "D_B"))


# --------------------------------------------------------------------------- history buffer


class HistoryBuffer:
    """The CycleGAN image pool: until it holds ``size`` images every fake is stored and
    returned; after that each fake is, with probability 1/2, swapped for a random stored
    one (which is returned) and otherwise returned as is. Choices use ``generator``."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size = size
        self.generator = generator
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        fakes = fakes.detach()
        out = []
        # one draw per image: the coin, then the slot (drawn even when unused, so the
        # stream does not depend on the pool's fill level once it is full)
        for img in fakes:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
                continue
            coin, slot = torch.rand(2, generator=self.generator).tolist()
            if coin < 0.5:
                i = min(int(slot * self.size), self.size - 1)
                out.append(self.images[i])
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def clear(self) -> None:
        self.images = []

    def state_dict(self) -> dict:
        imgs = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": imgs}

    def load_state_dict(self, state: Mapping, device: torch.device) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"history buffer state has size {state['size']}, this buffer {self.size}")
        imgs = state["images"]
        self.images = [im.to(device) for im in imgs] if imgs.numel() else []


# --------------------------------------------------------------------------- training


class CycleGANTrainer(Trainer):
    """One iteration: a G step on both generators (LSGAN + cycle + identity), then a D
    step on both discriminators, each judging a real batch against history-buffer fakes
    in one forward pass (the loss halved, as in CycleGAN). One Adam for the two Gs and
    one for the two Ds."""

    family = "cyclegan"
    # InstanceNorm keeps no running stats and masks only change between rounds, so no
    # per-forward buffer broadcast (the generators run twice per backward)
    _ddp_buffers = {"G_AB": False, "G_BA": False, "D_A": False, "D_B": False}

    def _setup_data(self, data) -> None:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError("CycleGAN training data must be a pair (A_train, B_train) of ImageSets, "
                            f"not {type(data).__name__}")
        _check_image_set(data[0], "CycleGAN domain-A data", self.config)
        _check_image_set(data[1], "CycleGAN domain-B data", self.config)
        self.data_A, self.data_B = data
        self.sampler_A = _Sampler(len(self.data_A), self._gen)
        self.sampler_B = _Sampler(len(self.data_B), self._gen)
        self.batch = self._per_rank_batch("batch", self.config.batch)

    def _build_extra(self) -> None:
        self.pool_A = HistoryBuffer(self.config.pool_size, self._gen)
        self.pool_B = HistoryBuffer(self.config.pool_size, self._gen)
        m = self.task.models
        self._d_params = list(m["D_A"].parameters()) + list(m["D_B"].parameters())
        self.ema: dict[str, nn.Module] = {}
        if self.config.ema > 0:
            for g in ("G_AB", "G_BA"):
                e = copy.deepcopy(m[g])
                e.requires_grad_(False)
                self.ema[g] = e.eval()

    def _optimizer_groups(self):
        cfg = self.config
        m = self.task.models
        return {"G": (list(m["G_AB"].parameters()) + list(m["G_BA"].parameters()), cfg.lr, cfg.betas),
                "D": (self._d_params, cfg.lr, cfg.betas)}

    def _train_step(self) -> dict[str, Tensor]:
        b = self.batch
        real_A = self._real(self.data_A, self.sampler_A, b)
        real_B = self._real(self.data_B, self.sampler_B, b)
        losses, fake_A, fake_B = self._g_step(real_A, real_B)
        losses.update(self._d_step(real_A, real_B, fake_A, fake_B))
        return losses

    def _g_step(self, real_A: Tensor, real_B: Tensor):
        """Both generators (D frozen): LSGAN + cycle + identity; then their EMA."""
        cfg = self.config
        m = self.task.models
        G_AB, G_BA = self._ddp["G_AB"], self._ddp["G_BA"]
        b = self.batch
        idt = cfg.identity_weight > 0
        _set_requires_grad(self._d_params, False)
        try:
            with self._autocast():
                if idt:  # one pass per generator over its source and its identity input
                    fake_B, idt_B = G_AB(torch.cat((real_A, real_B))).split(b)
                    fake_A, idt_A = G_BA(torch.cat((real_B, real_A))).split(b)
                else:
                    fake_B = G_AB(real_A)
                    fake_A = G_BA(real_B)
                rec_A = G_BA(fake_B)
                rec_B = G_AB(fake_A)
                pred_B = m["D_B"](fake_B)
                pred_A = m["D_A"](fake_A)
            # as officially, the MSE is over one score per image (the patch map's mean)
            loss_gan = lsgan_loss(image_scores(pred_B.float()), 1.0) + lsgan_loss(image_scores(pred_A.float()), 1.0)
            loss_cyc = F.l1_loss(rec_A.float(), real_A) + F.l1_loss(rec_B.float(), real_B)
            loss_g = loss_gan + cfg.cycle_weight * loss_cyc
            losses = {"loss_g_gan": loss_gan, "loss_cycle": loss_cyc}
            if idt:
                loss_idt = F.l1_loss(idt_A.float(), real_A) + F.l1_loss(idt_B.float(), real_B)
                loss_g = loss_g + cfg.identity_weight * loss_idt
                losses["loss_identity"] = loss_idt
            for g, src, out in (("G_AB", real_A, fake_B), ("G_BA", real_B, fake_A)):
                content = self._content(g, src, out)
                if content is not None:
                    losses[f"loss_content_{g}"] = content
                    loss_g = loss_g + content
            losses["loss_g"] = loss_g
            opt_g = self.optimizers["G"]
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            _set_requires_grad(self._d_params, True)
        for g, e in self.ema.items():
            ema_update_(e, m[g], cfg.ema)
        return losses, fake_A, fake_B

    def _d_step(self, real_A: Tensor, real_B: Tensor, fake_A: Tensor, fake_B: Tensor) -> dict[str, Tensor]:
        """Both discriminators, each judging a real batch against history-buffer fakes."""
        D_A, D_B = self._ddp["D_A"], self._ddp["D_B"]
        b = self.batch
        losses: dict[str, Tensor] = {}
        pool_A = self.pool_A.query(fake_A.detach().float())
        pool_B = self.pool_B.query(fake_B.detach().float())
        xa = torch.cat((real_A, pool_A))
        xb = torch.cat((real_B, pool_B))
        with self._autocast():
            oa = D_A(xa).float()
            ob = D_B(xb).float()
        sa, sb = image_scores(oa), image_scores(ob)
        loss_da = 0.5 * (lsgan_loss(sa[:b], 1.0) + lsgan_loss(sa[b:], 0.0))
        loss_db = 0.5 * (lsgan_loss(sb[:b], 1.0) + lsgan_loss(sb[b:], 0.0))
        loss_d = loss_da + loss_db
        losses["loss_d_A"] = loss_da
        losses["loss_d_B"] = loss_db
        if self.kd_teacher is not None:
            kd = self._kd("D_A", xa, oa) + self._kd("D_B", xb, ob)
            losses["loss_kd"] = kd
            loss_d = loss_d + self.kd_weight * kd
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        return losses

    def _reset_extra(self) -> None:
        self.pool_A.clear()
        self.pool_B.clear()
        for g, e in self.ema.items():
            ema_copy_(e, self.task.models[g])

    def _extra_state(self) -> dict:
        return {f"ema_{g}": e.state_dict() for g, e in self.ema.items()}

    def _load_extra_state(self, state: Mapping) -> None:
        for g, e in self.ema.items():
            e.load_state_dict(state[f"ema_{g}"])

    def _local_state(self) -> dict:
        s = super()._local_state()
        s["sampler_A"] = self.sampler_A.state_dict()
        s["sampler_B"] = self.sampler_B.state_dict()
        s["pool_A"] = self.pool_A.state_dict()
        s["pool_B"] = self.pool_B.state_dict()
        return s

    def _load_local_state(self, state: Mapping) -> None:
        super()._load_local_state(state)
        self.sampler_A.load_state_dict(state["sampler_A"])
        self.sampler_B.load_state_dict(state["sampler_B"])
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)

    def eval_models(self) -> dict[str, nn.Module]:
        """``{"G_AB": ..., "G_BA": ...}``: the trained generators, or their EMA copies when
        ``config.ema`` > 0 (eval mode; their masks are the generators')."""
        if self.ema:
            return dict(self.ema)
        m = self.task.models
        return {"G_AB": m["G_AB"], "G_BA": m["G_BA"]}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def translate(G: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """``G`` applied to float [-1, 1] ``images`` in batches (eval mode); float32 CPU out."""
    dev = next(G.parameters()).device
    was = G.training
    G.eval()
    try:
        out = [G(images[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        G.train(was)
    return torch.cat(out).clamp_(-1.0, 1.0) if out else images.new_empty((0,) + tuple(images.shape[1:]))


def eval_pairs(task: GANTask, models: Mapping[str, nn.Module], data: EvalData, n_samples: int,
               seed: int) -> list[EvalPair]:
    """A2B: the first ``n_samples`` of ``data.sources`` A (test images) translated by G_AB,
    judged against ``data.reference`` B; B2A likewise. Label kept uses the sources' labels."""
    missing = [k for k in ("G_AB", "G_BA") if k not in models]
    if missing:
        raise ValueError(f"CycleGAN eval_pairs needs models {missing}, got keys {sorted(models)}")
    pairs = []
    for name, (src, ref), g in (("A2B", (0, 1), "G_AB"), ("B2A", (1, 0), "G_BA")):
        S, R = _domain(data.sources, src, "source"), _domain(data.reference, ref, "reference")
        _check_image_set(S, f"CycleGAN {name} source data", task.config)
        _check_image_set(R, f"CycleGAN {name} reference data", task.config)
        labels = S.labels[:n_samples] if getattr(S, "labels", None) is not None else None
        pairs.append(EvalPair(name, translate(models[g], S.all()[:n_samples].float()), R.all().float(), labels))
    return pairs


def _domain(pair, i: int, what: str):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise TypeError(f"CycleGAN {what} data must be a pair (A, B) of ImageSets, not {type(pair).__name__}")
    return pair[i]


def _sample_grid(pairs, eval_data) -> tuple[Tensor, int]:
    """Rows of 8: A sources, their B translations, B sources, their A translations."""
    n = 8
    A, B = eval_data.sources
    by = {p.direction: p for p in pairs}
    rows = [A.all()[:n], by["A2B"].fake[:n], B.all()[:n], by["B2A"].fake[:n]]
    k = min(r.shape[0] for r in rows)
    return torch.cat([r[:k] for r in rows]), k


FAMILY = Family(
    name="cyclegan",
    title="CycleGAN (Zhu et al. 2017): two ResNet generators with InstanceNorm, two PatchGANs, "
          "least-squares loss, cycle and identity losses",
    config_class=CycleGANConfig,
    presets={"tiny": _tiny, "quick": _quick, "paper": _paper},
    build=build,
    init_weights=init_weights,
    trainer=CycleGANTrainer,
    eval_pairs=eval_pairs,
    sample_grid=_sample_grid,
    batch_override=single_batch_override,
    data=UnpairedData(),
    default_data="digits:digits-m",
    default_target=0.74,  # the paper's last matching CycleGAN ticket, ~74%
    eval_samples={"tiny": 64, "quick": None, "paper": None},  # None: every test image
    sources_split="test",  # the test images of each domain are translated ...
    reference_split="train",  # ... and judged against the target domain's training images (paper)
    directions=("A2B", "B2A"),
    legacy={"norm_affine": "none"},  # models saved before norm_affine existed had no affine norm
    channel_groups=channel_groups,
)

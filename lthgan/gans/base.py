"""What the GAN families share: the task and evaluation records, the losses, and the
training machinery (optimizers, schedules, EMA, RNG, DDP, checks).

Family-specific code lives in one module per family (``sngan.py``, ``cyclegan.py``, ...),
each declaring a :class:`lthgan.gans.family.Family`; :mod:`lthgan.gans.family` holds the
registry and the functions that route on the family name.

Randomness
----------
Model initialisation draws from a ``torch.Generator`` seeded with ``seed`` (on the CPU, so
θ0 does not depend on the device). A trainer owns its generators: one on the CPU for data
indices, augmentation and history-buffer choices, and one on the training device for the
latent noise, both derived from ``(seed, rank)``. Their states are part of
:meth:`Trainer.state_dict`, so a resumed run continues bit-identically on the CPU.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import optim as _optim
from ..seeding import mix as _derive_seed
from . import dist as _dist

__all__ = [
    "GANTask",
    "EvalPair",
    "TrainingDiverged",
    "Trainer",
    "hinge_d_loss",
    "hinge_g_loss",
    "lsgan_loss",
    "kd_kl_loss",
]

AMP_MODES = (None, "bf16")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite. ``iteration`` is the 0-based G iteration during which
    it happened, ``loss`` the loss's name and ``value`` its value."""

    def __init__(self, iteration: int, loss: str, value: float):
        self.iteration = iteration
        self.loss = loss
        self.value = value
        super().__init__(
            f"training diverged at iteration {iteration}: {loss} = {value} (not finite); "
            "stopping instead of training on. Lower the learning rate, check the data, or "
            "resume from an earlier checkpoint."
        )


@dataclass
class GANTask:
    """A GAN family's models and its prune groups.

    ``generators`` and ``discriminators`` name entries of ``models``; each generator is
    a prune group with its own global threshold."""

    name: str
    config: Any
    models: nn.ModuleDict
    generators: tuple[str, ...]
    discriminators: tuple[str, ...]

    def initial_state(self) -> dict[str, Tensor]:
        """A detached copy of every model's ``state_dict`` (θ0 and φ0 right after :func:`build`)."""
        return {k: v.detach().clone() for k, v in self.models.state_dict().items()}


@dataclass
class EvalPair:
    """Generated or translated images and the real images they are judged against."""

    direction: str
    fake: Tensor
    real: Tensor
    source_labels: Tensor | None = None


# --------------------------------------------------------------------------- losses


def hinge_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))."""
    return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()


def hinge_g_loss(fake_out: Tensor) -> Tensor:
    """-mean(D(G(z)))."""
    return -fake_out.mean()


def lsgan_loss(out: Tensor, target: float) -> Tensor:
    """Least-squares GAN loss: mean((out - target)^2)."""
    return (out - target).square().mean()


def kd_kl_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher || student) between the 2-class distributions [σ(l), 1 - σ(l)] of each
    discriminator output, computed stably from the logits, at the official scale: the
    official ``F.kl_div(log p_s, p_t)`` (GAN-LTH ``SNGAN/functions.py`` ``train_kd``, PyTorch
    1.4's default mean reduction) averages over all 2·N elements, so this is half the
    per-output mean KL."""
    t = teacher_logits.float()
    s = student_logits.float()
    pt = torch.sigmoid(t)
    kl = pt * (F.logsigmoid(t) - F.logsigmoid(s)) + (1.0 - pt) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return 0.5 * kl.mean()


# --------------------------------------------------------------------------- helpers


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_float(name: str, value, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    bad = (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi)
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return float(value)


def _check_betas(name: str, betas) -> tuple[float, float]:
    try:
        b = tuple(float(x) for x in betas)
    except TypeError:
        raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}") from None
    if len(b) != 2 or not all(0.0 <= x < 1.0 for x in b):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}")
    return b


def _set_requires_grad(params: Sequence[Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _check_image_set(data, what: str, config) -> None:
    """Duck-typed check of an ``lthgan.data.ImageSet`` against the model config."""
    if not (hasattr(data, "batch") and hasattr(data, "__len__")):
        raise TypeError(f"{what} must be an lthgan.data.ImageSet (with batch() and len()), "
                        f"not {type(data).__name__}")
    n = len(data)
    if n < 1:
        raise ValueError(f"{what} is empty")
    res = getattr(data, "resolution", None)
    if res is not None and int(res) != config.resolution:
        raise ValueError(f"{what} has resolution {res} but the model config expects "
                         f"{config.resolution}; load the data at resolution={config.resolution}")
    images = getattr(data, "images", None)
    if images is not None and images.dim() == 4 and images.shape[1] != config.channels:
        raise ValueError(f"{what} has {images.shape[1]} channels but the model config expects "
                         f"{config.channels}")


class _Sampler:
    """Indices in shuffled epochs (without replacement within an epoch)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n = n
        self.generator = generator
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def draw(self, k: int) -> Tensor:
        parts = []
        while k > 0:
            if self.pos >= self.perm.numel():
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(k, self.perm.numel() - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            k -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"n": self.n, "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"sampler state is for a data set of {state['n']} images, "
                             f"but this one has {self.n}")
        self.perm = state["perm"].clone().long()
        self.pos = int(state["pos"])


class _LRFactor:
    """1 for the first ``start`` share of the iterations, then linear to 0 at ``iterations``
    (CycleGAN's "100 epochs constant + 100 decaying", expressed in iterations)."""

    def __init__(self, iterations: int, decay_start: float):
        self.iterations = iterations
        self.start = int(round(decay_start * iterations))

    def __call__(self, it: int) -> float:
        if it < self.start:
            return 1.0
        span = self.iterations - self.start
        return max(0.0, (self.iterations - it) / span) if span > 0 else 1.0


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Training state of one GAN family; subclasses implement :meth:`_train_step`.

    ``step()`` runs one G iteration and returns float losses; ``state_dict()`` /
    ``load_state_dict()`` cover models, EMA, optimizers, schedulers, history buffers and
    RNG states; ``reset()`` prepares a new round after a rewind."""

    family: str = ""
    #: module names -> whether DDP must broadcast their buffers each forward
    _ddp_buffers: dict[str, bool] = {}

    def __init__(self, task: GANTask, data, *, iterations, device, seed, amp, kd_teacher, kd_weight):
        if task.name != self.family:
            raise ValueError(f"{type(self).__name__} trains {self.family!r} tasks, not {task.name!r}")
        cfg = task.config
        self.task = task
        self.config = cfg
        self.iterations = _check_positive_int("iterations", cfg.iterations if iterations is None else iterations)
        self.iteration = 0
        self.seed = _check_seed(seed)
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
        self.amp = amp
        self.kd_weight = _check_float("kd_weight", kd_weight, 0.0, math.inf, hi_open=True)

        # ---- processes and device
        self.distributed = _dist.init_from_env(device)
        self.rank = _dist.rank()
        self.world_size = _dist.world_size()
        self.device = _dist.device_for_rank(device)
        if amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp='bf16' needs a GPU with bf16 support")

        # ---- models
        task.models.to(self.device)
        task.models.train()
        if self.distributed:
            _dist.broadcast_module_(task.models)
        self.kd_teacher = self._prepare_teacher(kd_teacher)

        # ---- randomness (rank-local)
        self._gen = torch.Generator().manual_seed(_derive_seed(self.seed, self.rank, 1))
        self._noise_gen = torch.Generator(device=self.device).manual_seed(_derive_seed(self.seed, self.rank, 2))

        self._setup_data(data)
        self._ddp = self._wrap_ddp()
        self._build_extra()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self._fresh_optimizers()

    # -------------------------------------------------------------- subclass hooks

    def _setup_data(self, data) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_extra(self) -> None:
        """EMA copies, history buffers: whatever a family keeps beside the models."""

    def _optimizer_groups(self) -> dict[str, tuple[list[nn.Parameter], float, tuple[float, float]]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _train_step(self) -> dict[str, Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _reset_extra(self) -> None:
        """Reset EMA / history buffers after a rewind."""

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: Mapping) -> None:
        pass

    def _local_state(self) -> dict:
        """Rank-local state (RNG, samplers, history buffers) as CPU tensors."""
        return {"gen": self._gen.get_state(), "noise": self._noise_gen.get_state().cpu()}

    def _load_local_state(self, state: Mapping) -> None:
        self._gen.set_state(state["gen"])
        self._noise_gen.set_state(state["noise"])

    def eval_models(self) -> dict[str, nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -------------------------------------------------------------- shared machinery

    def _prepare_teacher(self, kd_teacher):
        if kd_teacher is None:
            return None
        if not isinstance(kd_teacher, (nn.ModuleDict, Mapping)):
            raise TypeError(f"kd_teacher must be an nn.ModuleDict keyed like {self.task.discriminators}, "
                            f"not {type(kd_teacher).__name__}")
        keys = tuple(kd_teacher.keys())
        if sorted(keys) != sorted(self.task.discriminators):
            raise ValueError(f"kd_teacher has keys {list(keys)}; expected the discriminators "
                             f"{list(self.task.discriminators)}")
        teacher = kd_teacher if isinstance(kd_teacher, nn.ModuleDict) else nn.ModuleDict(dict(kd_teacher))
        teacher.to(self.device)
        teacher.eval()  # frozen: no power-iteration updates, no running-stat updates
        teacher.requires_grad_(False)
        return teacher

    def _wrap_ddp(self) -> dict[str, nn.Module]:
        """DDP wrappers of the trained modules (the raw modules when not distributed)."""
        models = self.task.models
        if not self.distributed:
            return {name: models[name] for name in models.keys()}
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return {
            name: DDP(models[name], device_ids=ids, output_device=self.device.index if ids else None,
                      broadcast_buffers=self._ddp_buffers.get(name, True))
            for name in models.keys()
        }

    def _fresh_optimizers(self) -> None:
        self.optimizers = {}
        self.schedulers = {}
        factor = _LRFactor(self.iterations, self.config.decay_start)
        for name, (params, lr, betas) in self._optimizer_groups().items():
            # lthgan's fused Adam (CPU and CUDA): torch.optim.Adam's state and state_dict, one
            # pass per element, pruned entries skipped
            opt = _optim.Adam(params, lr=lr, betas=betas)
            self.optimizers[name] = opt
            # a plain function: LambdaLR keeps it out of its state_dict
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(opt, lambda it, f=factor: f(it))

    def _autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _real(self, data, sampler: _Sampler, n: int) -> Tensor:
        idx = sampler.draw(n)
        x = data.batch(idx, self._gen)
        return x.to(self.device, dtype=torch.float32, non_blocking=True)

    def _kd(self, name: str, inputs: Tensor, student_out: Tensor) -> Tensor | None:
        if self.kd_teacher is None:
            return None
        with torch.no_grad(), self._autocast():
            t = self.kd_teacher[name](inputs)
        return kd_kl_loss(student_out, t)

    def set_content_teacher(self, teachers: Mapping[str, nn.Module], features: nn.Module, weight: float) -> None:
        """Distillation (GAN-Slimming style): every generator ``g`` in ``teachers`` also gets the
        loss ``weight * content_loss(features, g(x), teachers[g](x))`` on its own inputs ``x``.
        The teachers and ``features`` are frozen."""
        self._teachers = {g: copy.deepcopy(t).to(self.device).eval().requires_grad_(False) for g, t in teachers.items()}
        self._content_features = features.to(self.device)
        self._content_weight = _check_float("content_weight", weight, 0.0, math.inf, hi_open=True)

    def _content(self, name: str, inputs: Tensor, outputs: Tensor) -> Tensor | None:
        """The distillation loss of generator ``name`` (None without a teacher for it)."""
        teacher = getattr(self, "_teachers", {}).get(name)
        if teacher is None:
            return None
        from ..perceptual import content_loss

        with torch.no_grad(), self._autocast():
            target = teacher(inputs)
        return self._content_weight * content_loss(self._content_features, outputs, target)

    def _per_rank_batch(self, name: str, batch: int) -> int:
        if batch % self.world_size:
            raise ValueError(f"{name}={batch} is split across {self.world_size} processes and must be "
                             f"a multiple of {self.world_size}")
        return batch // self.world_size

    def _finish(self, losses: dict[str, Tensor]) -> dict[str, float]:
        """One host sync per step: average across processes, check all losses are finite."""
        names = list(losses)
        vec = torch.stack([losses[n].detach().float().reshape(()) for n in names])
        if self.distributed:
            vec = _dist.all_reduce_mean(vec)
        vals = vec.cpu().tolist()
        for n, v in zip(names, vals):
            if not math.isfinite(v):
                raise TrainingDiverged(self.iteration, n, v)
        return dict(zip(names, vals))

    # -------------------------------------------------------------- public API

    def step(self) -> dict[str, float]:
        """One G iteration. Returns its losses and the current learning rate. Raises
        :class:`TrainingDiverged` when any loss is NaN or infinite."""
        losses = self._train_step()
        self._shrink_gammas()
        out = self._finish(losses)
        out = self._summarise(out)
        out["lr"] = self.schedulers[next(iter(self.schedulers))].get_last_lr()[0]
        for s in self.schedulers.values():
            s.step()
        self.iteration += 1
        return out

    def _summarise(self, vals: dict[str, float]) -> dict[str, float]:
        return vals

    def set_gamma_l1(self, params: Sequence[Tensor], lam: float) -> None:
        """A sparsity penalty ``lam * sum|γ|`` on ``params`` (norm scale factors), applied as a
        proximal step after every iteration, γ <- sign(γ) max(|γ| - lam * lr_G, 0), as the
        official channel-pruning code does (its soft threshold ρ·lr after each update)."""
        self._gammas = (list(params), _check_float("gamma_l1", lam, 0.0, math.inf, hi_open=True))

    @torch.no_grad()
    def _shrink_gammas(self) -> None:
        params, lam = getattr(self, "_gammas", ((), 0.0))
        if not params or lam == 0.0:
            return
        th = lam * self.schedulers["G"].get_last_lr()[0]
        torch._foreach_copy_(list(params), [p.sign() * (p.abs() - th).clamp_min(0.0) for p in params])

    def train(self, steps: int | None = None, callback: Callable[[int, dict], None] | None = None) -> dict[str, float]:
        """Run ``steps`` iterations (default: until ``iterations``); returns the last losses."""
        if steps is None:
            steps = max(0, self.iterations - self.iteration)
        last: dict[str, float] = {}
        for _ in range(steps):
            last = self.step()
            if callback is not None:
                callback(self.iteration, last)
        return last

    def reset(self, start_iteration: int = 0) -> None:
        """After a rewind: fresh optimizers (no Adam state), EMA := current G, history buffers
        emptied, iteration ``start_iteration``. Under DDP the models are re-broadcast from rank 0.

        Late rewinding (weights rewound to those of iteration K): ``reset(start_iteration=K)``
        makes the round train from K to ``iterations`` with the LR schedule at K, as the
        official ``train_late_rewind_impg.py`` (``start_epoch = rewind_checkpoint['epoch']``,
        fresh optimizers: its load of the saved optimizer state is commented out)."""
        k = _check_positive_int("start_iteration", start_iteration, minimum=0)
        if k >= self.iterations:
            raise ValueError(f"start_iteration must be below iterations={self.iterations}, got {k}")
        if self.distributed:
            _dist.broadcast_module_(self.task.models)
        self.iteration = k
        self._fresh_optimizers()
        if k:  # the same schedules, restarted at K: the LR a run from 0 has at iteration K
            self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(s.optimizer, s.lr_lambdas, last_epoch=k - 1)
                               for n, s in self.schedulers.items()}
        self._reset_extra()

    def state_dict(self) -> dict:
        """Everything needed to resume. Under DDP this is a collective call (every process
        must make it): the rank-local RNG and buffer states of all processes are gathered."""
        local = self._local_state()
        locals_ = _dist.all_gather_object(local) if self.distributed else [local]
        return {
            "family": self.family,
            "iteration": self.iteration,
            "iterations": self.iterations,
            "world_size": self.world_size,
            "models": self.task.models.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": self._extra_state(),
            "local": locals_,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("family") != self.family:
            raise ValueError(f"state is for a {state.get('family')!r} trainer, not {self.family!r}")
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"state has optimizers {sorted(state['optimizers'])}, expected {sorted(self.optimizers)}")
        self.task.models.load_state_dict(state["models"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self._load_extra_state(state["extra"])
        locals_ = state["local"]
        if len(locals_) == self.world_size:
            self._load_local_state(locals_[self.rank])
        else:
            # resumed on a different number of processes: continue from rank 0's state,
            # then give each rank its own streams
            self._load_local_state(locals_[0])
            if self.rank:
                s = int(torch.randint(0, 2**62, (1,), generator=self._gen))
                self._gen.manual_seed(_derive_seed(s, self.rank, 1))
                self._noise_gen.manual_seed(_derive_seed(s, self.rank, 2))
        self.iteration = int(state["iteration"])

    def _iter_raw(self, names: Sequence[str]) -> Iterator[nn.Module]:
        return (self.task.models[n] for n in names)


def ema_update_(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema := beta * ema + (1 - beta) * model for parameters; buffers (running stats,
    masks) are copied."""
    with torch.no_grad():
        ep = [p for p in ema.parameters()]
        mp = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ep, mp, 1.0 - beta)
        eb = list(ema.buffers())
        mb = list(model.buffers())
        if eb:
            torch._foreach_copy_(eb, mb)


def ema_copy_(ema: nn.Module, model: nn.Module) -> None:
    """ema := model exactly (parameters and buffers)."""
    with torch.no_grad():
        ep = list(ema.parameters()) + list(ema.buffers())
        mp = [t.detach() for t in model.parameters()] + list(model.buffers())
        torch._foreach_copy_(ep, mp)

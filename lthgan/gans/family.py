"""GAN families as plug-ins.

A family module (``sngan.py``, ``cyclegan.py``, ``dcgan.py``, ...) declares one :class:`Family`:
its config class and presets, how to build, initialise and train its models, its data (one
domain or two), its defaults for a search (data, target sparsity, evaluation samples) and how
its models are scored (the images to score, the split they are judged against, the sample
grid). ``lthgan.gans`` registers the families; everything above this package asks the
registry (:func:`family`) and never branches on a family's name.

Adding a family: write ``lthgan/gans/NAME.py`` with a ``FAMILY = Family(...)`` and add one
``register("lthgan.gans.NAME")`` line to ``lthgan/gans/__init__.py`` (see docs/DESIGN.md).
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .base import EvalPair, GANTask, _check_image_set, _check_seed

__all__ = [
    "Family", "ImageData", "UnpairedData", "EvalData", "PRESETS",
    "register", "family", "names", "default_config", "config_from_dict", "build",
    "init_weights", "make_trainer", "eval_pairs", "sample_images", "unconditional_pairs",
]

#: the presets every family provides: the paper's recipe, a CPU-sized one, and one for tests
PRESETS = ("tiny", "quick", "paper")


# --------------------------------------------------------------------------- data kinds


class ImageData:
    """One domain: a data set name understood by :func:`lthgan.data.load` (``digits``,
    ``digits-m``, ``cifar10``, ``stl10``, ``folder:PATH/A``)."""

    domains = 1
    example = "digits, digits-m, cifar10, stl10 or folder:PATH/A"

    def check(self, spec: str) -> None:
        """:class:`ValueError` when ``spec`` cannot name one domain."""
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"expected a data set name ({self.example}), got {spec!r}")
        if ":" in spec and not spec.startswith("folder:"):
            raise ValueError(f"this GAN trains on one data set ({self.example}), got {spec!r}")

    def load(self, spec: str, split: str, resolution: int, root=None, download: bool = False):
        from .. import data as _data

        return _data.load(spec, split, resolution=resolution, root=root, download=download)

    def names(self, spec: str) -> list[str]:
        """The data set names ``spec`` reads (to tell embedded data from downloaded data)."""
        return [spec]

    def random(self, config, seed: int, n: int):
        """Random stand-in images of the config's shape (for profiling, not for training)."""
        from .. import data as _data

        return _data.random_images(n, config.channels, config.resolution, seed)


class UnpairedData(ImageData):
    """Two unpaired domains: ``NAME_A:NAME_B`` or ``folder:PATH`` (CycleGAN's trainA/trainB
    layout); loaded as a pair ``(A, B)``."""

    domains = 2
    example = "NAME_A:NAME_B (e.g. digits:digits-m) or folder:PATH"

    def check(self, spec: str) -> None:
        if not isinstance(spec, str) or ":" not in spec:
            raise ValueError(f"this GAN needs two domains: {self.example}, got {spec!r}")

    def load(self, spec: str, split: str, resolution: int, root=None, download: bool = False):
        from .. import data as _data

        return _data.load_unpaired(spec, split, resolution=resolution, root=root, download=download)

    def names(self, spec: str) -> list[str]:
        return [spec] if spec.startswith("folder:") else spec.split(":")

    def random(self, config, seed: int, n: int):
        return (super().random(config, seed, n), super().random(config, seed + 1, n))


# --------------------------------------------------------------------------- evaluation data


class EvalData(NamedTuple):
    """What a level is scored on: ``reference``, the real images the outputs are judged
    against (an ImageSet, or a pair for two domains), and ``sources``, the images a translation
    GAN translates (None for an unconditional GAN)."""

    reference: Any
    sources: Any = None

    @classmethod
    def of(cls, data) -> "EvalData":
        """``data`` as EvalData: one given as a plain set (or pair) is both the reference and
        the sources (each test image translated and judged against the other domain's)."""
        return data if isinstance(data, EvalData) else cls(reference=data, sources=data)

    def size(self) -> int:
        """The number of images to score when every one is used: the sources', else the
        reference's (per domain, the larger)."""
        x = self.sources if self.sources is not None else self.reference
        return max(len(d) for d in x) if isinstance(x, (tuple, list)) else len(x)


# --------------------------------------------------------------------------- the family record


@dataclass(frozen=True)
class Family:
    """Everything lthgan knows about one GAN family.

    ``presets`` maps "tiny", "quick" and "paper" to functions returning a config;
    ``build(config, seed) -> GANTask``; ``init_weights(module, seed)`` re-initialises in place;
    ``trainer`` is a :class:`lthgan.gans.base.Trainer` subclass; ``eval_pairs(task, models,
    eval_data, n, seed)`` makes the images to score and ``sample_grid(pairs, eval_data)`` the
    ``(images, nrow)`` of a level's ``samples.png``, both from an :class:`EvalData`.
    ``sources_split`` is the split whose images a translation GAN translates (None for an
    unconditional GAN, which samples), ``reference_split`` the split its outputs are judged
    against by default. ``batch_override(config, n)`` maps a search's ``batch_size`` to config
    fields."""

    name: str
    title: str
    config_class: type
    presets: Mapping[str, Callable[[], Any]]
    build: Callable[[Any, int], GANTask]
    init_weights: Callable[[nn.Module, int], None]
    trainer: type
    eval_pairs: Callable[..., list[EvalPair]]
    sample_grid: Callable[[list[EvalPair], Any], tuple[Tensor, int]]
    batch_override: Callable[[Any, int], dict]
    data: ImageData = field(default_factory=ImageData)
    default_data: str = "digits"
    default_target: float = 0.67
    eval_samples: Mapping[str, int | None] = field(default_factory=dict)
    sources_split: str | None = None
    reference_split: str = "train"
    directions: tuple[str, ...] = ("G",)
    #: values of config fields added after models were saved without them (what those old
    #: models were), used by :func:`config_from_dict` when a stored config lacks the field
    legacy: Mapping[str, Any] = field(default_factory=dict)
    #: ``channel_groups(config) -> {generator name: [lthgan.channels.ChannelGroup, ...]}``:
    #: the generators' tied channels for channel pruning (None: the family has none declared)
    channel_groups: Callable[[Any], dict[str, list]] | None = None

    def __post_init__(self):
        missing = [p for p in PRESETS if p not in self.presets]
        if missing:
            raise ValueError(f"family {self.name!r} lacks the presets {missing}")

    def config(self, preset: str):
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; expected one of "
                             f"{', '.join(self.presets)}")
        return self.presets[preset]()

    def load_data(self, spec: str, split: str, resolution: int, root=None, download: bool = False):
        """The family's data for ``split``: an ImageSet, or ``(A, B)`` for two domains."""
        self.data.check(spec)
        return self.data.load(spec, split, resolution, root, download)

    def generator_input(self, config, n: int, seed: int = 0) -> Tensor:
        """An input batch for one of the family's generators: images of the config's size in
        [-1, 1] for a translation family, noise N(0, I) of ``config.z_dim`` otherwise."""
        g = torch.Generator().manual_seed(seed)
        if self.data.domains > 1:
            return torch.rand((n, config.channels, config.resolution, config.resolution), generator=g) * 2 - 1
        return torch.randn(n, config.z_dim, generator=g)

    def load_eval_data(self, spec: str, resolution: int, root=None, download: bool = False, *,
                       reference: str | None = None, train=None) -> EvalData:
        """What a level is scored on: the ``reference`` split (default ``reference_split``;
        ``train`` reuses already loaded training data) and the sources to translate."""
        split = reference or self.reference_split
        ref = train if split == "train" and train is not None else self.load_data(
            spec, split, resolution, root, download)
        src = None
        if self.sources_split is not None:
            src = ref if self.sources_split == split else self.load_data(
                spec, self.sources_split, resolution, root, download)
        return EvalData(reference=ref, sources=src)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Family] = {}


def register(module: str) -> Family:
    """Import ``module`` and register its ``FAMILY``. Returns the family."""
    mod = importlib.import_module(module)
    fam = getattr(mod, "FAMILY", None)
    if not isinstance(fam, Family):
        raise TypeError(f"{module} has no FAMILY = lthgan.gans.Family(...)")
    if fam.name in _REGISTRY and _REGISTRY[fam.name] is not fam:
        raise ValueError(f"a GAN family named {fam.name!r} is registered already")
    _REGISTRY[fam.name] = fam
    return fam


def names() -> tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_REGISTRY)


def family(name: str) -> Family:
    """The registered family ``name``; :class:`ValueError` naming the known ones otherwise."""
    fam = _REGISTRY.get(name) if isinstance(name, str) else None
    if fam is None:
        raise ValueError(f"unknown GAN family {name!r}; expected one of {', '.join(_REGISTRY)}")
    return fam


# --------------------------------------------------------------------------- dispatchers


def default_config(gan: str, preset: str):
    """The config dataclass of ``gan`` for ``preset``: "paper" (the paper's recipe), "quick"
    (a whole search in minutes on 2 CPU cores) or "tiny" (tests: seconds per round)."""
    return family(gan).config(preset)


def config_from_dict(gan: str, values: Mapping):
    """``gan``'s config from a dict of its fields (e.g. read back from JSON: lists become the
    tuples the dataclass declares; fields the dict lacks take the family's ``legacy`` values,
    then the dataclass defaults). :class:`ValueError` on unknown or bad fields."""
    fam = family(gan)
    cls = fam.config_class
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}")
    d = {k: (tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v)
         for k, v in {**fam.legacy, **values}.items()}
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"bad {cls.__name__}: {e}") from None


def _coerce_config(gan: str, config):
    fam = family(gan)
    if config is None:
        return fam.config("paper")
    if isinstance(config, str):
        return fam.config(config)
    if isinstance(config, Mapping):
        return config_from_dict(gan, config)
    if not isinstance(config, fam.config_class):
        raise TypeError(f"config for {gan!r} must be a {fam.config_class.__name__}, a dict of its "
                        f"fields or a preset name, not {type(config).__name__}")
    return config


def build(gan: str, config=None, seed: int = 0, device="cpu") -> GANTask:
    """Build ``gan``'s models with its seeded initialisation.

    ``config`` is a config dataclass, a dict of its fields, a preset name, or None for the
    paper recipe. Every prunable layer is an ``lthgan.nn`` masked layer (all masks True). The
    same seed gives the same weights on any device, and the global RNG is left untouched."""
    fam = family(gan)
    config = _coerce_config(gan, config)
    seed = _check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # anything drawn from the global RNG while building
        task = fam.build(config, seed)
    task.models.to(torch.device(device))
    return task


def init_weights(module: nn.Module, gan: str, seed: int) -> nn.Module:
    """Re-initialise ``module`` (a model or any part of one) in place with ``gan``'s init
    from a generator seeded with ``seed``. Pruned entries stay zero."""
    fam = family(gan)
    seed = _check_seed(seed)
    if not isinstance(module, nn.Module):
        raise TypeError(f"init_weights expects an nn.Module, not {type(module).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fam.init_weights(module, seed)
    return module


def make_trainer(task: GANTask, data, *, iterations: int | None = None, device="cpu", seed: int = 0,
                 amp: str | None = None, kd_teacher: nn.ModuleDict | None = None,
                 kd_weight: float = 1.0):
    """A :class:`lthgan.gans.base.Trainer` for ``task``.

    ``data``: an ``ImageSet`` (one domain) or a pair ``(A_train, B_train)`` (two domains).
    ``iterations`` defaults to the config's; it sets the LR schedule's length.
    ``amp="bf16"`` runs forward passes under bf16 autocast. ``kd_teacher`` holds frozen
    dense discriminators keyed like ``task.discriminators``. Under ``torchrun`` the models
    are wrapped in DistributedDataParallel; batches are split across the processes."""
    if not isinstance(task, GANTask):
        raise TypeError(f"make_trainer expects a GANTask, not {type(task).__name__}")
    return family(task.name).trainer(task, data, iterations=iterations, device=device, seed=seed,
                                     amp=amp, kd_teacher=kd_teacher, kd_weight=kd_weight)


def eval_pairs(task: GANTask, models: Mapping[str, nn.Module], eval_data, n_samples: int,
               seed: int = 0) -> list[EvalPair]:
    """The images to score, one :class:`EvalPair` per direction of the family. ``eval_data``
    is an :class:`EvalData`, or a plain set (a pair for two domains) that is both the
    reference and the sources."""
    if not isinstance(task, GANTask):
        raise TypeError(f"eval_pairs expects a GANTask, not {type(task).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    return family(task.name).eval_pairs(task, models, EvalData.of(eval_data), n_samples, _check_seed(seed))


# --------------------------------------------------------------------------- unconditional GANs


@torch.no_grad()
def sample_images(G: nn.Module, n: int, z_dim: int, seed: int = 0, batch_size: int = 500) -> Tensor:
    """``n`` images from ``G`` (in eval mode) for noise ``N(0, I)`` of ``z_dim`` drawn on the
    CPU from ``seed``: the same images on any device. Float32 CPU images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    dev = next(G.parameters()).device
    was = G.training
    G.eval()
    try:
        out = [G(z[i:i + batch_size].to(dev)).float().cpu() for i in range(0, n, batch_size)]
    finally:
        G.train(was)
    return torch.cat(out).clamp_(-1.0, 1.0)


def unconditional_pairs(task: GANTask, models: Mapping[str, nn.Module], data: EvalData, n_samples: int,
                        seed: int) -> list[EvalPair]:
    """``n_samples`` images of ``models["G"]`` (seeded noise of ``config.z_dim``) against the
    whole of ``data.reference``."""
    if "G" not in models:
        raise ValueError(f"{task.name} eval_pairs needs models['G'], got keys {sorted(models)}")
    _check_image_set(data.reference, f"{task.name} evaluation data", task.config)
    fake = sample_images(models["G"], n_samples, task.config.z_dim, seed)
    return [EvalPair("G", fake, data.reference.all().float(), None)]


def unconditional_grid(pairs: Sequence[EvalPair], eval_data) -> tuple[Tensor, int]:
    """64 generated samples, 8 a row."""
    return pairs[0].fake[:64], 8


def single_batch_override(config, batch_size: int) -> dict:
    """A search's ``batch_size`` for families with one ``batch`` field."""
    return {"batch": batch_size}

"""What defines a search: :class:`SearchConfig`, and :func:`resolve`, which fills in the
defaults of its GAN family and preset.

Each field states, once, in its metadata (see :func:`setting`):

* its **role** in a run directory: ``identity`` (part of what the run is: a different value
  is refused on resume and makes another ``--out`` necessary), ``variant`` (a different value
  with the same ``--out`` becomes a baseline in ``OUT/baselines/``) or ``free`` (may change on
  resume: it does not change results);
* whether the **dense** level depends on it (a baseline reuses its parent's dense level when
  all of these are equal) and whether the **masks** do (a random ticket must share these with
  the IMP run whose masks it reuses);
* the **commands** whose options it generates (``search``, ``train``, ``transfer``), its help
  text, and how it is checked (``choices``, ``kind``).

Library errors name fields (``target_sparsity``); the CLI turns them into flags.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .. import gans as _gans
from . import methods as _methods
from .errors import SearchError

__all__ = ["SearchConfig", "SearchError", "Resolved", "resolve", "parse_rewind", "setting",
           "field_names", "D_INITS", "LAYERS", "EXTRACTORS", "AMP", "IDENTITY", "VARIANT", "FREE",
           "default_preset", "check_device"]

IDENTITY, VARIANT, FREE = "identity", "variant", "free"
D_INITS = ("init", "trained", "reseed", "reseed-each")
REFERENCES = ("train", "test")
STRUCTURES = ("weight", "channel")
#: the γ penalty of a channel search unless given (see ``gamma_l1``)
DEFAULT_GAMMA_L1 = 1.0
LAYERS = ("conv", "conv+linear")
EXTRACTORS = ("digits", "inception")
AMP = ("bf16",)
#: the data sets bundled with lthgan (the digits extractor scores these)
EMBEDDED_DATA = ("digits", "digits-m")
#: FID, KID and IS need at least this many images on each side
MIN_EVAL_IMAGES = 2


def setting(default: Any, help: str, *, role: str = IDENTITY, dense: bool = False, masks: bool = False,
            commands: tuple[str, ...] = ("search",), **check) -> Any:
    """A :class:`SearchConfig` field. ``check``: ``choices`` (a tuple, or a function returning
    one), ``kind`` (open01, posint, nonnegint, nonneg, file), ``minimum`` (for ints),
    ``flag`` (a ``--x/--no-x`` declaration), ``metavar``; ``commands=()`` keeps it off the CLI."""
    return field(default=default, metadata={"help": help, "role": role, "dense": dense,
                                            "masks": masks, "commands": commands, **check})


ALL = ("search", "train", "transfer")
TRAIN = ("search", "train")


@dataclass
class SearchConfig:
    """Everything that defines a search. ``None`` means "the default for the GAN family and
    preset", filled in by :func:`resolve` (and written to the run's ``config.json``)."""

    gan: str = setting("sngan", "GAN family.", dense=True, masks=True, commands=TRAIN,
                       choices=lambda: _gans.names())
    data: str | None = setting(
        None, "Training data: digits, digits-m, cifar10, stl10 or folder:PATH/A for one domain; "
        "NAME_A:NAME_B or folder:PATH for two (CycleGAN). Default: the family's embedded data.",
        dense=True, masks=True, commands=ALL, metavar="NAME")
    data_root: str | None = setting(
        None, "Folder holding cifar10/stl10 (read locally unless --download).", dense=True,
        commands=ALL, metavar="DIR")
    download: bool = setting(
        False, "Download cifar10/stl10 into --data-root when missing (needs the internet).",
        role=FREE, commands=ALL, flag="--download/--no-download")
    target_sparsity: float | None = setting(
        None, "Share of the prunable G weights to prune, in (0, 1). Default: the family's (the "
        "paper's last matching sparsity: SNGAN 0.67232 = 1 - 0.8^5, CycleGAN 0.74).", role=VARIANT, masks=True, kind="open01")
    prune_rate: float = setting(0.2, "Share of the surviving weights pruned per round, in (0, 1).",
                                role=VARIANT, masks=True, kind="open01")
    method: str = setting("imp", "Pruning method (see `lthgan search --help`).", role=VARIANT,
                          choices=lambda: _methods.names(internal=True), cli_choices=lambda: _methods.names())
    prune_d: bool = setting(False, "Prune the discriminator(s) too, to the same sparsity.",
                            role=VARIANT, masks=True, flag="--prune-d/--no-prune-d")
    d_init: str | None = setting(
        None, "Where D starts each round: init (φ0, or the late-rewind snapshot), trained (the "
        "dense trained D), reseed (one fixed D from another seed for every round, as the official "
        "code), reseed-each (a fresh D from another seed each round). Default: init; methods that "
        "keep training keep D training too.", role=VARIANT, choices=D_INITS)
    rewind: str = setting(
        "init", "Rewind point: init (θ0), iter:K (weights after K dense iterations) or frac:F "
        "(after the share F of the dense run): late rewinding.", role=VARIANT, dense=True,
        commands=TRAIN, metavar="init|iter:K|frac:F")
    kd_d: bool = setting(False, "Distil D from the dense trained D: KL between the 2-class "
                         "sigmoid outputs, at the official code's scale (the mean over both classes, "
                         "half the per-output KL).", role=VARIANT, flag="--kd-d/--no-kd-d")
    kd_weight: float = setting(1.0, "Weight of the distillation loss.", role=VARIANT, kind="nonneg")
    structure: str = setting(
        "weight", "What a round removes: weight (single weights, the paper's unstructured tickets) or "
        "channel (whole channels of the generators, which are rebuilt narrower: structural tickets; "
        "--target-sparsity is then a share of channels).", role=VARIANT, dense=True, masks=True,
        choices=STRUCTURES)
    gamma_l1: float | None = setting(
        None, "Channel searches: the sparsity penalty on the norms' scale factors γ, as a proximal step "
        f"γ <- sign(γ) max(|γ| - λ lr, 0) after each G update (default {DEFAULT_GAMMA_L1}; 0: none).",
        role=VARIANT, dense=True, kind="nonneg")
    content_weight: float = setting(
        1.0, "distill: weight of the content loss that pulls the pruned G's outputs towards the dense "
        "trained G's (L1 between feature maps of the two, GAN-Slimming style).", role=VARIANT, kind="nonneg")
    content_extractor: str | None = setting(
        None, "distill: the feature maps of the content loss: digits (the bundled classifier's) or vgg "
        "(VGG-16 relu2_2; needs --vgg-weights). Default: digits on the digit sets, else vgg.",
        role=VARIANT, choices=("digits", "vgg"))
    vgg_weights: str | None = setting(
        None, "Local file of torchvision's VGG-16 weights (vgg16-397923af.pth), for --content-extractor vgg.",
        role=VARIANT, kind="file", metavar="FILE")
    layers: str = setting("conv", "Prunable layers: conv (Conv2d and ConvTranspose2d weights, as in "
                          "the paper) or conv+linear.", role=VARIANT, masks=True, choices=LAYERS)
    preset: str | None = setting(
        None, "Model size and schedule: paper (the paper's recipe), quick (2 CPU cores, minutes) "
        "or tiny (tests, seconds). Default: quick on the CPU, paper on CUDA.", dense=True,
        masks=True, commands=TRAIN, choices=_gans.PRESETS)
    iterations: int | None = setting(None, "G iterations per round (overrides the preset).",
                                     dense=True, commands=ALL, kind="posint")
    batch_size: int | None = setting(
        None, "Batch size (overrides the preset; SNGAN: D's batch, G's keeps the preset's ratio).",
        dense=True, commands=ALL, kind="posint")
    eval_samples: int | None = setting(
        None, f"Images per evaluation, at least {MIN_EVAL_IMAGES} (overrides the preset): generated "
        "samples, or test images translated per direction (default: all).", dense=True,
        commands=ALL, kind="posint", minimum=MIN_EVAL_IMAGES)
    extractor: str | None = setting(
        None, "Feature extractor of FID/IS/KID: digits (embedded) or inception (needs "
        "--inception-weights offline). Default: digits on the digit sets, else inception.",
        dense=True, commands=ALL, choices=EXTRACTORS)
    inception_weights: str | None = setting(
        None, "Local file of the Inception-v3 weights (torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth).", dense=True, commands=ALL, kind="file",
        metavar="FILE")
    seed: int = setting(0, "Seed of θ0/φ0, training and evaluation.", dense=True, commands=ALL,
                        kind="nonnegint")
    device: str | None = setting(None, "cpu, cuda or cuda:N (default: cuda when available).",
                                 dense=True, commands=ALL, metavar="DEVICE")
    amp: str | None = setting(None, "Mixed precision: bf16.", dense=True, commands=ALL, choices=AMP)
    fid_reference: str | None = setting(
        None, "The real images FID is computed against: train (the paper's protocol: a translation "
        "is judged against the target domain's training images) or test. Default: the family's (train).",
        dense=True, commands=ALL, choices=REFERENCES)
    tolerance: float = setting(
        0.0, "With one seed, a round is matching when its FID <= the dense FID + this. With several, "
        "the test of --seeds decides, on FID - this.", commands=("search", "transfer"), kind="nonneg")
    seeds: int = setting(
        1, "Independent searches, each from its own θ0 (seeds SEED, SEED+1, ...), in one run "
        "directory; run as parallel processes where cores allow. With 2 or more, a level matches "
        "unless a one-sided paired t-test over seeds says (at 95%) its FID is worse than dense.",
        commands=("search",), kind="posint")
    until_unmatched: bool = setting(
        False, "Keep pruning past --target-sparsity while rounds still match; stop after the first "
        "round that does not.", role=VARIANT, flag="--until-unmatched/--no-until-unmatched")
    checkpoint_every: int | None = setting(
        None, "In-round checkpoint every N iterations (default: a tenth of the round).", role=FREE,
        commands=ALL, kind="posint")
    masks_from: str | None = setting(
        None, "random-ticket: the IMP run directory whose round masks are reused (default: the "
        "run this one is a baseline of).", role=VARIANT, metavar="RUN_DIR")
    ticket: str | None = setting(None, "transfer: the ticket file applied in round 1.", commands=())
    gan_config: dict | None = setting(
        None, "transfer: the GAN config of the ticket's model (instead of a preset's).",
        dense=True, commands=())
    dense: bool = setting(True, "Train the dense baseline (off only for lthgan transfer --no-dense).",
                          commands=())

    def validate(self) -> "SearchConfig":
        """Raise :class:`SearchError` naming the first bad value. Returns self."""
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        parse_rewind(self.rewind)
        method = _methods.get(self.method)
        method.check(self)
        if self.masks_from is not None and method.masks.name != "reuse":
            raise SearchError(f"masks_from applies to methods that reuse another run's masks "
                              f"(random-ticket), not {self.method}", "masks_from", "method")
        if self.ticket is not None and method.masks.name != "ticket":
            raise SearchError("ticket applies to the transfer method only", "ticket")
        if self.structure == "channel":
            for name, bad in (("prune_d", self.prune_d), ("layers", self.layers != "conv")):
                if bad:
                    raise SearchError(f"{name} applies to weight pruning, not to structure channel (the "
                                      "generators' channels are removed, D is not pruned)", name, "structure")
        elif self.gamma_l1 is not None:
            raise SearchError("gamma_l1 applies to structure channel", "gamma_l1", "structure")
        if not method.distill:
            for name in ("content_extractor", "vgg_weights"):
                if getattr(self, name) is not None:
                    raise SearchError(f"{name} applies to method distill", name, "method")
        if self.device is not None:
            check_device(self.device)
        return self


def field_names(*, role: str | None = None, dense: bool | None = None, masks: bool | None = None,
                command: str | None = None) -> tuple[str, ...]:
    """Names of the :class:`SearchConfig` fields with the given metadata."""
    out = []
    for f in fields(SearchConfig):
        md = f.metadata
        if ((role is None or md["role"] == role) and (dense is None or md["dense"] == dense)
                and (masks is None or md["masks"] == masks)
                and (command is None or command in md["commands"])):
            out.append(f.name)
    return tuple(out)


def choices_of(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


def _check_field(f: dataclasses.Field, v: Any) -> None:
    """The checks a field's metadata declares (``None`` means "default" and always passes)."""
    if v is None and f.default is None:
        return
    name, md = f.name, f.metadata
    choices = choices_of(f)
    if choices is not None and v not in choices:
        raise SearchError(f"unknown {name} {v!r}; expected one of {', '.join(map(str, choices))}", name)
    kind = md.get("kind")
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "open01" and not (num and 0.0 < float(v) < 1.0):
        raise SearchError(f"{name} must be a number in (0, 1), got {v!r}", name)
    if kind in ("posint", "nonnegint"):
        lo = md.get("minimum", 1 if kind == "posint" else 0)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
            raise SearchError(f"{name} must be an integer >= {lo}, got {v!r}", name)
    if kind == "nonneg" and not (num and math.isfinite(v) and v >= 0):
        raise SearchError(f"{name} must be a finite number >= 0, got {v!r}", name)
    if isinstance(f.default, bool) and not isinstance(v, bool):
        raise SearchError(f"{name} must be true or false, got {v!r}", name)


def check_device(device: str) -> str:
    """The canonical name of ``device`` (cpu, cuda or cuda:N), checked to exist here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SearchError(f"device {device!r} is not supported; expected cpu, cuda or cuda:N", "device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SearchError(f"device {device!r} was asked for but CUDA is not available here", "device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SearchError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)", "device")
    return str(dev)


def default_preset(device: str | None) -> str:
    """The preset a search uses when none is given: quick on the CPU, paper on CUDA."""
    dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return "paper" if torch.device(dev).type == "cuda" else "quick"


def parse_rewind(spec: str) -> tuple[str, float]:
    """``"init"`` -> ("init", 0); ``"iter:K"`` -> ("iter", K); ``"frac:F"`` -> ("frac", F)."""
    if spec == "init":
        return "init", 0
    kind, _, value = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    try:
        if kind == "iter" and int(value) >= 0:
            return "iter", int(value)
        if kind == "frac" and 0.0 <= float(value) < 1.0:
            return "frac", float(value)
    except ValueError:
        pass
    raise SearchError(f"rewind must be init, iter:K (K >= 0 iterations) or frac:F (0 <= F < 1), "
                      f"got {spec!r}", "rewind")


@dataclass
class Resolved:
    """A :class:`SearchConfig` with every default filled in for its family and preset."""

    config: SearchConfig
    family: Any                 # lthgan.gans.Family
    preset: str
    data: str
    target_sparsity: float
    d_init: str                 # init | trained | reseed | continue (methods that keep training)
    extractor: str
    device: str
    gan_config: Any
    iterations: int
    eval_samples: int | None
    checkpoint_every: int
    rewind_iteration: int       # 0: θ0
    schedule: list[float]
    gamma_l1: float = 0.0
    content_extractor: str | None = None   # distill's content features

    @property
    def structural(self) -> bool:
        return self.config.structure == "channel"

    @property
    def method(self) -> "_methods.Method":
        return _methods.get(self.config.method)

    def to_dict(self) -> dict:
        return {
            "preset": self.preset, "data": self.data, "target_sparsity": self.target_sparsity,
            "d_init": self.d_init, "extractor": self.extractor, "device": self.device,
            "iterations": self.iterations, "eval_samples": self.eval_samples,
            "checkpoint_every": self.checkpoint_every, "rewind_iteration": self.rewind_iteration,
            "schedule": list(self.schedule), "gamma_l1": self.gamma_l1,
            "content_extractor": self.content_extractor,
        }


#: an until_unmatched search stops before its sparsity passes this
MAX_SPARSITY = 0.99


def level_targets(res: "Resolved"):
    """``(index, sparsity)`` of every level: dense, the schedule's rounds, and under
    ``until_unmatched`` the rounds after it, each pruning ``prune_rate`` of the survivors
    (``1 - (1 - s)(1 - rate)``), up to :data:`MAX_SPARSITY`. Whether those run is the
    verdict's call."""
    yield 0, 0.0
    yield from enumerate(res.schedule, 1)
    if res.config.until_unmatched and res.method.start != "ticket":
        s, i = res.schedule[-1], len(res.schedule)
        while True:
            s = round(1.0 - (1.0 - s) * (1.0 - res.config.prune_rate), 12)
            if s > MAX_SPARSITY:
                return
            i += 1
            yield i, s


def is_embedded(family, data: str) -> bool:
    """Whether ``data`` reads only the data sets bundled with lthgan."""
    return all(n in EMBEDDED_DATA for n in family.data.names(data))


def resolve(config: SearchConfig) -> Resolved:
    """Fill in the defaults of ``config`` (validated first). Raises :class:`SearchError`."""
    config.validate()
    fam = _gans.family(config.gan)
    data = config.data or fam.default_data
    try:
        fam.data.check(data)
    except ValueError as e:
        raise SearchError(f"{fam.name}: data {e}", "data") from None
    preset = config.preset or default_preset(config.device)
    gan_cfg = _gan_config(fam, config, preset)
    target = config.target_sparsity if config.target_sparsity is not None else fam.default_target
    method = _methods.get(config.method)
    schedule = method.schedule_for(config.prune_rate, target)
    d_init = "continue" if method.start == "continue" else (config.d_init or "init")
    extractor = config.extractor or ("digits" if is_embedded(fam, data) else "inception")
    device = check_device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    eval_samples = config.eval_samples
    if eval_samples is None:
        eval_samples = fam.eval_samples.get(preset)
    iterations = gan_cfg.iterations
    every = config.checkpoint_every or max(1, math.ceil(iterations / 10))
    kind, value = parse_rewind(config.rewind)
    k = int(value) if kind == "iter" else int(round(value * iterations)) if kind == "frac" else 0
    if k >= iterations:
        raise SearchError(f"rewind point {config.rewind} is iteration {k}, but a round has only "
                          f"{iterations} iterations", "rewind", "iterations")
    gamma = (DEFAULT_GAMMA_L1 if config.gamma_l1 is None else float(config.gamma_l1)) \
        if config.structure == "channel" else 0.0
    if config.structure == "channel" and getattr(fam, "channel_groups", None) is None:
        raise SearchError(f"the {fam.name} family declares no channel groups; structure channel needs them",
                          "structure", "gan")
    content = (config.content_extractor or ("digits" if is_embedded(fam, data) else "vgg")) \
        if method.distill else None
    return Resolved(config, fam, preset, data, float(target), d_init, extractor, device, gan_cfg,
                    iterations, eval_samples, every, k, schedule, gamma, content)


def _gan_config(fam, config: SearchConfig, preset: str):
    """The family's config: the preset's (or the given ``gan_config``), with the overrides."""
    if config.gan_config is not None:
        try:
            base = _gans.config_from_dict(fam.name, config.gan_config)
        except ValueError as e:
            raise SearchError(f"gan_config: {e}", "gan_config") from None
    else:
        base = fam.config(preset)
    over: dict[str, Any] = {}
    if config.iterations is not None:
        over["iterations"] = config.iterations
    if config.batch_size is not None:
        over.update(fam.batch_override(base, config.batch_size))
    try:
        return dataclasses.replace(base, **over) if over else base
    except ValueError as e:
        raise SearchError(f"the {fam.name} {preset} preset cannot take these overrides: {e}",
                          *(k for k in ("iterations", "batch_size") if getattr(config, k) is not None)
                          ) from None


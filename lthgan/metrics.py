"""FID, IS and KID through torch-fidelity, with two feature extractors.

- ``digits`` (torch-fidelity name ``lthgan-digits``): a small CNN classifier for 32x32 digits in
  both domains (``digits`` and ``digits-m``), whose weights ship in ``lthgan/assets`` and are
  trained by ``scripts/train_digits_classifier.py``. It has a digit head and a domain head on
  shared 128-d penultimate features, so FID and KID on those features see the digit and the
  domain (an untranslated digit scores far from digits-m); IS uses the digit logits.
  :func:`label_kept` and :func:`classify` use the digit head.
- ``inception`` (torch-fidelity name ``inception-v3-compat``): torch-fidelity's Inception-v3, with
  weights from ``inception_weights=FILE`` or from torch-fidelity's download cache when the file
  is already there. Nothing here downloads: without the file, :class:`MetricsError` says where to
  put it (or call :func:`download_inception_weights` on a connected machine).

Every result records which extractor (and which weights) produced it; :func:`check_comparable`
refuses to put numbers from different extractors side by side.

The Frechet distance, IS and KID themselves are torch-fidelity's (``calculate_metrics``).
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MetricsError",
    "EXTRACTORS",
    "DigitsClassifier",
    "DIGITS_WEIGHTS",
    "load_digits_classifier",
    "classify",
    "label_kept",
    "evaluate",
    "check_comparable",
    "inception_cache_path",
    "check_inception_weights",
    "inception_url",
    "download_inception_weights",
    "register_with_torch_fidelity",
]

EXTRACTORS = ("digits", "inception")
FIDELITY_NAMES = {"digits": "lthgan-digits", "inception": "inception-v3-compat"}
DIGITS_WEIGHTS = Path(__file__).resolve().parent / "assets" / "digits_classifier.safetensors"
DIGITS_FEATURE = "128"        # penultimate features: FID and KID
DIGITS_LOGITS = "logits"      # class logits: IS
KID_SUBSET_SIZE = 1000        # torch-fidelity's default, lowered automatically for small sets
ISC_SPLITS = 10


class MetricsError(ValueError):
    """Metrics cannot be computed as asked: unknown extractor, missing weights, unusable images."""


# --------------------------------------------------------------------------- the digits classifier


class DigitsClassifier(nn.Module):
    """A small CNN for 32x32 RGB digits (white-on-black ``digits`` and ``digits-m`` over photos).

    Input: float ``[N, 3, H, W]`` in [-1, 1] (resized to 32x32 when H, W differ).
    ``features(x)`` gives the 128-d penultimate features, ``forward(x)`` the 10 class logits,
    ``domain_logits(x)`` the 2 domain logits (``DOMAINS``: plain digits, digits over photos).

    Both heads read the same features, trained on both tasks, so the features carry the digit
    *and* the domain: FID/KID on them tell an untranslated digit from a translated one. A
    class-only classifier would be domain-blind, and rank a CycleGAN that copies its input
    above one that translates.
    """

    INPUT_SIZE = 32
    NUM_FEATURES = 128
    NUM_CLASSES = 10
    DOMAINS = ("digits", "digits-m")

    def __init__(self) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *conv(3, 32), *conv(32, 32), nn.MaxPool2d(2),            # 32x32: separate the digit from the patch
            *conv(32, 64), nn.MaxPool2d(2),                          # 16x16
            *conv(64, self.NUM_FEATURES), nn.MaxPool2d(2),           # 8x8 -> 4x4, then a global mean
        )
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(self.NUM_FEATURES, self.NUM_CLASSES)
        self.domain_fc = nn.Linear(self.NUM_FEATURES, len(self.DOMAINS))

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise MetricsError(f"the digits classifier takes [N, 3, H, W] images, got shape {tuple(x.shape)}")
        if x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
            x = F.interpolate(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    def features(self, x: Tensor) -> Tensor:
        return self.body(self._prepare(x)).mean(dim=(2, 3))

    def head(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features))

    def domain_head(self, features: Tensor) -> Tensor:
        return self.domain_fc(self.dropout(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def domain_logits(self, x: Tensor) -> Tensor:
        return self.domain_head(self.features(x))


def _file_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_digest_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


def _read_digits_state(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise MetricsError(
            f"the digits classifier's weights {path} are missing; they ship with lthgan "
            "(reinstall it) or can be rebuilt with `python scripts/train_digits_classifier.py`"
        )
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise MetricsError(f"cannot read the digits classifier's weights {path}: {e}") from e


def load_digits_classifier(path: str | os.PathLike | None = None,
                           device: torch.device | str = "cpu") -> DigitsClassifier:
    """The digits classifier in eval mode, without gradients, from ``path`` (default: the bundled file)."""
    path = Path(path) if path is not None else DIGITS_WEIGHTS
    state = _read_digits_state(path)
    net = DigitsClassifier()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise MetricsError(f"{path} does not hold DigitsClassifier weights: {e}") from e
    net.requires_grad_(False)
    return net.eval().to(device)


@functools.lru_cache(maxsize=4)
def _cached_classifier(device: str, path: str, digest: str) -> DigitsClassifier:
    return load_digits_classifier(path, device)


def _classifier(device: torch.device) -> DigitsClassifier:
    if not DIGITS_WEIGHTS.is_file():
        _read_digits_state(DIGITS_WEIGHTS)  # raises the clear error
    return _cached_classifier(str(device), str(DIGITS_WEIGHTS), _file_digest(DIGITS_WEIGHTS))


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MetricsError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise MetricsError(f"metrics run on 'cpu' or 'cuda' (torch-fidelity's choices), got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetricsError(f"device {device!r} was asked for but CUDA is not available")
    return dev


def _as_unit_float(images: Tensor, what: str) -> Tensor:
    """Validated float [-1, 1] NCHW with 3 channels (uint8 0..255 accepted and converted)."""
    if not isinstance(images, Tensor):
        raise MetricsError(f"{what} must be a torch.Tensor [N, 3, H, W], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise MetricsError(f"{what} must be images [N, 3, H, W] (or [N, 1, H, W]), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise MetricsError(f"{what} holds no images")
    if images.dtype == torch.uint8:
        images = images.to(torch.float32).div(127.5).sub(1.0)
    elif not images.is_floating_point():
        raise MetricsError(f"{what} must be float in [-1, 1] or uint8, got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise MetricsError(f"{what} contain NaN or infinite values")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


@torch.no_grad()
def _logits(images: Tensor, device, batch_size: int) -> Tensor:
    dev = _resolve_device(device)
    net = _classifier(dev)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(dev, torch.float32, non_blocking=True).clamp(-1.0, 1.0)
        out.append(net(x).float().cpu())
    return torch.cat(out)


def classify(images: Tensor, *, device=None, batch_size: int = 512) -> Tensor:
    """The digits classifier's predicted class (LongTensor ``[N]``) for float [-1, 1] images."""
    images = _as_unit_float(images, "images")
    return _logits(images, device, batch_size).argmax(dim=1)


def label_kept(fake: Tensor, labels: Tensor, *, device=None, batch_size: int = 512) -> float:
    """Share of ``fake`` images (e.g. translated digits) that the classifier assigns to ``labels``.

    ``labels`` are the digit classes of the source images that ``fake`` was translated from.
    """
    fake = _as_unit_float(fake, "fake images")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != fake.shape[0] or labels.is_floating_point():
        raise MetricsError(
            f"labels must be integer class ids of shape ({fake.shape[0]},) to match the fake images, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= DigitsClassifier.NUM_CLASSES):
        raise MetricsError(f"digit labels must lie in 0..9, got range [{int(labels.min())}, {int(labels.max())}]")
    pred = _logits(fake, device, batch_size).argmax(dim=1)
    return float((pred == labels.cpu().long()).float().mean())


# --------------------------------------------------------------------------- torch-fidelity glue


@functools.lru_cache(maxsize=1)
def register_with_torch_fidelity() -> type:
    """Define and register the ``lthgan-digits`` torch-fidelity feature extractor; returns its class.

    Its features: ``"128"`` (penultimate, for FID/KID/PRC) and ``"logits"`` (for IS).
    """
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class FeatureExtractorLthganDigits(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = load_digits_classifier(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return DIGITS_FEATURE, DIGITS_LOGITS

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": DIGITS_LOGITS, "fid": DIGITS_FEATURE, "kid": DIGITS_FEATURE,
                    "prc": DIGITS_FEATURE}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros((1, 3, DigitsClassifier.INPUT_SIZE, DigitsClassifier.INPUT_SIZE), dtype=torch.uint8)

        def forward(self, x):
            if not (isinstance(x, Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
                raise MetricsError(f"lthgan-digits takes uint8 [B, 3, H, W] batches, got "
                                   f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
            feats = self.net.features(x.to(torch.float32).div_(127.5).sub_(1.0))
            out = {DIGITS_FEATURE: feats}
            if DIGITS_LOGITS in self.features_list:
                out[DIGITS_LOGITS] = self.net.head(feats)
            return tuple(out[k].to(torch.float32) for k in self.features_list)

    name = FIDELITY_NAMES["digits"]
    if name in FEATURE_EXTRACTORS_REGISTRY:
        FEATURE_EXTRACTORS_REGISTRY[name] = FeatureExtractorLthganDigits  # a re-import of this module
    else:
        register_feature_extractor(name, FeatureExtractorLthganDigits)
    return FeatureExtractorLthganDigits


class _Uint8Images(torch.utils.data.Dataset):
    """torch-fidelity input: a uint8 ``[N, 3, H, W]`` CPU tensor, one CHW image per item."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def _to_uint8(images: Tensor, what: str) -> Tensor:
    x = _as_unit_float(images, what)
    out = torch.empty((x.shape[0], 3) + tuple(x.shape[2:]), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):  # bounded temporaries for big sets on the GPU
        chunk = x[i:i + 4096].float().clamp(-1.0, 1.0).add_(1.0).mul_(127.5).round_()
        out[i:i + 4096] = chunk.to(torch.uint8).cpu()
    return out


def inception_url() -> str:
    """Where torch-fidelity fetches its Inception-v3 weights from."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def inception_cache_path() -> Path:
    """The file torch-fidelity's download cache uses for its Inception-v3 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(inception_url()).path)


def download_inception_weights() -> Path:
    """Fetch torch-fidelity's Inception-v3 weights into its cache (needs the internet); returns the path.

    The only place in lthgan that downloads weights, and only when called.
    """
    path = inception_cache_path()
    if not path.is_file():
        torch.hub.load_state_dict_from_url(inception_url(), progress=True, check_hash=False)
    return path


_INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight", "fc.bias")


def check_inception_weights(inception_weights=None) -> Path:
    """The Inception-v3 weights file to use (``inception_weights``, else torch-fidelity's cache),
    loaded and checked: :class:`MetricsError` saying what is wrong with it. Call it before any
    training, so that a bad file is found up front."""
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise MetricsError(f"Inception weights file {path} does not exist; expected torch-fidelity's "
                               f"Inception-v3 state dict (fetch it from {inception_url()})")
    else:
        path = inception_cache_path()
        if not path.is_file():
            raise MetricsError(
                "the inception extractor needs torch-fidelity's Inception-v3 weights and lthgan never "
                f"downloads them on its own. Put the file at {path} (torch-fidelity's cache; fetch it on a "
                f"connected machine from {inception_url()}), or pass inception_weights=FILE "
                "or call lthgan.metrics.download_inception_weights() "
                "where the internet is reachable"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors vary
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:100]
        raise MetricsError(f"{path} is not a PyTorch weights file that can be loaded safely ({first}); "
                           "expected torch-fidelity's Inception-v3 state dict "
                           f"({os.path.basename(urlparse(inception_url()).path)})") from e
    if not isinstance(state, Mapping):
        raise MetricsError(f"{path} must hold an Inception-v3 state dict, got a {type(state).__name__}")
    missing = [k for k in _INCEPTION_KEYS if k not in state]
    if missing:
        raise MetricsError(f"{path} is not torch-fidelity's Inception-v3 state dict: keys {missing} are missing")
    if tuple(state["fc.weight"].shape) != (1008, 2048):
        raise MetricsError(f"{path}: fc.weight has shape {tuple(state['fc.weight'].shape)}, expected (1008, 2048)")
    return path


def evaluate(
    fake: Tensor,
    real: Tensor,
    *,
    extractor: str = "digits",
    inception_weights: str | os.PathLike | None = None,
    isc: bool = True,
    kid: bool = True,
    device=None,
    batch_size: int | None = None,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    isc_splits: int | None = None,
    feature_layer: str | None = None,
) -> dict[str, Any]:
    """FID (always), IS of ``fake`` and KID between ``fake`` and ``real``, through torch-fidelity.

    ``fake`` and ``real`` are float ``[N, 3, H, W]`` images in [-1, 1] (uint8 accepted). Returns a
    JSON-serialisable dict: ``fid``, ``is_mean``, ``is_std``, ``kid_mean``, ``kid_std`` (``None``
    when not asked for), ``extractor``, ``feature_extractor`` (torch-fidelity's name),
    ``extractor_weights`` (a digest of the weights file), ``n_fake``, ``n_real``, and the settings
    used: ``kid_subset_size`` (1000, or half the smaller set when that is below 2000), ``kid_subsets``,
    ``isc_splits`` (at most 10), ``feature_layer_fid``, ``feature_layer_isc``.

    ``feature_layer`` picks the extractor's layer for FID and KID (default: ``"128"`` for digits,
    ``"2048"`` for Inception; Inception also offers ``"64"``, ``"192"``, ``"768"``). Results with
    different layers are not comparable, and :func:`check_comparable` says so.
    """
    # over 60 lines only by its docstring and the record it returns: the steps are short
    if extractor not in EXTRACTORS:
        raise MetricsError(f"unknown extractor {extractor!r}; choose one of {EXTRACTORS}")
    if extractor != "inception" and inception_weights is not None:
        raise MetricsError(f"inception_weights only applies to extractor='inception', not {extractor!r}")
    dev = _resolve_device(device)
    n_fake, n_real = int(_check_count(fake, "fake images")), int(_check_count(real, "real images"))
    if n_fake < 2 or n_real < 2:
        raise MetricsError(f"FID needs at least 2 images on each side, got {n_fake} fake and {n_real} real")
    fake_u8, real_u8 = _to_uint8(fake, "fake images"), _to_uint8(real, "real images")

    weights_path, layers, default_batch = _extractor(extractor, inception_weights, feature_layer)
    batch_size = _positive_int(batch_size if batch_size is not None else default_batch, "batch_size")
    splits, kid_subsets, kid_subset_size = _subsets(n_fake, n_real, isc, kid, isc_splits, kid_subsets,
                                                    kid_subset_size)

    kwargs: dict[str, Any] = dict(
        input1=_Uint8Images(fake_u8), input2=_Uint8Images(real_u8),
        fid=True, isc=bool(isc), kid=bool(kid), prc=False, ppl=False,
        feature_extractor=FIDELITY_NAMES[extractor],
        feature_layer_fid=layers["fid"], feature_layer_kid=layers["fid"], feature_layer_isc=layers["isc"],
        feature_extractor_weights_path=str(weights_path),
        batch_size=batch_size, cuda=dev.type == "cuda", save_cpu_ram=True,
        cache=False, verbose=False, datasets_download=False,
        isc_splits=splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
    )
    raw = _calculate(kwargs, dev)

    from torch_fidelity import (KEY_METRIC_FID, KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD,
                                KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD)

    def get(key):
        return float(raw[key]) if key in raw else None

    return {
        "fid": get(KEY_METRIC_FID),
        "is_mean": get(KEY_METRIC_ISC_MEAN) if isc else None,
        "is_std": get(KEY_METRIC_ISC_STD) if isc else None,
        "kid_mean": get(KEY_METRIC_KID_MEAN) if kid else None,
        "kid_std": get(KEY_METRIC_KID_STD) if kid else None,
        "extractor": extractor,
        "feature_extractor": FIDELITY_NAMES[extractor],
        "extractor_weights": _file_digest(weights_path),
        "feature_layer_fid": layers["fid"],
        "feature_layer_isc": layers["isc"] if isc else None,
        "n_fake": n_fake,
        "n_real": n_real,
        "kid_subset_size": kid_subset_size if kid else None,
        "kid_subsets": kid_subsets if kid else None,
        "isc_splits": splits if isc else None,
        "resolution": int(fake_u8.shape[-1]),
    }


def _subsets(n_fake: int, n_real: int, isc: bool, kid: bool, isc_splits, kid_subsets, kid_subset_size):
    """IS splits and KID subsets for sets of ``n_fake`` and ``n_real`` images, checked."""
    kid_subsets = _positive_int(kid_subsets, "kid_subsets")
    splits = min(ISC_SPLITS, n_fake) if isc_splits is None else _positive_int(isc_splits, "isc_splits")
    if isc and splits > n_fake:
        raise MetricsError(f"isc_splits={splits} exceeds the {n_fake} fake images")
    if kid_subset_size is None:
        # at most half the smaller set: subsets as large as the set would all be the whole set,
        # and KID's spread over them would read 0
        kid_subset_size = min(KID_SUBSET_SIZE, max(2, min(n_fake, n_real) // 2))
    kid_subset_size = _positive_int(kid_subset_size, "kid_subset_size")
    if kid and (kid_subset_size < 2 or kid_subset_size > min(n_fake, n_real)):
        raise MetricsError(f"kid_subset_size must lie in [2, {min(n_fake, n_real)}] (the smaller set's size), "
                           f"got {kid_subset_size}")
    return splits, kid_subsets, kid_subset_size


def _extractor(extractor: str, inception_weights, feature_layer) -> tuple[Path, dict[str, str], int]:
    """The weights file, the FID/KID and IS layers, and the default batch of ``extractor``."""
    if extractor == "digits":
        register_with_torch_fidelity()
        weights_path = DIGITS_WEIGHTS
        _read_digits_state(weights_path)  # a clear error before torch-fidelity starts
        layers = {"fid": DIGITS_FEATURE, "isc": DIGITS_LOGITS}
        default_batch = 500
    else:
        weights_path = check_inception_weights(inception_weights)
        layers = {"fid": "2048", "isc": "logits_unbiased"}
        default_batch = 64
    if feature_layer is not None:
        allowed = (DIGITS_FEATURE,) if extractor == "digits" else ("64", "192", "768", "2048")
        if feature_layer not in allowed:
            raise MetricsError(f"feature_layer {feature_layer!r} is not one of {extractor}'s FID layers {allowed}")
        layers["fid"] = feature_layer
    return Path(weights_path), layers, default_batch


def _calculate(kwargs: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    from torch_fidelity import calculate_metrics

    try:
        if dev.type == "cuda" and dev.index is not None:
            with torch.cuda.device(dev):
                return calculate_metrics(**kwargs)
        return calculate_metrics(**kwargs)
    except MetricsError:
        raise
    except ValueError as e:  # torch-fidelity reports bad settings as ValueError
        raise MetricsError(f"torch-fidelity rejected the metric settings: {e}") from e


def _check_count(images, what: str) -> int:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise MetricsError(f"{what} must be a torch.Tensor [N, 3, H, W], got "
                           f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    return images.shape[0]


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MetricsError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_comparable(results: Iterable[Mapping[str, Any]]) -> str:
    """Raise :class:`MetricsError` unless every result came from the same extractor, weights and layer.

    Returns the shared extractor name. Use before putting metric numbers side by side.
    """
    results = list(results)
    keys = {(r.get("extractor"), r.get("extractor_weights"), r.get("feature_layer_fid")) for r in results}
    if not results:
        raise MetricsError("no metric results to compare")
    if any(k[0] is None for k in keys):
        raise MetricsError("a metric result does not record its extractor; cannot compare it with others")
    if len(keys) > 1:
        desc = ", ".join(f"{e} ({w}, layer {l})" for e, w, l in sorted(keys, key=str))
        raise MetricsError(f"metric results come from different extractors, weights or layers ({desc}); "
                           "their numbers are not comparable")
    return next(iter(keys))[0]

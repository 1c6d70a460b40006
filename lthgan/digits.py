"""The embedded digit sets, made from what ships inside scikit-learn and scikit-image (no
download): ``digits`` (scikit-learn's 1,797 handwritten 8x8 digits, upscaled, white on black)
and ``digits-m`` (the same digits blended over patches of bundled photos, as MNIST-M).

Both are split deterministically from ``seed`` (1/6 of the digits go to ``test``) and share the
split, so index ``i`` of both is the same handwritten digit. :func:`lthgan.data.load` reads them.
"""
from __future__ import annotations

import functools
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import DataError

__all__ = ["embedded", "digits_m_all", "derive_seed", "TEST_FRACTION", "DIGIT_FILL"]

TEST_FRACTION = 1 / 6          # share of the embedded digits that goes to the test split
DIGIT_FILL = 0.8               # the digit's box spans this share of the image side (MNIST: 20/28)

# colour photos that ship inside the packages (no download): (package, sub-folder, file)
_BUNDLED_PHOTOS = (
    ("sklearn", "datasets/images", "china.jpg"),
    ("sklearn", "datasets/images", "flower.jpg"),
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "hubble_deep_field.jpg"),
    ("skimage", "data", "ihc.png"),
    ("skimage", "data", "retina.jpg"),
)



def derive_seed(seed: int, purpose: str) -> int:
    """A stream seed for ``purpose`` that differs from ``seed`` and from other purposes."""
    h = 1469598103934665603
    for ch in f"{seed}/{purpose}".encode():
        h = ((h ^ ch) * 1099511628211) % (1 << 63)
    return h


def _package_dir(package: str) -> Path | None:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------- embedded digits


def _split_indices(n: int, split: str, seed: int, name: str) -> Tensor:
    if split not in ("train", "test"):
        raise DataError(f"{name} has splits 'train' and 'test', got split={split!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "split")))
    n_test = int(round(n * TEST_FRACTION))
    part = perm[:n_test] if split == "test" else perm[n_test:]
    return part.sort().values


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 ``[1797, 8, 8]`` (0..16) and int64 labels.

    Read straight from the CSV that ships in scikit-learn (what ``load_digits`` reads), which
    spares the second-long ``sklearn.datasets`` import; ``load_digits`` is the fallback.
    """
    base = _package_dir("sklearn")
    csv = base / "datasets" / "data" / "digits.csv.gz" if base is not None else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise DataError("the embedded digits come from scikit-learn, which is not installed: "
                            "`pip install scikit-learn`") from e
        d = load_digits()
        images, labels = np.asarray(d.images, dtype=np.float32), np.asarray(d.target, dtype=np.int64)
    if images.shape != (1797, 8, 8):
        raise DataError(f"scikit-learn's digits have an unexpected shape {images.shape}; expected (1797, 8, 8)")
    return images, labels


@functools.lru_cache(maxsize=8)
def _digit_strokes(resolution: int) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as uint8 ``[N, 1, res, res]`` (white on black, centred) and their labels."""
    images, labels = _sklearn_digits()
    x = torch.from_numpy(images).unsqueeze(1) / 16.0                       # [N, 1, 8, 8] in [0, 1]
    inner = max(8, int(round(resolution * DIGIT_FILL)))
    x = F.interpolate(x, size=(inner, inner), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    before = (resolution - inner) // 2
    after = resolution - inner - before
    x = F.pad(x, (before, after, before, after))
    x = (x * 255.0).round_().to(torch.uint8)
    return x, torch.from_numpy(labels)


@functools.lru_cache(maxsize=1)
def _bundled_photos() -> tuple[Tensor, ...]:
    from PIL import Image

    photos = []
    for package, sub, fname in _BUNDLED_PHOTOS:
        base = _package_dir(package)
        path = base / sub / fname if base is not None else None
        if path is None or not path.is_file():
            continue
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        photos.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
    if not photos:
        raise DataError(
            "digits-m needs the photos bundled with scikit-learn (datasets/images/china.jpg, flower.jpg) "
            "or scikit-image (data/astronaut.png, ...), and none were found; reinstall scikit-learn "
            "and scikit-image (`pip install --force-reinstall scikit-learn scikit-image`)"
        )
    return tuple(photos)


@functools.lru_cache(maxsize=8)
def digits_m_all(resolution: int, seed: int) -> Tensor:
    """All 1,797 digits blended over photo patches, uint8 ``[N, 3, res, res]``.

    Patches are drawn for all digits at once from ``seed``, so every split sees the same image for
    the same underlying digit. Each patch is a square cut at a random place and a random
    scale (``res`` to ``2 res`` pixels) from a random bundled photo, resized to ``res``.
    """
    from torchvision.ops import roi_align

    strokes, _ = _digit_strokes(resolution)
    photos = _bundled_photos()
    n = strokes.shape[0]
    g = torch.Generator().manual_seed(derive_seed(seed, f"digits-m/{resolution}"))
    which = torch.randint(0, len(photos), (n,), generator=g)
    u = torch.rand((n, 3), generator=g, dtype=torch.float64)
    patches = torch.empty((n, 3, resolution, resolution), dtype=torch.uint8)
    for k, photo in enumerate(photos):
        sel = (which == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        h, w = photo.shape[1:]
        us = u[sel]
        side = torch.clamp(resolution + (us[:, 0] * (resolution + 1)).floor(), max=min(h, w))
        top = (us[:, 1] * (h - side + 1)).floor()
        left = (us[:, 2] * (w - side + 1)).floor()
        boxes = torch.stack([torch.zeros_like(side), left, top, left + side, top + side], dim=1)
        # one call crops and area-resamples every patch of this photo (adaptive sampling = antialias)
        crops = roi_align(photo[None].to(torch.float32), boxes.to(torch.float32),
                          output_size=(resolution, resolution), spatial_scale=1.0,
                          sampling_ratio=-1, aligned=True)
        patches[sel] = crops.round_().clamp_(0, 255).to(torch.uint8)
    blended = (patches.to(torch.int16) - strokes.to(torch.int16)).abs_().to(torch.uint8)
    return blended


def embedded(name: str, split: str, resolution: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    strokes, labels = _digit_strokes(resolution)
    idx = _split_indices(strokes.shape[0], split, seed, name)
    if name == "digits":
        images = strokes[idx].expand(-1, 3, -1, -1).contiguous()
    else:
        images = digits_m_all(resolution, seed)[idx]
    return images, labels[idx].clone(), idx

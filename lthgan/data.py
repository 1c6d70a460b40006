"""Image sets for lthgan: embedded digit sets, CIFAR-10/STL-10 from a local root, CycleGAN folders.

Every set is an :class:`ImageSet` holding uint8 ``[N, 3, H, W]`` images (grayscale sources are
replicated to RGB, so the same models and feature extractors fit every set).

Sources (``load(name, ...)``):

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits, upscaled (bicubic) to ``resolution``
  with a margin so the digit sits centred, as white strokes on black. Labels kept. Needs no download.
- ``digits-m``: the same digits blended over colour patches cut from the photos that ship inside
  scikit-learn and scikit-image, ``out = |patch - digit|`` as in MNIST-M. Labels kept.
- ``cifar10`` (``train``/``test``) and ``stl10`` (``train``/``test``/``unlabeled``/``train+unlabeled``):
  torchvision's readers on a local ``root``; they download only with ``download=True``.
- ``folder:PATH/A`` / ``folder:PATH/B``: CycleGAN's ``PATH/trainA``, ``PATH/testA``, ... layout.

The embedded sets are split deterministically from ``seed`` (1/6 of the digits go to ``test``);
``digits`` and ``digits-m`` share the split, so index ``i`` of both is the same handwritten digit.
:func:`load_unpaired` gives the two CycleGAN domains; for ``digits:digits-m`` the training domains
are disjoint halves of the train split, so no digit appears in both (the task is truly unpaired).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DataError",
    "ImageSet",
    "load",
    "load_unpaired",
    "list_images",
    "stack_sets",
    "random_images",
    "EMBEDDED",
    "IMAGE_EXTENSIONS",
    "NAMES",
]

EMBEDDED = ("digits", "digits-m")
NAMES = ("digits", "digits-m", "cifar10", "stl10", "folder:PATH/A", "folder:PATH/B")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

CYCLEGAN_LOAD_RATIO = 286 / 256

CYCLEGAN_DATASETS_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"

class DataError(ValueError):
    """A data set cannot be loaded as asked: missing files, a bad name, split or layout."""


# --------------------------------------------------------------------------- ImageSet


class ImageSet:
    """An in-memory image set.

    ``images`` is uint8 ``[N, C, H, W]``; ``labels`` a LongTensor ``[N]`` or None; ``source_index``
    (embedded digits only) the index of each image's handwritten digit among scikit-learn's 1,797,
    the same for ``digits`` and ``digits-m``. Without augmentation ``H == W == resolution``; a set built
    with ``augment=True`` stores its images at a larger load size and :meth:`batch` random-crops
    ``resolution``-sized windows (and flips them horizontally) when given a generator.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        name: str,
        resolution: int | None = None,
        split: str = "train",
        augment: bool = False,
        source_index: Tensor | None = None,
    ) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"ImageSet {name!r}: images must be a uint8 tensor [N, C, H, W], got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}"
            )
        n, _, h, w = images.shape
        if resolution is None:
            resolution = min(h, w)
        resolution = int(resolution)
        if resolution < 1 or h < resolution or w < resolution:
            raise DataError(
                f"ImageSet {name!r}: images of size {h}x{w} cannot give {resolution}x{resolution} crops"
            )
        if not augment and (h != resolution or w != resolution):
            raise DataError(
                f"ImageSet {name!r}: images are {h}x{w} but resolution is {resolution}; "
                "only a set with augment=True may store larger images"
            )
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (n,):
                raise DataError(f"ImageSet {name!r}: labels must have shape ({n},), got {tuple(labels.shape)}")
        if source_index is not None:
            source_index = torch.as_tensor(source_index, dtype=torch.long)
            if source_index.shape != (n,):
                raise DataError(f"ImageSet {name!r}: source_index must have shape ({n},), "
                                f"got {tuple(source_index.shape)}")
        self.images = images
        self.labels = labels
        self.name = name
        self.resolution = resolution
        self.split = split
        self.augment = bool(augment)
        self.source_index = source_index

    # ----------------------------------------------------------------- basics

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def load_size(self) -> tuple[int, int]:
        """(H, W) of the stored images (the resolution unless the set augments)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __repr__(self) -> str:
        lab = "labelled" if self.labels is not None else "unlabelled"
        aug = f", augment (load {self.load_size[0]}x{self.load_size[1]})" if self.augment else ""
        return (f"ImageSet({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"resolution={self.resolution}, channels={self.channels}, {lab}{aug})")

    def to(self, device: torch.device | str) -> "ImageSet":
        """The same set with its images (uint8) and labels on ``device``."""
        labels = self.labels.to(device) if self.labels is not None else None
        return ImageSet(self.images.to(device), labels, name=self.name, resolution=self.resolution,
                        split=self.split, augment=self.augment, source_index=self.source_index)

    def subset(self, indices, name: str | None = None) -> "ImageSet":
        """A new set holding the images at ``indices`` (in that order)."""
        idx = self._indices(indices)
        labels = self.labels[idx.to(self.labels.device)] if self.labels is not None else None
        src = self.source_index[idx.cpu()] if self.source_index is not None else None
        return ImageSet(self.images[idx], labels, name=name or self.name, resolution=self.resolution,
                        split=self.split, augment=self.augment, source_index=src)

    # ----------------------------------------------------------------- batches

    def _indices(self, indices) -> Tensor:
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
            raise DataError(f"indices into {self.name!r} must be integers, got dtype {idx.dtype}")
        idx = idx.reshape(-1).to(device=self.images.device, dtype=torch.long)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise DataError(
                f"indices into {self.name!r} must lie in [0, {n}), got range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return idx

    def batch(self, indices, generator: torch.Generator | None = None) -> Tensor:
        """float32 ``[B, C, resolution, resolution]`` in [-1, 1] for the images at ``indices``.

        For a set built with augmentation and a ``generator``: a random crop (and a random
        horizontal flip) per image, drawn from ``generator``. Otherwise the centre crop.
        """
        idx = self._indices(indices)
        h, w = self.load_size
        r = self.resolution
        if h == r and w == r:
            x = self.images[idx]
        elif self.augment and generator is not None:
            x = self._random_crops(idx, generator)
        else:
            top, left = (h - r) // 2, (w - r) // 2
            x = self.images[idx, :, top:top + r, left:left + r]
        return _to_unit_range(x)

    def _random_crops(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        # one gather does the crop and the flip for the whole batch: no per-image Python work
        h, w = self.load_size
        r = self.resolution
        b = idx.numel()
        gdev = generator.device
        top = torch.randint(0, h - r + 1, (b,), generator=generator, device=gdev).to(self.device)
        left = torch.randint(0, w - r + 1, (b,), generator=generator, device=gdev).to(self.device)
        flip = (torch.rand((b,), generator=generator, device=gdev) < 0.5).to(self.device)
        ar = torch.arange(r, device=self.device)
        rows = top[:, None] + ar                                              # [B, r]
        cols = torch.where(flip[:, None], left[:, None] + (r - 1) - ar, left[:, None] + ar)
        ch = torch.arange(self.channels, device=self.device)
        return self.images[idx[:, None, None, None], ch[None, :, None, None],
                           rows[:, None, :, None], cols[:, None, None, :]]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """A batch of ``batch_size`` images drawn uniformly with replacement."""
        if int(batch_size) < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        idx = torch.randint(0, len(self), (int(batch_size),), generator=generator,
                            device=generator.device if generator is not None else "cpu")
        return self.batch(idx, generator)

    def all(self) -> Tensor:
        """Every image as float32 ``[N, C, resolution, resolution]`` in [-1, 1], without augmentation."""
        return self.batch(torch.arange(len(self), device=self.device))


def _to_unit_range(x: Tensor) -> Tensor:
    return x.to(torch.float32).div_(127.5).sub_(1.0)


# --------------------------------------------------------------------------- load


def load(
    name: str,
    split: str = "train",
    resolution: int = 32,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    *,
    augment: bool | None = None,
    load_size: int | None = None,
) -> ImageSet:
    """Load the image set ``name`` (see the module docstring for the names).

    ``augment`` (default: on for a folder's train split, off elsewhere) stores the images at
    ``load_size`` (default ``round(resolution * 286 / 256)``, CycleGAN's recipe) so that
    :meth:`ImageSet.batch` can random-crop and flip them.
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"data set name must be a non-empty string, got {name!r}; choose one of {NAMES}")
    resolution = _check_resolution(resolution)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DataError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    is_folder = name.startswith("folder:")
    if augment is None:
        augment = is_folder and split == "train"
    augment = bool(augment)
    size = _load_size(resolution, load_size) if augment else resolution

    source_index = None
    if name in EMBEDDED:
        from .digits import embedded

        images, labels, source_index = embedded(name, split, resolution, seed)
    elif name == "cifar10":
        images, labels = _cifar10(split, root, download)
    elif name == "stl10":
        images, labels = _stl10(split, root, download)
    elif is_folder:
        path, side = _parse_folder(name)
        images = _read_folder(path, side, split, size)
        labels = None
    else:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")

    if images.shape[-1] != size or images.shape[-2] != size:
        images = _resize_uint8(images, size)
    return ImageSet(images, labels, name=name, resolution=resolution, split=split, augment=augment,
                    source_index=source_index)


def load_unpaired(spec: str, split: str = "train", resolution: int = 32, **kw) -> tuple[ImageSet, ImageSet]:
    """The two domains ``(A, B)`` of an unpaired translation task.

    ``spec`` is ``"NAME_A:NAME_B"`` (e.g. ``"digits:digits-m"``, the CycleGAN default) or
    ``"folder:PATH"`` (CycleGAN's ``PATH/trainA`` ... layout, e.g. ``folder:/data/horse2zebra``).

    When both domains are rendered from the same underlying digits (``digits``/``digits-m``), the
    train split is cut into two disjoint halves drawn from ``seed``: A takes one and B the other,
    so no digit is seen in both domains. Test splits stay whole in both domains, so every test
    digit can be translated and ``label kept`` measured on all of them.

    Other keyword arguments (``root``, ``download``, ``seed``, ``augment``, ``load_size``) are
    :func:`load`'s, applied to both domains.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise DataError(
            f"unpaired data spec must look like 'digits:digits-m' or 'folder:PATH', got {spec!r}"
        )
    kw = dict(kw, split=split, resolution=resolution)
    seed = kw.get("seed", 0)
    if spec.startswith("folder:"):
        path = spec[len("folder:"):].rstrip("/\\")
        if not path:
            raise DataError(f"unpaired data spec {spec!r} names no folder; expected 'folder:PATH'")
        return load(f"folder:{path}/A", **kw), load(f"folder:{path}/B", **kw)
    name_a, _, name_b = spec.partition(":")
    for n in (name_a, name_b):
        if n.startswith("folder") or n not in EMBEDDED + ("cifar10", "stl10"):
            raise DataError(
                f"unpaired data spec {spec!r}: {n!r} is not a data set name; expected 'NAME_A:NAME_B' "
                f"with names from {EMBEDDED + ('cifar10', 'stl10')}, or 'folder:PATH'"
            )
    a, b = load(name_a, **kw), load(name_b, **kw)
    if split == "train" and name_a in EMBEDDED and name_b in EMBEDDED:
        n = len(a)
        from .digits import derive_seed

        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "unpaired")))
        half_a, half_b = perm[: n // 2].sort().values, perm[n // 2:].sort().values
        a = a.subset(half_a, name=a.name)
        b = b.subset(half_b, name=b.name)
    return a, b


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension, case-insensitive) directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- helpers


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise DataError(f"resolution must be an integer >= 8, got {resolution!r}")
    return int(resolution)


def _load_size(resolution: int, load_size) -> int:
    if load_size is None:
        return int(round(resolution * CYCLEGAN_LOAD_RATIO))
    if isinstance(load_size, bool) or not isinstance(load_size, (int, np.integer)) or load_size < resolution:
        raise DataError(f"load_size must be an integer >= resolution ({resolution}), got {load_size!r}")
    return int(load_size)


def _resize_uint8(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Resize uint8 ``[N, C, H, W]`` to ``size``x``size`` (antialiased bilinear), deterministic."""
    out = torch.empty(images.shape[:2] + (size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float32)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------- torchvision sets


def _require_root(name: str, root, folder: str, what: str, download: bool) -> str:
    how = (f"pass root=DIR where DIR/{folder} holds {what}, or download=True to fetch it into "
           "DIR from the internet")
    if root is None:
        raise DataError(f"{name} is read from a local folder and no root was given: {how}")
    root = os.fspath(root)
    if not download and not os.path.isdir(os.path.join(root, folder)):
        raise DataError(f"{name}: {os.path.join(root, folder)} does not exist. Put {what} "
                        f"(the folder {folder}) under {root}, or pass download=True")
    if download:
        os.makedirs(root, exist_ok=True)
    return root


def _torchvision_call(name: str, root: str, download: bool, fn):
    try:
        return fn()
    except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found or corrupted", URLError
        action = "download" if download else "read"
        raise DataError(f"{name}: could not {action} the data set under {root}: {e}") from e


def _cifar10(split: str, root, download: bool) -> tuple[Tensor, Tensor]:
    if split not in ("train", "test"):
        raise DataError(f"cifar10 has splits 'train' and 'test', got split={split!r}")
    root = _require_root("cifar10", root, "cifar-10-batches-py", "CIFAR-10's python batches "
                         "(cifar-10-python.tar.gz unpacked)", download)
    from torchvision.datasets import CIFAR10

    ds = _torchvision_call("cifar10", root, download,
                           lambda: CIFAR10(root, train=(split == "train"), download=download))
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.long)


STL10_SPLITS = ("train", "test", "unlabeled", "train+unlabeled")


def _stl10(split: str, root, download: bool) -> tuple[Tensor, Tensor | None]:
    if split not in STL10_SPLITS:
        raise DataError(f"stl10 has splits {STL10_SPLITS}, got split={split!r}")
    root = _require_root("stl10", root, "stl10_binary", "STL-10's binary files "
                         "(stl10_binary.tar.gz unpacked)", download)
    from torchvision.datasets import STL10

    ds = _torchvision_call("stl10", root, download, lambda: STL10(root, split=split, download=download))
    images = torch.from_numpy(np.ascontiguousarray(ds.data))            # already [N, 3, 96, 96]
    labels = None if split == "unlabeled" else torch.as_tensor(ds.labels, dtype=torch.long)
    return images, labels


# --------------------------------------------------------------------------- CycleGAN folders


def _parse_folder(name: str) -> tuple[Path, str]:
    rest = name[len("folder:"):].rstrip("/\\")
    path, _, side = rest.replace("\\", "/").rpartition("/")
    if side not in ("A", "B") or not path:
        raise DataError(
            f"folder data set {name!r} must name a domain: 'folder:PATH/A' or 'folder:PATH/B' "
            f"(reading PATH/trainA, PATH/testA, ... in CycleGAN's layout)"
        )
    return Path(path), side


def _folder_layout_hint(path: Path) -> str:
    return (f"expected CycleGAN's layout: {path}/trainA, {path}/trainB, {path}/testA, {path}/testB, "
            f"each holding image files ({', '.join(IMAGE_EXTENSIONS)}); e.g. unzip horse2zebra.zip "
            f"from {CYCLEGAN_DATASETS_URL} so that PATH is the unzipped horse2zebra folder")


def _read_folder(path: Path, side: str, split: str, size: int) -> Tensor:
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise DataError(f"folder data sets have splits like 'train' and 'test', got split={split!r}")
    folder = path / f"{split}{side}"
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a folder; {_folder_layout_hint(path)}")
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder} holds no image files; {_folder_layout_hint(path)}")
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(lambda p: _read_image(p, size), files))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def random_images(n: int, channels: int, resolution: int, seed: int = 0, name: str = "random") -> ImageSet:
    """``n`` images of uniform random pixels (a stand-in of the right shape for profiling and
    benchmarks, not data to learn from)."""
    g = torch.Generator().manual_seed(int(seed))
    images = torch.randint(0, 256, (n, channels, resolution, resolution), dtype=torch.uint8, generator=g)
    return ImageSet(images, None, name=name, resolution=resolution)


def stack_sets(sets: Sequence[ImageSet], name: str | None = None) -> ImageSet:
    """Concatenate sets of the same resolution and storage size into one set."""
    if not sets:
        raise DataError("stack_sets needs at least one ImageSet")
    first = sets[0]
    for s in sets[1:]:
        if s.resolution != first.resolution or s.load_size != first.load_size or s.augment != first.augment:
            raise DataError(f"cannot stack {s!r} with {first!r}: resolution, load size or augmentation differ")
    labels = torch.cat([s.labels for s in sets]) if all(s.labels is not None for s in sets) else None
    src = (torch.cat([s.source_index for s in sets])
           if all(s.source_index is not None for s in sets) else None)
    return ImageSet(torch.cat([s.images for s in sets]), labels, name=name or "+".join(s.name for s in sets),
                    resolution=first.resolution, split=first.split, augment=first.augment, source_index=src)

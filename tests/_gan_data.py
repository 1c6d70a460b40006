"""A small in-memory stand-in for ``lthgan.data.ImageSet`` used by the GAN tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TinyImageSet:
    """uint8 images of smooth random blobs; ``batch`` flips horizontally with the generator."""

    def __init__(self, n: int, res: int, channels: int = 3, seed: int = 0, labels: bool = True,
                 name: str = "tiny"):
        g = torch.Generator().manual_seed(seed)
        base = torch.rand(n, channels, max(1, res // 4), max(1, res // 4), generator=g)
        img = F.interpolate(base, size=(res, res), mode="bilinear", align_corners=False)
        self.images = (img * 255).round().to(torch.uint8)
        self.labels = torch.randint(0, 10, (n,), generator=g) if labels else None
        self.name = name
        self.resolution = res

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices, generator=None):
        x = self.images[indices].float() / 127.5 - 1.0
        if generator is not None:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def all(self):
        return self.images.float() / 127.5 - 1.0

"""Content features for distillation (GAN-Slimming style): a frozen network whose feature maps
of a student generator's outputs are pulled towards those of the dense teacher's outputs for the
same inputs (an L1 loss, as GAN Slimming's VGG content loss).

* ``digits``: the bundled digits classifier's convolutions up to its 64-channel 16×16 maps; it
  needs no download, so it serves the embedded data sets;
* ``vgg``: VGG-16 up to ``relu2_2`` (GAN Slimming's layer), from a local file of torchvision's
  ``vgg16`` weights (``vgg16-397923af.pth``); lthgan never downloads it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import MetricsError, load_digits_classifier

__all__ = ["CONTENT_EXTRACTORS", "VGG16_URL", "content_network", "content_loss", "check_vgg_weights"]

CONTENT_EXTRACTORS = ("digits", "vgg")
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
_VGG_RELU2_2 = 9          # torchvision's vgg16().features[:9] ends at relu2_2
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Content(nn.Module):
    """Images in [-1, 1] -> feature maps, frozen (eval mode, no gradients to its weights)."""

    def __init__(self, body: nn.Module, prepare):
        super().__init__()
        self.body = body
        self.prepare = prepare
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen: BatchNorm keeps its statistics
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.prepare(x))


def check_vgg_weights(path) -> dict[str, Tensor]:
    """The VGG-16 ``features`` weights of ``path`` (torchvision's state dict), checked:
    :class:`MetricsError` saying what is wrong otherwise."""
    p = Path(path) if path is not None else None
    if p is None or not p.is_file():
        raise MetricsError(f"the vgg content extractor needs VGG-16 weights and lthgan never downloads them: "
                           f"fetch {VGG16_URL} on a connected machine and pass its local path"
                           + (f" ({path}: no such file)" if path is not None else ""))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors vary
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:100]
        raise MetricsError(f"{p} is not a PyTorch weights file that can be loaded safely ({first}); expected "
                           f"torchvision's VGG-16 state dict ({os.path.basename(VGG16_URL)})") from e
    want = {f"features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias")}
    if not isinstance(state, dict) or not want <= set(state):
        raise MetricsError(f"{p} is not torchvision's VGG-16 state dict (it lacks features.0-7)")
    return {k: v for k, v in state.items() if k.startswith("features.")}


def content_network(kind: str = "digits", vgg_weights=None, device="cpu") -> nn.Module:
    """The frozen feature network ``kind`` (see the module docstring)."""
    if kind == "digits":
        clf = load_digits_classifier(device="cpu")
        return _Content(clf.body[:10], clf._prepare).to(device)
    if kind == "vgg":
        from torchvision.models import vgg16

        net = vgg16(weights=None).features[:_VGG_RELU2_2]
        state = check_vgg_weights(vgg_weights)
        net.load_state_dict({k[len("features."):]: v for k, v in state.items()
                             if int(k.split(".")[1]) < _VGG_RELU2_2})
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

        def prepare(x: Tensor) -> Tensor:
            return ((x + 1) / 2 - mean.to(x.device)) / std.to(x.device)

        return _Content(net, prepare).to(device)
    raise MetricsError(f"unknown content extractor {kind!r}; expected one of {', '.join(CONTENT_EXTRACTORS)}")


def content_loss(features: nn.Module, student: Tensor, teacher: Tensor) -> Tensor:
    """L1 between the feature maps of the student's and the teacher's outputs."""
    return F.l1_loss(features(student.float()), features(teacher.float()))

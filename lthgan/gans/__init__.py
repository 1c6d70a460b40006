"""GAN families on lthgan's masked layers, each a plug-in (:class:`Family`): SNGAN (CIFAR-10),
CycleGAN (horse2zebra) and DCGAN.

``build`` makes a :class:`GANTask` (seeded models), ``make_trainer`` a :class:`Trainer`
(``step``, ``state_dict``/``load_state_dict``, ``reset``, ``eval_models``) and
``eval_pairs`` the images to score; ``family(name)`` is everything else lthgan knows about a
family. Distributed helpers live in :mod:`lthgan.gans.dist`.
"""
from __future__ import annotations

from . import dist
from .base import (
    EvalPair,
    GANTask,
    Trainer,
    TrainingDiverged,
    hinge_d_loss,
    hinge_g_loss,
    kd_kl_loss,
    lsgan_loss,
)
from .family import (
    PRESETS,
    EvalData,
    Family,
    ImageData,
    UnpairedData,
    build,
    config_from_dict,
    default_config,
    eval_pairs,
    family,
    init_weights,
    make_trainer,
    names,
    register,
)

# the families: one line each (see docs/DESIGN.md, "Adding a GAN family")
register("lthgan.gans.sngan")
register("lthgan.gans.cyclegan")
register("lthgan.gans.dcgan")

from .cyclegan import CycleGANConfig, CycleGANTrainer, HistoryBuffer  # noqa: E402
from .sngan import SNGANConfig, SNGANTrainer  # noqa: E402

#: the registered family names
FAMILIES = names()

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Family",
    "EvalData",
    "ImageData",
    "UnpairedData",
    "family",
    "names",
    "register",
    "SNGANConfig",
    "CycleGANConfig",
    "GANTask",
    "EvalPair",
    "Trainer",
    "SNGANTrainer",
    "CycleGANTrainer",
    "HistoryBuffer",
    "TrainingDiverged",
    "build",
    "config_from_dict",
    "default_config",
    "init_weights",
    "make_trainer",
    "eval_pairs",
    "hinge_d_loss",
    "hinge_g_loss",
    "lsgan_loss",
    "kd_kl_loss",
    "dist",
]

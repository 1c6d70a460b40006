"""GAN families on lthgan's masked layers: SNGAN (CIFAR-10) and CycleGAN (horse2zebra).

``build`` makes a :class:`GANTask` (seeded models), ``make_trainer`` a :class:`Trainer`
(``step``, ``state_dict``/``load_state_dict``, ``reset``, ``eval_models``) and
``eval_pairs`` the images to score. Distributed helpers live in :mod:`lthgan.gans.dist`.
"""
from __future__ import annotations

from . import dist
from .base import (
    FAMILIES,
    PRESETS,
    EvalPair,
    GANTask,
    Trainer,
    TrainingDiverged,
    build,
    default_config,
    eval_pairs,
    hinge_d_loss,
    hinge_g_loss,
    init_weights,
    kd_kl_loss,
    lsgan_loss,
    make_trainer,
)
from .cyclegan import CycleGANConfig, CycleGANTrainer, HistoryBuffer
from .sngan import SNGANConfig, SNGANTrainer

__all__ = [
    "FAMILIES",
    "PRESETS",
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

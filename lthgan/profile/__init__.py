"""``lthgan profile``: what pruning costs in a training step, measured with ``torch.profiler``.

The same model is trained twice side by side, from the same initial weights:

* **dense**: plain torch layers (``lthgan.nn.unmasked``), no masks anywhere;
* **masked**: lthgan's masked layers, pruned by ``lthgan.prune.global_magnitude`` to
  ``--sparsity`` (each generator of a GAN with its own global threshold, as in the paper).

Step times are wall-clock medians over ``--steps`` steps, dense and masked interleaved so that
both see the same machine load. One more pass over the masked model runs under
``torch.profiler`` to split the time spent inside lthgan's ops (``lthgan::masked_conv2d``,
``lthgan::masked_convolution_backward``, ...) into forward and backward, and within those into
the convolution / matmul itself and the rest (masking, casting). The one-off costs of an IMP
round (pruning, rewinding with ``lthgan.ops.rewind_``, resetting the optimizers) are timed too.

Training data are random images: data loading is not what this command measures.

Modules: :mod:`.workload` (a trainable setup, timing, rewinding), :mod:`.optrace` (lthgan's
ops in a ``torch.profiler`` trace), :mod:`.driver` (the shared dense-vs-masked run),
:mod:`.result` (what was measured and its table), :mod:`.gan` (registered GAN families) and
:mod:`.model` (any ``module:factory`` model).
"""
from __future__ import annotations

from .gan import gan_data, profile_gan
from .model import profile_model
from .result import ProfileResult, format_table
from .workload import LAYER_TYPES, ProfileError, Rewinder

__all__ = ["ProfileError", "ProfileResult", "Rewinder", "format_table", "gan_data", "profile_gan",
           "profile_model", "LAYER_TYPES"]

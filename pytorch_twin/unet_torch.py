"""The PyTorch twin: the U-Net of the original PyTorch coursework, so its checkpoints load here.

This module is the only one in the project that imports ``torch`` at the top, and nothing else
imports it except ``pytorch_twin/convert_weights.py`` and ``pytorch_twin/compare_frameworks.py``: PyTorch is optional
(``pip install torch==2.13.0``, the CPU wheel). It exists for two jobs: loading a checkpoint
saved by the original PyTorch work (to evaluate it with this project's scripts after
``pytorch_twin/convert_weights.py torch2keras``), and comparing TensorFlow with PyTorch on equal terms
(``pytorch_twin/compare_frameworks.py``).

Architecture (defaults; ``filters`` sets the depth and widths for tiny test variants)
------------------------------------------------------------------------------------
Input ``(batch, 1, 512, 128)`` (NCHW: channels first, then bins, then frames), the
normalised mixture magnitude; output the sigmoid mask, same shape. The vocal estimate is
``mask * input`` (the Keras model's ``vocals`` output; here the caller multiplies, as the
coursework did).

Encoder block i = 1..6, ``f = 16, 32, 64, 128, 256, 512``::

    h_i = leaky_relu(bn_i(conv_i(h_{i-1})), 0.2)    conv_i = Conv2d(c_in, f_i, 5, stride=2, padding=2)

Decoder block i = 1..5 (``f = 256, 128, 64, 32, 16``), then the mask::

    d_1 = dropout(relu(debn_1(deconv_1(h_6))), 0.5)
    d_i = relu(debn_i(deconv_i(cat(d_{i-1}, h_{7-i})))) [dropout 0.5 for i <= 3]
    mask = sigmoid(deconv_6(cat(d_5, h_1)))
    deconv_i = ConvTranspose2d(c_in, f_i, 5, stride=2, padding=2, output_padding=1)

``cat`` is ``torch.cat((decoder, skip), dim=1)``: the decoder's channels first, then the
encoder's (``skip_first=True`` builds the other order, for a coursework that wrote
``cat((skip, decoder))``; the state_dict cannot tell the two apart).

The state_dict (default filters; ``c`` = channels) -- what ``load_state_dict`` expects
---------------------------------------------------------------------------------------
==========================  =========================  ===============================
key                         shape                      notes
==========================  =========================  ===============================
``conv{i}.weight``          ``(f_i, c_in, 5, 5)``      c_in = 1, 16, 32, 64, 128, 256
``conv{i}.bias``            ``(f_i,)``                 f_i = 16, 32, 64, 128, 256, 512
``bn{i}.weight``/``bias``   ``(f_i,)``                 i = 1..6
``bn{i}.running_mean/var``  ``(f_i,)``
``bn{i}.num_batches_tracked`` ``()``                   ignored by the conversion
``deconv{i}.weight``        ``(c_in, f_i, 5, 5)``      ConvTranspose2d: in, then out
                                                       c_in = 512, 512, 256, 128, 64, 32
                                                       f_i = 256, 128, 64, 32, 16, 1
``deconv{i}.bias``          ``(f_i,)``                 i = 1..6
``debn{i}.*``               ``(f_i,)``                 as ``bn``, i = 1..5 (no debn6)
==========================  =========================  ===============================

79 entries in all, 9,826,321 parameters (the Keras model's count). A ``module.`` prefix
(``nn.DataParallel``) is accepted by the loader in ``pytorch_twin/convert_weights.py``. Batch norm uses
PyTorch's defaults (epsilon 1e-5, momentum 0.1), which the Keras model copies; its running
variance is PyTorch's too (the unbiased batch variance), unless ``keras_batchnorm=True`` builds
:class:`KerasBatchNorm2d` instead (Keras' biased one, for the ablation of issue 26).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Encoder filters of the original (the decoder mirrors them), as in ``unet_model.FILTERS``.
FILTERS = (16, 32, 64, 128, 256, 512)


class UNet(nn.Module):
    """The coursework's U-Net (see the module docstring): ``(B, 1, H, W)`` -> mask ``(B, 1, H, W)``.

    ``filters`` lists the encoder widths (their count is the depth; H and W must divide by
    ``2 ** depth``); ``dropout`` is applied in training mode after the first
    ``dropout_layers`` decoder blocks; ``skip_first`` puts the encoder's channels first in the
    skip concatenation; ``keras_batchnorm`` updates batch norm's running variance as Keras does
    (:class:`KerasBatchNorm2d`; the state_dict is the same).
    """

    def __init__(self, filters: tuple[int, ...] = FILTERS, kernel_size: int = 5, dropout: float = 0.5,
                 dropout_layers: int = 3, leaky_slope: float = 0.2, skip_first: bool = False,
                 keras_batchnorm: bool = False):
        super().__init__()
        self.filters = tuple(int(f) for f in filters)
        self.depth = len(self.filters)
        if self.depth < 1 or min(self.filters) < 1:
            raise ValueError(f"filters must be a non-empty list of positive integers, got {filters}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (padding k//2 keeps the coursework's shapes), got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.dropout, self.dropout_layers = float(dropout), int(dropout_layers)
        self.leaky_slope, self.skip_first = float(leaky_slope), bool(skip_first)
        pad = kernel_size // 2
        batch_norm = KerasBatchNorm2d if keras_batchnorm else nn.BatchNorm2d
        # add_module with the coursework's attribute names keeps its state_dict keys (conv1.weight, ...).
        c_in = 1
        for i, f in enumerate(self.filters, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(c_in, f, kernel_size, stride=2, padding=pad))
            self.add_module(f"bn{i}", batch_norm(f))
            c_in = f
        # Decoder i outputs the width of encoder depth-i; from the second block on its input is
        # the previous decoder output concatenated with the skip of the same width (2f).
        outs = list(reversed(self.filters[:-1])) + [1]
        for i, f in enumerate(outs, start=1):
            self.add_module(f"deconv{i}", nn.ConvTranspose2d(c_in, f, kernel_size, stride=2, padding=pad,
                                                             output_padding=1))
            if i < self.depth:
                self.add_module(f"debn{i}", batch_norm(f))
            c_in = 2 * f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask ``(B, 1, H, W)`` in [0, 1] for the normalised mixture magnitude ``x`` of that shape."""
        skips = []
        for i in range(1, self.depth + 1):
            # (B, C, H, W) -> (B, f_i, H/2, W/2)
            x = F.leaky_relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)), self.leaky_slope)
            skips.append(x)
        skips.pop()  # the bottleneck feeds the first decoder block directly
        for i in range(1, self.depth):
            # (B, C, h, w) -> (B, f, 2h, 2w) -> concatenated with the skip: (B, 2f, 2h, 2w)
            x = F.relu(getattr(self, f"debn{i}")(getattr(self, f"deconv{i}")(x)))
            if i <= self.dropout_layers and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=self.training)
            skip = skips.pop()
            x = torch.cat((skip, x) if self.skip_first else (x, skip), dim=1)
        return torch.sigmoid(getattr(self, f"deconv{self.depth}")(x))  # (B, 1, H, W)


class KerasBatchNorm2d(nn.BatchNorm2d):
    """PyTorch's batch norm with Keras' update of the running variance (issue 26's ablation).

    In training both normalise with the batch mean and the biased batch variance, and both move
    the running statistics by ``momentum`` (0.1 here, 0.9 in Keras' convention) towards the
    batch's; they differ in which variance: PyTorch keeps the unbiased one (times n / (n - 1),
    n = batch x height x width values per channel), Keras the biased one. Only the running
    statistics, used in inference mode (validation, separation), change; the training steps do
    not.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        with torch.no_grad():  # the update Keras makes, with the biased variance
            mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
            self.num_batches_tracked += 1
        # normalised with the batch's statistics, as in PyTorch's and Keras' training mode
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def unet_from_state_dict(state_dict: dict, **kwargs) -> UNet:
    """A :class:`UNet` whose depth, widths and kernel size are read from a state_dict's shapes.

    The state_dict is not loaded (see ``convert_weights.load_torch_checkpoint``, which checks it
    and names every difference). ``kwargs`` (dropout, leaky_slope, skip_first) are not stored
    in a state_dict and pass through.
    """
    filters, i = [], 1
    while f"conv{i}.weight" in state_dict:
        filters.append(int(state_dict[f"conv{i}.weight"].shape[0]))
        i += 1
    if not filters:
        raise ValueError("no conv1.weight in the state_dict: not the coursework's U-Net layout")
    kernel_size = int(state_dict["conv1.weight"].shape[-1])
    return UNet(tuple(filters), kernel_size=kernel_size, **kwargs)


def predict_mask(module: nn.Module, patches: np.ndarray) -> np.ndarray:
    """The mask of a batch of patches in the Keras layout, ``(B, bins, frames, 1)`` -> same shape.

    Runs ``module`` in inference mode (``eval()``, no gradients; its mode is restored after) on
    channels-first tensors; usable as ``inference.separate``'s model (any callable with this
    signature).
    """
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(patches, -1, 1), dtype=np.float32))
            return np.moveaxis(module(x).numpy(), 1, -1)
    finally:
        module.train(was_training)

"""The U-Net's mask for inference only, in fewer and faster operations (the speed layer).

``unet_model.py`` holds the network as the paper describes it and as it is trained. This module
computes the same mask from a trained model's weights, for prediction only, arranged for speed on
CPUs (``benchmarks/bench_model.py`` and ``bench_layers.py`` measure it; ``benchmarks/RESULTS.md``
has the figures):

* each batch norm is folded into the convolution before it (scaled kernel, shifted bias);
* encoder convolutions with at most :data:`MATMUL_POSITIONS` output positions gather their
  5x5 windows (from a free reshape that exposes the stride-2 parity, not strided slices) and
  run as one matrix product;
* a stride-2 transposed convolution cropped as PyTorch's is, per output parity (row, column), a
  stride-1 convolution with the kernel taps of that parity (3x3, 3x2, 2x3, 2x2 of the 5x5,
  :func:`parity_taps`): small decoder blocks run those as four matrix products, the one-channel
  mask layer as one convolution to four channels; both are interleaved by ``depth_to_space``;
* optionally everything in bfloat16 (:func:`bfloat16_is_fast` says where that pays; for
  training, ``train.py --precision auto``, :func:`auto_precision`).

:func:`inference_mask_model` checks the result against ``unet_model.mask_model`` on a patch
when it builds it, and returns ``mask_model`` instead, with a warning, when they disagree: a
student who changes ``build_unet`` gets the network they wrote, only slower.

:func:`fastest_mask_model` chooses what runs (this model, in which precision, or the model as
trained), :func:`mask_predictor` wraps it as the function the ``Separator`` calls, and
:func:`device_name` says where.

This module defines a Keras layer, so it imports Keras at the top; the scripts import it inside
the functions that need it. It imports ``unet_model`` because it is defined by that network: it
reads ``build_unet``'s settings back from a model (``unet_model.read_settings``) and checks
itself against ``unet_model.mask_model``.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
from keras import ops

import unet_model

#: Output positions (rows x columns) up to which an encoder convolution, and input positions up
#: to which a decoder's transposed convolution, run as matrix products over gathered windows
#: instead of convolutions: at these sizes (the bottleneck: 8x2, 16x4) oneDNN's convolutions are
#: slower than the matrix product (benchmarks/bench_layers.py).
MATMUL_POSITIONS = 64
#: Decoder blocks with fewer output channels than this (the one-channel mask layer) run as a
#: stride-1 convolution to four phases and a depth-to-space interleave (sub-pixel
#: convolution): a transposed convolution to one channel is the slowest layer of the U-Net.
SUBPIXEL_BELOW = 8
PRECISIONS = ("float32", "bfloat16")
#: Largest difference from ``unet_model.mask_model`` that the self-check accepts, by precision.
#: float32: the largest absolute difference (it agrees to float rounding).
#: bfloat16: the *mean* absolute difference, since its 8-bit mantissa leaves isolated cells far
#: off while the mean stays small; a wrongly folded weight moves the whole mask.
CHECK_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-3}


def bfloat16_is_fast() -> bool:
    """Whether bfloat16 inference beats float32 here: TensorFlow with oneDNN (its default on x86)
    on a CPU with bfloat16 dot-product instructions (AVX512-BF16 or AMX, from /proc/cpuinfo;
    False where there is none: macOS, Windows). Without them bfloat16 is emulated, several
    times slower than float32."""
    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") in ("0", "false", "False"):
        return False
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def auto_precision() -> tuple[str, str]:
    """``train.py --precision auto``: ``("bfloat16", why)`` where mixed precision trains faster here, else
    ``("float32", why)``.

    bfloat16 pays where the hardware multiplies in it: GPUs from NVIDIA's Ampere on (compute
    capability 8.0), and CPUs with AVX512-BF16 or AMX under TensorFlow's oneDNN; elsewhere it is
    emulated and slower than float32 (benchmarks/RESULTS.md, "Mixed-precision training").
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
            if tuple(capability) >= (8, 0):
                return "bfloat16", f"a GPU of compute capability {capability[0]}.{capability[1]}"
            return "float32", "this GPU has no bfloat16 units"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            if torch.cuda.is_bf16_supported():
                return "bfloat16", "a GPU with bfloat16 units"
            return "float32", "this GPU has no bfloat16 units"
    if bfloat16_is_fast():
        return "bfloat16", "this CPU has bfloat16 instructions"
    return "float32", f"no bfloat16 instructions for the {backend} backend on this CPU"


def fastest_mask_model(model, precision: str = "auto"):
    """The fastest model of ``model``'s mask here, and the precision it computes in: ``(masker, precision)``.

    ``model`` is a Keras model with a layer named ``mask``, usually a U-Net from
    ``unet_model.build_unet``, which runs as :func:`inference_mask_model` in ``precision``:
    ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where :func:`bfloat16_is_fast`). A
    model whose output is its mask runs as it is; a model of another layout runs its mask layer
    as trained (``unet_model.mask_model``), in float32, and raises ``ValueError`` when bfloat16
    was asked for explicitly, as it does when it has no layer ``mask``.
    """
    if "mask" not in unet_model.layer_names(model):
        raise ValueError(f"model {model.name!r} has no layer named 'mask'; build it with unet_model.build_unet")
    chosen = precision == "auto"
    if chosen:
        precision = "bfloat16" if bfloat16_is_fast() else "float32"
    if model.get_layer("mask").output is model.outputs[0]:
        return model, precision
    try:
        return inference_mask_model(model, precision), precision
    except ValueError as err:  # not build_unet's layout: its own mask layer, as trained
        if precision != "float32" and not chosen:
            raise ValueError(f"{err}; it runs in float32 only") from None
        return unet_model.mask_model(model), "float32"


def mask_predictor(model, params, precision: str = "float32"):
    """The function the ``Separator`` calls on normalised patches, and its precision: ``(predict, precision)``.

    ``predict`` maps patches ``(batch, n_bins, patch_frames, 1)`` to their masks. A Keras
    ``model`` must take the patches of ``params`` (``audio.AudioParams``) and runs as
    :func:`fastest_mask_model` chooses in ``precision``; any other callable (an oracle mask, the
    PyTorch twin) runs as it is, in float32. Raises ``ValueError`` for a model of other patches
    or precision, ``TypeError`` for a model that is neither.
    """
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise TypeError(f"model must be a keras.Model, a path or a callable, got {type(model).__name__}")
        return model, "float32"
    expected = (params.n_bins, params.patch_frames, 1)
    got = tuple(model.inputs[0].shape[1:])
    if got != expected:
        raise ValueError(f"model {model.name!r} takes patches of {got} but the audio parameters give {expected} "
                         f"(n_bins={params.n_bins}, patch_frames={params.patch_frames}); use the "
                         "audio_params.json saved with that model")
    masker, precision = fastest_mask_model(model, precision)

    def predict(patches: np.ndarray) -> np.ndarray:
        # predict_on_batch runs one compiled call, without Model.predict's per-call setup.
        return np.asarray(masker.predict_on_batch(patches))

    return predict, precision


def device_name() -> str:
    """The device Keras runs the model on: ``"GPU (its name)"`` when TensorFlow sees one, else ``"CPU"``."""
    if keras.backend.backend() != "tensorflow":
        return f"the {keras.backend.backend()} backend's default device"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    return f"GPU ({name})" if name else "GPU"


def inference_mask_model(model, precision: str = "float32", *, check: bool = True):
    """A faster, inference-only model of ``model``'s mask, from its trained weights.

    ``model`` is a U-Net from ``unet_model.build_unet`` (trained or loaded); the result maps the
    normalised mixture ``(batch, bins, frames, 1)`` to the mask, as ``unet_model.mask_model``
    does, in inference mode (no dropout, batch norm with its moving statistics). The function is
    the same; only the arithmetic is arranged differently (the module docstring says how), so
    ``precision="float32"`` agrees with ``mask_model`` to float rounding. ``"bfloat16"`` computes
    in bfloat16 (the sigmoid in float32): faster on CPUs with AVX512-BF16 or AMX, much slower
    without them.

    With ``check`` (the default) the two are compared on one patch; if they differ by more than
    :data:`CHECK_TOLERANCE` (``build_unet`` was changed, say), a warning says so and
    ``unet_model.mask_model(model)`` is returned instead. A model whose layers are not named as
    ``build_unet`` names them raises ``ValueError``. The result is not meant to be saved: build
    it again from the trained model (a fraction of a second).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    settings = unet_model.read_settings(model)
    _check_padding(model, settings)
    spec = {key: settings[key] for key in ("input_shape", "filters", "kernel_size", "leaky_slope")}
    layer = InferenceMask(**spec, dtype=precision, name="mask")
    inputs = keras.Input(shape=spec["input_shape"], name="mixture")
    fast = keras.Model(inputs, layer(inputs), name=f"{model.name}_inference_mask")
    try:
        layer.load_folded(model)
    except ValueError as err:  # weights of other shapes: not the layout build_unet makes
        return _fall_back(model, f"its weights do not fit ({err})")
    if check:  # eager calls: cheaper than tracing both models for one patch
        reference = unet_model.mask_model(model)
        x = check_patch(spec["input_shape"])
        got = ops.convert_to_numpy(fast(x, training=False))
        expected = ops.convert_to_numpy(reference([x], training=False))  # mask_model takes the U-Net's input list
        error = np.abs(got.astype(np.float64) - expected)
        difference = float(error.max() if precision == "float32" else error.mean())
        if not difference <= CHECK_TOLERANCE[precision]:
            return _fall_back(model, f"its mask differs from unet_model.mask_model's by {difference:.2g}", reference)
    return fast


def _fall_back(model, why: str, reference=None):
    warnings.warn(f"unet_fast: the fast inference path does not reproduce model {model.name!r} ({why}); "
                  "using unet_model.mask_model instead (slower). Did build_unet change? Then update unet_fast.py too.",
                  stacklevel=3)
    return reference if reference is not None else unet_model.mask_model(model)


def check_patch(shape, seed: int = 0) -> np.ndarray:
    """A mixture-like normalised patch ``(1, bins, frames, 1)`` (non-negative, peak 1), fixed by ``seed``."""
    x = np.random.default_rng(seed).random((1,) + tuple(shape), dtype=np.float32) ** 4
    return x / x.max()


def _check_padding(model, settings: dict) -> None:
    """ValueError unless every convolution pads as ``build_unet`` does (PyTorch's padding)."""
    k = settings["kernel_size"]
    for i in range(1, len(settings["filters"]) + 1):
        conv = model.get_layer(f"encoder{i}_conv")
        pad = model.get_layer(f"encoder{i}_pad").padding if f"encoder{i}_pad" in unet_model.layer_names(model) else None
        if conv.kernel_size != (k, k) or conv.strides != (2, 2) or conv.padding != "valid" or pad != ((k // 2,) * 2,) * 2:
            raise ValueError(f"model {model.name!r}: layer encoder{i}_conv is not build_unet's padded 'valid' "
                             "stride-2 convolution")


def parity_taps(kernel_size: int) -> list[list[tuple[int, int]]]:
    """For output rows of parity 0 and 1 of the cropped transposed convolution, the kernel taps
    ``t`` that reach them and the input offset ``d`` each reads: ``z[2q + parity]`` is the sum
    over taps of ``x[q + d] @ kernel[t]`` (from ``y[2i + t] += x[i] kernel[t]`` and the crop of
    ``k // 2`` rows at the start)."""
    pad = kernel_size // 2
    return [[(t, (parity + pad - t) // 2) for t in range(kernel_size) if (parity + pad - t) % 2 == 0]
            for parity in (0, 1)]


class InferenceMask(keras.layers.Layer):
    """The whole U-Net mask as one layer, batch norm folded (see :func:`inference_mask_model`)."""

    def __init__(self, input_shape, filters, kernel_size, leaky_slope, **kwargs):
        super().__init__(**kwargs)
        self.spec = dict(input_shape=tuple(input_shape), filters=tuple(filters), kernel_size=int(kernel_size),
                         leaky_slope=float(leaky_slope))
        k, depth = self.spec["kernel_size"], len(filters)
        taps = parity_taps(k)
        offsets = [d for parity in taps for _, d in parity]
        # a parity's stride-1 convolution reads x[q + d]: pad so that d_min..d_max exist
        self.phase_pad = (-min(offsets), max(offsets))
        self.blocks = []  # (kind, path, h, w, c_in, c_out): h, w, c_in of the block's input
        h, w, c = input_shape
        for f in filters:
            path = "matmul" if (h // 2) * (w // 2) <= MATMUL_POSITIONS and c > 1 else "conv"
            self.blocks.append(("encoder", path, h, w, c, f))
            h, w, c = h // 2, w // 2, f
        for f in list(reversed(filters[:-1])) + [1]:
            if f < SUBPIXEL_BELOW:
                path = "subpixel"
            elif h * w <= MATMUL_POSITIONS:
                path = "phases"
            else:
                path = "transpose"
            self.blocks.append(("decoder", path, h, w, c, f))
            h, w, c = 2 * h, 2 * w, 2 * f
        self.depth = depth

    def build(self, input_shape):
        k = self.spec["kernel_size"]
        pad_lo, pad_hi = self.phase_pad
        span = pad_lo + pad_hi + 1
        self.kernels, self.biases = [], []
        for i, (kind, path, _h, _w, c, f) in enumerate(self.blocks):
            if path == "phases":
                counts = [len(a) * len(b) for a in parity_taps(k) for b in parity_taps(k)]
                kernel = [self.add_weight(shape=(n * c, f), initializer="zeros", trainable=False,
                                          name=f"block{i}_phase{p}") for p, n in enumerate(counts)]
            else:
                shape = {"conv": (k, k, c, f), "matmul": (k * k * c, f), "transpose": (k, k, f, c),
                         "subpixel": (span, span, c, 4 * f)}[path]
                kernel = self.add_weight(shape=shape, initializer="zeros", trainable=False, name=f"block{i}_kernel")
            self.kernels.append(kernel)
            # the parity paths add the bias before interleaving: one copy per parity
            phased = kind == "decoder" and path != "transpose"
            self.biases.append(self.add_weight(shape=(4 * f if phased else f,), initializer="zeros",
                                               trainable=False, name=f"block{i}_bias"))

    def load_folded(self, model):
        """Set the weights from ``model``'s layers, batch norm folded into each kernel."""
        k = self.spec["kernel_size"]
        taps = parity_taps(k)
        pad_lo = self.phase_pad[0]
        for i, (kind, path, _h, _w, c, f) in enumerate(self.blocks):
            n = i + 1 if kind == "encoder" else i + 1 - self.depth
            layer = model.get_layer(f"encoder{n}_conv" if kind == "encoder" else f"decoder{n}_deconv")
            kernel, bias = (np.asarray(v, dtype=np.float64) for v in layer.get_weights())
            bn_name = f"{kind}{n}_bn"
            if bn_name in {l.name for l in model.layers}:
                bn = model.get_layer(bn_name)
                gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else 1.0
                beta = np.asarray(bn.beta, np.float64) if bn.beta is not None else 0.0
                scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
                # out-channel axis: last for Conv2D (k, k, in, out), third for Conv2DTranspose (k, k, out, in)
                kernel = kernel * (scale if kind == "encoder" else scale[:, None])
                bias = (bias - np.asarray(bn.moving_mean, np.float64)) * scale + beta
            if path == "matmul":
                kernel = kernel.reshape(k * k * c, f)
            elif path == "phases":
                kernel = [np.concatenate([kernel[th, tw].T for th, _ in taps[ph] for tw, _ in taps[pw]])
                          for ph in (0, 1) for pw in (0, 1)]
            elif path == "subpixel":
                span = sum(self.phase_pad) + 1
                sub = np.zeros((span, span, c, 4, f))
                for ph in (0, 1):
                    for pw in (0, 1):
                        for th, dh in taps[ph]:
                            for tw, dw in taps[pw]:
                                sub[pad_lo + dh, pad_lo + dw, :, 2 * ph + pw] = kernel[th, tw].T
                kernel = sub.reshape(span, span, c, 4 * f)
            if path in ("phases", "subpixel"):
                bias = np.tile(bias, 4)
            variables = self.kernels[i] if isinstance(self.kernels[i], list) else [self.kernels[i]]
            for variable, value in zip(variables, kernel if isinstance(kernel, list) else [kernel]):
                variable.assign(value.astype(variable.dtype))
            self.biases[i].assign(bias.astype(self.biases[i].dtype))

    def call(self, x):
        skips = []
        for i, (kind, *_) in enumerate(self.blocks):
            if kind == "encoder":
                x = self.run_block(i, x)
                skips.append(x)
                continue
            if i == self.depth:
                skips.pop()  # the bottleneck is not a skip
            x = self.run_block(i, x, skips.pop() if i < len(self.blocks) - 1 else None)
        return x

    def run_block(self, i, x, skip=None):
        """Block ``i`` of :attr:`blocks` on its input ``x``: an encoder block's activation; a
        decoder block's ReLU output concatenated with ``skip``; the last block's mask."""
        kind, path, h, w, c, f = self.blocks[i]
        kernel, bias = self.kernels[i], self.biases[i]
        k = self.spec["kernel_size"]
        pad = k // 2
        if kind == "encoder":
            x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            if path == "conv":
                x = ops.conv(x, kernel, strides=2, padding="valid")
            else:
                # (B, H, W, C) -> (B, H/2, 2, W/2, 2, C): window tap (a, b) of output (i, j)
                # is x[2i + a, 2j + b] = parity (a % 2, b % 2) at (i + a // 2, j + b // 2)
                x = ops.reshape(x, (-1, (h + 2 * pad) // 2, 2, (w + 2 * pad) // 2, 2, c))
                cols = [x[:, a // 2:a // 2 + h // 2, a % 2, b // 2:b // 2 + w // 2, b % 2, :]
                        for a in range(k) for b in range(k)]
                x = ops.matmul(ops.concatenate(cols, axis=-1), kernel)  # (B, H/2, W/2, f)
            return ops.leaky_relu(x + bias, self.spec["leaky_slope"])
        if path == "transpose":
            x = ops.conv_transpose(x, kernel, strides=2, padding="valid")[:, pad:pad + 2 * h, pad:pad + 2 * w, :]
            x = x + bias
        else:
            lo, hi = self.phase_pad
            x = ops.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
            if path == "subpixel":
                x = ops.conv(x, kernel, strides=1, padding="valid")  # (B, h, w, 4 f)
            else:
                taps = parity_taps(k)
                phases = [ops.matmul(ops.concatenate(
                    [x[:, lo + dh:lo + dh + h, lo + dw:lo + dw + w, :] for _, dh in taps[ph] for _, dw in taps[pw]],
                    axis=-1), kernel[2 * ph + pw]) for ph in (0, 1) for pw in (0, 1)]
                x = ops.concatenate(phases, axis=-1)  # (B, h, w, 4 f)
            x = ops.depth_to_space(x + bias, 2)  # (B, 2h, 2w, f)
        if skip is None:
            return ops.sigmoid(ops.cast(x, "float32"))
        return ops.concatenate([ops.relu(x), skip], axis=-1)

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")

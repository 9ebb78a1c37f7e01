"""The U-Net of Jansson et al. (2017) as a functional Keras 3 model, and loading a trained one.

The model maps a normalised mixture magnitude patch ``(batch, n_bins, patch_frames, 1)``
(512 x 128 by default, linear magnitudes with the mixture peak at 1, see
``audio.normalize_patches``) to a soft mask in [0, 1] of the same shape, and outputs
``mask * mixture`` as the vocal magnitude estimate. The training target is the vocal magnitude
scaled by the same factor as the mixture, so input, output and target share one linear domain
(the original coursework normalised the input in the log domain and compared with a linear
target, and never learned).

Architecture (defaults)
-----------------------
Encoder, six blocks: ``Conv2D(f, 5x5, stride 2, 'same') -> BatchNorm -> LeakyReLU(0.2)``
with f = 16, 32, 64, 128, 256, 512; each block halves both axes (512x128 -> 8x2).

Decoder, six blocks with the filters mirrored (256, 128, 64, 32, 16, then 1):
``Conv2DTranspose(f, 5x5, stride 2, 'same') -> BatchNorm -> ReLU [-> Dropout(0.5) on the
first three]``, then concatenated on the channel axis with the encoder output of the same
resolution. The last block is a ``Conv2DTranspose`` to one channel followed only by a sigmoid
(the layer named ``mask``); it has no batch norm and no ReLU, as in the paper, since a ReLU
before the sigmoid would keep the mask at or above 0.5.

Choices, compared with the PyTorch coursework (``Conv2d(1,16,5,2,2)`` ...,
``ConvTranspose2d(..., 5, 2, 2, output_padding=1)`` with the skip concatenated,
``ConvTranspose2d(32,1)`` + sigmoid):

* Padding as PyTorch's ``padding=2`` / ``output_padding=1``: ``ZeroPadding2D(2)`` then a
  ``'valid'`` ``Conv2D`` (``n/2`` on the way down); a ``'valid'`` ``Conv2DTranspose``
  (``2n + 3``) then ``Cropping2D(((2, 1), (2, 1)))`` (``2n`` on the way up). Keras'
  ``padding='same'`` gives the same shapes but pads 1 before and 2 after, so its stride-2
  convolutions read the input at the other parity: another function, which no re-indexing of
  5-tap kernels makes equal (convert_weights.py explains). With explicit padding the
  coursework's PyTorch weights give exactly its outputs here.
* The skip connection concatenates the encoder block's *activated* output (after LeakyReLU)
  with the decoder block's output after its ReLU and dropout, decoder channels first
  (Spleeter instead concatenates the encoder's raw convolution output).
* Convolutions keep their biases although batch norm follows (PyTorch's default
  ``bias=True``), so the parameter count, 9,826,321 with the defaults, includes them; batch
  norm uses PyTorch's momentum (0.1, i.e. Keras 0.9) and epsilon (1e-5).
* The last block is a transposed convolution from 32 channels (16 decoded + 16 skipped) to
  one, then the sigmoid, as in the coursework: no batch norm, no ReLU, no dropout.

:func:`inference_mask_model` computes the same mask for prediction only, 1.4x as fast on CPUs
(batch norm folded, the small and one-channel blocks rearranged; optionally in bfloat16).

All model code uses ``keras.layers`` and ``keras.ops`` only, so it runs on the TensorFlow, JAX
and PyTorch backends.
"""

from __future__ import annotations

import functools
from pathlib import Path

from audio import AudioParams, DEFAULT_PARAMS, UserError

#: Default encoder filters; the decoder mirrors them.
FILTERS = (16, 32, 64, 128, 256, 512)
#: File written beside every saved model (by train.py) and read back by :func:`load_model`.
PARAMS_FILE = "audio_params.json"


def build_unet(
    input_shape: tuple[int, int, int] = (DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1),
    filters: tuple[int, ...] = FILTERS,
    kernel_size: int = 5,
    dropout: float = 0.5,
    dropout_layers: int = 3,
    leaky_slope: float = 0.2,
    name: str = "unet",
):
    """Build the singing-voice U-Net (see the module docstring) as a functional ``keras.Model``.

    ``input_shape`` is ``(bins, frames, 1)``; both of its first axes must divide by
    ``2 ** len(filters)``. ``filters`` lists the encoder filters; their count is the depth.
    ``dropout`` is applied after the first ``dropout_layers`` decoder blocks (at most all
    ``depth - 1`` blocks before the mask layer, so a shallow test model takes the defaults).
    The model has one output, named ``vocals`` (= mask * input, same shape as the input); the
    mask is the output of the layer named ``mask`` (see :func:`mask_model`).
    """
    import keras

    filters = tuple(int(f) for f in filters)
    depth = len(filters)
    if depth < 1 or min(filters) < 1:
        raise ValueError(f"filters must be a non-empty list of positive integers, got {filters}")
    if len(input_shape) != 3 or input_shape[2] != 1:
        raise ValueError(f"input_shape must be (bins, frames, 1), got {input_shape}")
    for axis, size in zip(("bins", "frames"), input_shape[:2]):
        if size is not None and size % 2**depth:
            raise ValueError(f"input {axis}={size} must divide by 2**{depth} for a U-Net of depth {depth}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and at least 3 (PyTorch's padding k//2), got {kernel_size}")
    if dropout_layers < 0 or not 0 <= dropout < 1:
        raise ValueError(f"need dropout in [0, 1) and dropout_layers >= 0, got {dropout} and {dropout_layers}")

    # PyTorch's padding: k//2 zeros on both sides before each 'valid' stride-2 convolution, and
    # each 'valid' transposed convolution (2h + k - 2 rows) cropped by k//2 at the start and
    # k//2 - 1 at the end (padding=k//2, output_padding=1), so that the coursework's weights give
    # exactly its function (convert_weights.py). Keras' 'same' pads 1 before and 2 after and
    # samples the input at the other parity: equivalent shapes, a different function.
    pad = kernel_size // 2
    conv = functools.partial(keras.layers.Conv2D, kernel_size=kernel_size, strides=2, padding="valid")
    deconv = functools.partial(keras.layers.Conv2DTranspose, kernel_size=kernel_size, strides=2, padding="valid")
    crop = functools.partial(keras.layers.Cropping2D, ((pad, pad - 1), (pad, pad - 1)))
    # Keras' defaults (momentum 0.99, epsilon 1e-3) differ from PyTorch's (0.1 i.e. 0.9, 1e-5);
    # use PyTorch's so running statistics track as in the coursework.
    batch_norm = functools.partial(keras.layers.BatchNormalization, momentum=0.9, epsilon=1e-5)

    mix = keras.Input(shape=input_shape, name="mixture")  # (B, 512, 128, 1)
    x = mix
    skips = []
    for i, f in enumerate(filters, start=1):
        # (B, H, W, C) -> (B, H/2, W/2, f): 512x128 -> 256x64 -> ... -> 8x2 with 512 channels.
        x = keras.layers.ZeroPadding2D(pad, name=f"encoder{i}_pad")(x)
        x = conv(f, name=f"encoder{i}_conv")(x)
        x = batch_norm(name=f"encoder{i}_bn")(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_slope, name=f"encoder{i}_act")(x)
        skips.append(x)
    skips.pop()  # the bottleneck (B, 8, 2, 512) feeds the decoder directly, not a skip

    # Decoder filters mirror the encoder's: 256, 128, 64, 32, 16, then 1 for the mask.
    for i, (f, skip) in enumerate(zip(reversed(filters[:-1]), reversed(skips)), start=1):
        # (B, h, w, C) -> (B, 2h, 2w, f), then concatenated with the encoder output of that
        # resolution -> (B, 2h, 2w, 2f): 8x2x512 -> 16x4x512 -> ... -> 256x64x32.
        x = deconv(f, name=f"decoder{i}_deconv")(x)
        x = crop(name=f"decoder{i}_crop")(x)
        x = batch_norm(name=f"decoder{i}_bn")(x)
        x = keras.layers.ReLU(name=f"decoder{i}_act")(x)
        if i <= dropout_layers and dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"decoder{i}_dropout")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"decoder{i}_skip")([x, skip])

    # (B, 256, 64, 32) -> (B, 512, 128, 1): the last block has no batch norm or ReLU.
    x = deconv(1, name=f"decoder{depth}_deconv")(x)
    x = crop(name=f"decoder{depth}_crop")(x)
    mask = keras.layers.Activation("sigmoid", name="mask")(x)
    vocals = keras.layers.Multiply(name="vocals")([mask, mix])  # (B, 512, 128, 1)
    return keras.Model(mix, vocals, name=name)


def mask_model(model):
    """A model sharing ``model``'s layers that maps the mixture patch to the sigmoid mask."""
    import keras

    return keras.Model(model.inputs, model.get_layer("mask").output, name=f"{model.name}_mask")


# --------------------------------------------------------------------------------------------
# Inference fast path: the same mask, computed in fewer and faster operations
# --------------------------------------------------------------------------------------------

#: Output positions (rows x columns) up to which an encoder convolution, and input positions up
#: to which a decoder's transposed convolution, run as matrix products over gathered windows
#: instead of convolutions: at these sizes (the bottleneck: 8x2, 16x4) oneDNN's convolutions run
#: at a quarter to a half of the matrix product's speed (benchmarks/bench_layers.py).
MATMUL_POSITIONS = 64
#: Decoder blocks with fewer output channels than this (the one-channel mask layer) run as a
#: stride-1 convolution to four phases and a depth-to-space interleave (sub-pixel
#: convolution): a transposed convolution to one channel is the slowest layer of the U-Net.
SUBPIXEL_BELOW = 8
PRECISIONS = ("float32", "bfloat16")


def bfloat16_is_fast() -> bool:
    """Whether bfloat16 inference beats float32 here: TensorFlow with oneDNN (its default on x86)
    on a CPU with bfloat16 dot-product instructions (AVX512-BF16 or AMX, from /proc/cpuinfo).
    Without them bfloat16 is emulated, several times slower than float32."""
    import os

    import keras

    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") in ("0", "false", "False"):
        return False
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def inference_mask_model(model, precision: str = "float32"):
    """A faster, inference-only model of ``model``'s mask, from its trained weights.

    ``model`` is a U-Net from :func:`build_unet` (trained or loaded); the result maps the
    normalised mixture ``(batch, bins, frames, 1)`` to the mask, as :func:`mask_model` does, in
    inference mode (no dropout, batch norm with its moving statistics). The function is the
    same; only the arithmetic is arranged differently, so ``precision="float32"`` agrees with
    :func:`mask_model` to float rounding (about 1e-7). How:

    * each batch norm is folded into the convolution before it (scaled kernel, shifted bias);
    * encoder convolutions with at most :data:`MATMUL_POSITIONS` output positions gather their
      5x5 windows (from a free reshape that exposes the stride-2 parity, not strided slices)
      and run as one matrix product;
    * a stride-2 transposed convolution cropped as PyTorch's is, per output parity (row, column),
      a stride-1 convolution with the kernel taps of that parity (3x3, 3x2, 2x3, 2x2 of the 5x5):
      small decoder blocks run those as four matrix products, the one-channel mask layer as one
      convolution to four channels; both are interleaved by ``depth_to_space``.

    ``precision="bfloat16"`` computes in bfloat16 (weights and activations; the sigmoid in
    float32): 1.6x as fast again on CPUs with AVX512-BF16 or AMX (see :func:`bfloat16_is_fast`),
    masks within a few 1e-2 and SDR within 0.01 dB (benchmarks/RESULTS.md); much slower
    without them. The result is not meant to be saved: build it again
    from the trained model (a fraction of a second).
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    spec = _unet_spec(model)
    layer = _inference_layer_class()(**spec, dtype=precision, name="mask")
    inputs = keras.Input(shape=spec["input_shape"], name="mixture")
    outputs = layer(inputs)
    layer.load_folded(model)
    return keras.Model(inputs, outputs, name=f"{model.name}_inference_mask")


def _unet_spec(model) -> dict:
    """Settings of a :func:`build_unet` model read back from its layers; ValueError otherwise."""
    filters, i = [], 1
    try:
        while f"encoder{i}_conv" in {layer.name for layer in model.layers}:
            conv = model.get_layer(f"encoder{i}_conv")
            pad = model.get_layer(f"encoder{i}_pad").padding
            k = conv.kernel_size[0]
            if conv.kernel_size != (k, k) or conv.strides != (2, 2) or conv.padding != "valid" or pad != ((k // 2,) * 2,) * 2:
                raise ValueError(f"layer encoder{i}_conv is not build_unet's padded 'valid' stride-2 convolution")
            filters.append(conv.filters)
            i += 1
        slope = model.get_layer("encoder1_act").negative_slope
        model.get_layer(f"decoder{len(filters)}_deconv")
    except ValueError as err:
        raise ValueError(f"model {model.name!r} is not a U-Net from unet_model.build_unet ({err})") from None
    if not filters:
        raise ValueError(f"model {model.name!r} is not a U-Net from unet_model.build_unet (no encoder1_conv)")
    return dict(input_shape=tuple(model.inputs[0].shape[1:]), filters=tuple(filters), kernel_size=k,
                leaky_slope=float(slope))


def _parity_taps(kernel_size: int) -> list[list[tuple[int, int]]]:
    """For output rows of parity 0 and 1 of the cropped transposed convolution, the kernel taps
    ``t`` that reach them and the input offset ``d`` each reads: ``z[2q + parity]`` is the sum
    over taps of ``x[q + d] @ kernel[t]`` (from ``y[2i + t] += x[i] kernel[t]`` and the crop of
    ``k // 2`` rows at the start)."""
    pad = kernel_size // 2
    return [[(t, (parity + pad - t) // 2) for t in range(kernel_size) if (parity + pad - t) % 2 == 0]
            for parity in (0, 1)]


@functools.cache
def _inference_layer_class():
    """The layer class of :func:`inference_mask_model`, defined on first use (keras is imported
    lazily so that the command lines' ``--help`` stays instant)."""
    import keras
    import numpy as np
    from keras import ops

    class UNetInferenceMask(keras.layers.Layer):
        """The whole U-Net mask as one layer, batch norm folded (see :func:`inference_mask_model`)."""

        def __init__(self, input_shape, filters, kernel_size, leaky_slope, **kwargs):
            super().__init__(**kwargs)
            self.spec = dict(input_shape=tuple(input_shape), filters=tuple(filters), kernel_size=int(kernel_size),
                             leaky_slope=float(leaky_slope))
            k, depth = self.spec["kernel_size"], len(filters)
            taps = _parity_taps(k)
            offsets = [d for parity in taps for _, d in parity]
            # a parity's stride-1 convolution reads x[q + d]: pad so that d_min..d_max exist
            self.phase_pad = (-min(offsets), max(offsets))
            self.blocks = []  # (kind, path, h, w, c_in, c_out): h, w, c_in of the block's input
            h, w, c = input_shape
            for f in filters:
                path = "matmul" if (h // 2) * (w // 2) <= MATMUL_POSITIONS and c > 1 else "conv"
                self.blocks.append(("encoder", path, h, w, c, f))
                h, w, c = h // 2, w // 2, f
            for i, f in enumerate(list(reversed(filters[:-1])) + [1]):
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
            for i, (kind, path, h, w, c, f) in enumerate(self.blocks):
                if path == "phases":
                    counts = [len(a) * len(b) for a in _parity_taps(k) for b in _parity_taps(k)]
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
            taps = _parity_taps(k)
            pad_lo = self.phase_pad[0]
            for i, (kind, path, h, w, c, f) in enumerate(self.blocks):
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
                    taps = _parity_taps(k)
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

    return UNetInferenceMask


def load_model(path, compile: bool = False):
    """Load a saved ``.keras`` model and the :class:`AudioParams` saved beside it.

    Returns ``(model, params)``. The parameters come from ``audio_params.json`` in the same
    folder; a missing or unreadable file, or a model whose input does not match them, raises
    :class:`UserError` naming the file and the fix. ``compile=False`` (default) skips restoring
    the optimizer, which inference does not need.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the model file, e.g. {path / 'best.keras'}")
    if not path.is_file():
        raise UserError(f"{path}: no such model file; train one with train.py or check the path")
    if path.suffix != ".keras":
        raise UserError(f"{path}: not a Keras 3 model file (expected a .keras file from train.py)")
    params_path = path.parent / PARAMS_FILE
    if not params_path.is_file():
        raise UserError(f"{params_path}: audio parameters missing beside the model; copy the run's {PARAMS_FILE} there")
    params = AudioParams.load(params_path)

    import keras

    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as err:  # zip, h5 and deserialisation errors have no common base class
        raise UserError(f"{path}: cannot load the model ({type(err).__name__}: {_first_line(err)})") from None
    expected = (params.n_bins, params.patch_frames, 1)
    got = tuple(model.inputs[0].shape[1:])
    if got != expected:
        raise UserError(
            f"{path}: model input {got} does not match {params_path} ({expected}); "
            "use the audio_params.json of the run that trained this model"
        )
    return model, params


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""

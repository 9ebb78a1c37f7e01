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
  5-tap kernels makes equal (pytorch_twin/convert_weights.py explains). With explicit padding the
  coursework's PyTorch weights give exactly its outputs here.
* The skip connection concatenates the encoder block's *activated* output (after LeakyReLU)
  with the decoder block's output after its ReLU and dropout, decoder channels first
  (Spleeter instead concatenates the encoder's raw convolution output).
* Convolutions keep their biases although batch norm follows (PyTorch's default
  ``bias=True``), so the parameter count, 9,826,321 with the defaults, includes them; batch
  norm uses PyTorch's momentum (0.1, i.e. Keras 0.9) and epsilon (1e-5).
* The last block is a transposed convolution from 32 channels (16 decoded + 16 skipped) to
  one, then the sigmoid, as in the coursework: no batch norm, no ReLU, no dropout.

``unet_fast.py`` computes the same mask for prediction only, faster on CPUs (batch norm folded,
the small blocks rearranged, optionally in bfloat16), and checks itself against this network.

All model code uses ``keras.layers`` and ``keras.ops`` only, so it runs on the TensorFlow, JAX
and PyTorch backends.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path

from separation.audio import DEFAULT_PARAMS, PARAMS_FILE, AudioParams
from separation.cli import first_line
from separation.errors import UserError

#: Default encoder filters; the decoder mirrors them.
FILTERS = (16, 32, 64, 128, 256, 512)
#: ``build_unet(precision=...)``: the Keras dtype policy of the layers before the mask.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
#: The model shipped with the project (its card: pretrained/README.md), loaded when none is named.
PRETRAINED = Path(__file__).resolve().parent / "pretrained"
TRAIN_HINT = ("train one: `python data_generator.py prepare --dataset mir1k --root DATA --cache cache/mir1k`, then "
              "`python train.py --cache cache/mir1k --run-dir runs/NAME`, then pass runs/NAME "
              "(inference.py --model runs/NAME)")


def build_unet(
    input_shape: tuple[int, int, int] = (DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1),
    filters: tuple[int, ...] = FILTERS,
    *,
    kernel_size: int = 5,
    dropout: float = 0.5,
    dropout_layers: int = 3,
    leaky_slope: float = 0.2,
    precision: str = "float32",
    name: str = "unet",
):
    """Build the singing-voice U-Net (see the module docstring) as a functional ``keras.Model``.

    ``input_shape`` is ``(bins, frames, 1)``; both of its first axes must divide by
    ``2 ** len(filters)``. ``filters`` lists the encoder filters; their count is the depth.
    ``dropout`` is applied after the first ``dropout_layers`` decoder blocks (at most all
    ``depth - 1`` blocks before the mask layer, so a shallow test model takes the defaults).
    The model has one output, named ``vocals`` (= mask * input, same shape as the input); the
    mask is the output of the layer named ``mask`` (see :func:`mask_model`).
    ``precision="bfloat16"`` builds it for mixed-precision training: float32 weights, the
    convolutions and batch norms computing in bfloat16 (Keras' ``mixed_bfloat16`` policy), and the
    mask's sigmoid and the product with the mixture in float32, so that the loss is float32.
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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    policy = PRECISIONS[precision]  # the dtype policy of every layer before the mask

    # PyTorch's padding: k//2 zeros on both sides before each 'valid' stride-2 convolution, and
    # each 'valid' transposed convolution (2h + k - 2 rows) cropped by k//2 at the start and
    # k//2 - 1 at the end (padding=k//2, output_padding=1), so that the coursework's weights give
    # exactly its function (pytorch_twin/convert_weights.py). Keras' 'same' pads 1 before and 2 after and
    # samples the input at the other parity: equivalent shapes, a different function.
    pad = kernel_size // 2
    conv = functools.partial(keras.layers.Conv2D, kernel_size=kernel_size, strides=2, padding="valid", dtype=policy)
    deconv = functools.partial(keras.layers.Conv2DTranspose, kernel_size=kernel_size, strides=2, padding="valid",
                               dtype=policy)
    crop = functools.partial(keras.layers.Cropping2D, ((pad, pad - 1), (pad, pad - 1)), dtype=policy)
    # Keras' defaults (momentum 0.99, epsilon 1e-3) differ from PyTorch's (0.1 i.e. 0.9, 1e-5);
    # use PyTorch's so running statistics track as in the coursework.
    batch_norm = functools.partial(keras.layers.BatchNormalization, momentum=0.9, epsilon=1e-5, dtype=policy)

    mix = keras.Input(shape=input_shape, name="mixture")  # (B, 512, 128, 1)
    x = mix
    skips = []
    for i, f in enumerate(filters, start=1):
        # (B, H, W, C) -> (B, H/2, W/2, f): 512x128 -> 256x64 -> ... -> 8x2 with 512 channels.
        x = keras.layers.ZeroPadding2D(pad, name=f"encoder{i}_pad", dtype=policy)(x)
        x = conv(f, name=f"encoder{i}_conv")(x)
        x = batch_norm(name=f"encoder{i}_bn")(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_slope, name=f"encoder{i}_act", dtype=policy)(x)
        skips.append(x)
    skips.pop()  # the bottleneck (B, 8, 2, 512) feeds the decoder directly, not a skip

    # Decoder filters mirror the encoder's: 256, 128, 64, 32, 16, then 1 for the mask.
    for i, (f, skip) in enumerate(zip(reversed(filters[:-1]), reversed(skips)), start=1):
        # (B, h, w, C) -> (B, 2h, 2w, f), then concatenated with the encoder output of that
        # resolution -> (B, 2h, 2w, 2f): 8x2x512 -> 16x4x512 -> ... -> 256x64x32.
        x = deconv(f, name=f"decoder{i}_deconv")(x)
        x = crop(name=f"decoder{i}_crop")(x)
        x = batch_norm(name=f"decoder{i}_bn")(x)
        x = keras.layers.ReLU(name=f"decoder{i}_act", dtype=policy)(x)
        if i <= dropout_layers and dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"decoder{i}_dropout", dtype=policy)(x)
        x = keras.layers.Concatenate(axis=-1, name=f"decoder{i}_skip", dtype=policy)([x, skip])

    # (B, 256, 64, 32) -> (B, 512, 128, 1): the last block has no batch norm or ReLU.
    x = deconv(1, name=f"decoder{depth}_deconv")(x)
    x = crop(name=f"decoder{depth}_crop")(x)
    # The mask and the output in float32 whatever the precision: the loss compares float32 magnitudes.
    mask = keras.layers.Activation("sigmoid", name="mask", dtype="float32")(x)
    vocals = keras.layers.Multiply(name="vocals", dtype="float32")([mask, mix])  # (B, 512, 128, 1)
    return keras.Model(mix, vocals, name=name)


def mask_model(model):
    """A model sharing ``model``'s layers that maps the mixture patch to the sigmoid mask."""
    import keras

    return keras.Model(model.inputs, model.get_layer("mask").output, name=f"{model.name}_mask")


def layer_names(model) -> set[str]:
    return {layer.name for layer in model.layers}


def read_settings(model) -> dict:
    """:func:`build_unet`'s arguments read back from a model's layer names (``encoder{i}_conv``,
    ``decoder{i}_dropout``...): ``input_shape``, ``filters``, ``kernel_size``, ``dropout``,
    ``dropout_layers``, ``leaky_slope``. ValueError for a model without those layers."""
    names = layer_names(model)
    depth = 0
    while f"encoder{depth + 1}_conv" in names:
        depth += 1
    if depth == 0 or f"decoder{depth}_deconv" not in names or "encoder1_act" not in names:
        raise ValueError(f"model {model.name!r} is not a U-Net from unet_model.build_unet "
                         "(no encoder1_conv ... decoderN_deconv layers)")
    dropouts = [model.get_layer(f"decoder{i}_dropout").rate for i in range(1, depth) if f"decoder{i}_dropout" in names]
    return dict(input_shape=tuple(model.inputs[0].shape[1:]),
                filters=tuple(model.get_layer(f"encoder{i}_conv").filters for i in range(1, depth + 1)),
                kernel_size=model.get_layer("encoder1_conv").kernel_size[0],
                dropout=dropouts[0] if dropouts else 0.0, dropout_layers=len(dropouts),
                leaky_slope=float(model.get_layer("encoder1_act").negative_slope))


def model_file(path=None) -> Path:
    """The ``.keras`` file that ``path`` names: the file itself, or in a folder (a run folder,
    ``pretrained/``) its ``best.keras``, else its only ``.keras`` file; None: the shipped model.
    Raises :class:`UserError` saying how to get a model."""
    if path is None:
        if not PRETRAINED.is_dir() or not list(PRETRAINED.glob("*.keras")):
            raise UserError(f"no model given and no pretrained model in {PRETRAINED}; {TRAIN_HINT}")
        folder = PRETRAINED
    else:
        folder = Path(path)
        if not folder.exists():
            raise UserError(f"{folder}: no such model file or folder; {TRAIN_HINT}")
        if not folder.is_dir():
            return folder
    if (folder / "best.keras").is_file():
        return folder / "best.keras"
    candidates = sorted(folder.glob("*.keras"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"{folder}: no .keras model in this folder; {TRAIN_HINT}")
    raise UserError(f"{folder}: several models ({', '.join(p.name for p in candidates)}); name one of them")


def save_model(model, path, params: AudioParams) -> None:
    """Save ``model`` as a ``.keras`` file at ``path`` with ``params`` inside it.

    Keras writes the zip (``config.json``, ``model.weights.h5``, ``metadata.json``); the audio
    parameters go in as one more entry, ``audio_params.json``, which Keras' loader ignores, so
    the file stays a plain Keras model. :func:`load_model` reads them back and refuses an
    ``audio_params.json`` beside the model that disagrees. A model built for mixed precision is
    saved in float32 (:func:`float32_model`). Write through ``files.atomic_output``.
    """
    float32_model(model).save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(PARAMS_FILE, json.dumps(params.to_dict(), indent=2) + "\n")


def float32_model(model):
    """``model`` if every layer computes in float32; else the same U-Net with the same weights in
    float32 (a model trained in mixed precision is saved so: it loads and runs everywhere as before)."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = build_unet(**read_settings(model), name=model.name)
    copy.set_weights(model.get_weights())
    return copy


def saved_params(path) -> AudioParams | None:
    """The audio parameters saved inside a ``.keras`` file by :func:`save_model` (None for a model
    saved without them). A file that is not a whole ``.keras`` zip (empty,
    truncated, another format) raises :class:`UserError`."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = {"config.json", "model.weights.h5"} - names
            if missing:
                raise zipfile.BadZipFile(f"no {' or '.join(sorted(missing))} inside")
            data = json.loads(archive.read(PARAMS_FILE)) if PARAMS_FILE in names else None
    except (OSError, zipfile.BadZipFile, ValueError) as err:  # ValueError: unreadable JSON
        raise UserError(f"{path}: damaged or not a Keras model file ({first_line(err)}); download or copy it "
                        "again, or use the best.keras of a train.py run") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UserError(f"{path}: damaged or not a Keras model file (its {PARAMS_FILE} is not a JSON object)")
    return AudioParams.from_dict(data, source=f"{path} ({PARAMS_FILE} inside)")


def check_architecture(model, params: AudioParams, path) -> None:
    """Refuse (:class:`UserError`) a model that is not :func:`build_unet`'s for ``params``' patches:
    its input, its ``mask`` layer and its output must all be ``(n_bins, patch_frames, 1)``."""
    expected = (params.n_bins, params.patch_frames, 1)
    shapes = {"input": model.inputs[0].shape[1:] if len(model.inputs) == 1 else None,
              "output": model.outputs[0].shape[1:] if len(model.outputs) == 1 else None}
    if "mask" in layer_names(model):
        shapes["'mask' layer"] = model.get_layer("mask").output.shape[1:]
    else:
        shapes["'mask' layer"] = "missing"
    wrong = [f"{what} {shape if isinstance(shape, str) else tuple(shape) if shape is not None else 'not one'}"
             for what, shape in shapes.items() if shape is None or shape == "missing" or tuple(shape) != expected]
    if wrong:
        raise UserError(f"{path}: not the U-Net of this project for {expected} patches ({', '.join(wrong)}); "
                        f"use a model saved by train.py, or the shipped one")


def load_model(path=None, *, compile: bool = False):
    """Load a saved model and its :class:`AudioParams`: ``(model, params)``.

    ``path`` is a ``.keras`` file or a folder holding one (a run folder: its ``best.keras``);
    None loads the shipped model (:data:`PRETRAINED`). The parameters are those saved inside
    the file (:func:`save_model`) and in ``audio_params.json`` beside it: either may be missing
    (older models have only the file beside them), but not both, and they must agree. A damaged
    file, parameters that disagree or a model that is not this U-Net for them (:func:`check_architecture`)
    raise :class:`UserError` naming the file and the fix.
    ``compile=False`` (default) skips restoring the optimizer, which inference does not need.
    """
    path = model_file(path)
    if path.suffix != ".keras":
        raise UserError(f"{path}: not a Keras 3 model file (expected a .keras file from train.py)")
    inside = saved_params(path)
    params_path = path.parent / PARAMS_FILE
    if params_path.is_file():
        params = AudioParams.load(params_path)
        if inside is not None:
            inside.check_same(params, f"{params_path}: the model {path.name}",
                              f"remove this {PARAMS_FILE} (the model carries its own) or put the model's run's there")
    elif inside is not None:
        params = inside
    else:
        raise UserError(f"{params_path}: audio parameters missing beside the model; copy the run's {PARAMS_FILE} there")

    import keras

    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as err:  # h5 and deserialisation errors have no common base class
        raise UserError(f"{path}: cannot load the model, damaged or saved by another Keras "
                        f"({type(err).__name__}: {first_line(err)})") from None
    expected = (params.n_bins, params.patch_frames, 1)
    got = tuple(model.inputs[0].shape[1:])
    if got != expected:
        source = params_path if params_path.is_file() else "the audio parameters saved in it"
        raise UserError(
            f"{path}: model input {got} does not match {source} ({expected}); "
            "use the audio_params.json of the run that trained this model"
        )
    check_architecture(model, params, path)
    return model, params

"""Convert U-Net weights between the Keras model (unet_model.py) and the PyTorch twin (pytorch_twin/unet_torch.py).

    python pytorch_twin/convert_weights.py keras2torch runs/NAME/best.keras out.pt
    python pytorch_twin/convert_weights.py torch2keras coursework.pt converted/model.keras [--params audio_params.json]

``keras2torch`` writes a plain PyTorch state_dict (``model.load_state_dict(torch.load("out.pt"))``
in the coursework's code). ``torch2keras`` reads a checkpoint of the PyTorch original -- a raw
state_dict, a dict holding one under ``model_state_dict``, ``state_dict`` or ``model``, or (with
``--unsafe-pickle``) a whole pickled module -- and writes a ``.keras`` model with
``audio_params.json`` beside it, so ``inference.py --model`` and ``evaluate.py`` use it as any
trained model. Both commands then run the two models on a random patch and print the largest
difference of their masks.

The mapping
-----------
Layer by layer: ``encoder{i}_conv`` <-> ``conv{i}``, ``encoder{i}_bn`` <-> ``bn{i}``,
``decoder{i}_deconv`` <-> ``deconv{i}``, ``decoder{i}_bn`` <-> ``debn{i}``. Keras keeps kernels
as ``(kh, kw, in, out)`` for ``Conv2D`` and ``(kh, kw, out, in)`` for ``Conv2DTranspose``;
PyTorch as ``(out, in, kh, kw)`` for ``Conv2d`` and ``(in, out, kh, kw)`` for
``ConvTranspose2d``: the same axis permutation maps both, with no spatial
flip (both frameworks compute cross-correlation and its transpose). Batch norm: gamma, beta,
moving mean and variance <-> weight, bias, running_mean, running_var (``num_batches_tracked``
is written as 0 and ignored when read). Keras concatenates ``[decoder, skip]`` as the twin does
by default; ``skip_first`` swaps the two halves of the decoder kernels' input channels for a
coursework that wrote ``cat((skip, decoder))``.

Padding: when the mapping is exact
----------------------------------
The copy is exact only when the Keras model pads as PyTorch does (:func:`padding_layout`).
PyTorch's ``Conv2d(k=5, stride=2, padding=2)`` pads 2 zeros on both sides and output ``i``
reads inputs ``2i-2 .. 2i+2``. Keras' ``padding='same'`` with stride 2 on an even size pads 1
before and 2 after, so output ``i`` reads ``2i-1 .. 2i+3``: the two sample the input at
positions of opposite parity, so no re-indexing of a 5-tap kernel turns one into the other (it
would need taps at ``2i-2`` and ``2i+3``, six in all). The transposed convolutions differ the
same way: PyTorch's ``ConvTranspose2d(5, 2, padding=2, output_padding=1)`` adds tap ``k`` of
input ``i`` to output ``2i+k-2``, Keras' ``'same'`` to ``2i+k-1``. The 'same' model is the
PyTorch network mirrored: with kernels rotated by 180 degrees it computes
``flip(torch_model(flip(x)))`` exactly (checked in tests/test_torch_twin.py), a different
function of the spectrogram. With the kernels copied as they are (what this module does) the
masks differ far beyond float rounding.

A Keras model that pads explicitly -- ``ZeroPadding2D(2)`` then a ``'valid'`` ``Conv2D``; a
``'valid'`` ``Conv2DTranspose`` (``2h + 3`` rows) then ``Cropping2D(((2, 1), (2, 1)))`` -- is
PyTorch's function exactly, and the conversion agrees to float rounding. Models
with 'same' padding are converted all the same (the weights round-trip identically), with a
warning that the outputs differ.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np

from separation.audio import AudioParams, DEFAULT_PARAMS
from separation.cli import ArgumentParser, first_line, run_cli
from separation.errors import UserError
from separation.files import atomic_output

#: The Keras model pads as PyTorch's padding=2 / output_padding=1: the conversion is exact.
TORCH_PADDING = "torch"
#: The Keras model pads 'same' (1 before, 2 after): the weights convert, the function differs.
SAME_PADDING = "same"
#: Relative difference of the masks above which a conversion is reported as not equivalent.
TOLERANCE = 1e-4
#: Keys under which training scripts commonly nest the state_dict in a checkpoint dict.
CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model")
#: How many names of each kind of mismatch an error lists.
SHOWN = 8

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")  # in Keras' order: gamma, beta, mean, variance
_TO_TORCH = (3, 2, 0, 1)  # Keras (kh, kw, a, b) -> PyTorch (b, a, kh, kw)
_TO_KERAS = (2, 3, 1, 0)  # and back


# --------------------------------------------------------------------------------------------
# The mapping (numpy only; no torch needed)
# --------------------------------------------------------------------------------------------


def keras_depth(model) -> int:
    """Number of encoder blocks of a U-Net built by ``unet_model.build_unet``."""
    return len(_settings(model)["filters"])


def _settings(model) -> dict:
    """``unet_model.read_settings``, its refusal as a :class:`UserError`."""
    import unet_model

    try:
        return unet_model.read_settings(model)
    except ValueError as err:
        raise UserError(str(err)) from None


def padding_layout(model) -> str:
    """How the Keras U-Net pads: :data:`TORCH_PADDING` (PyTorch's function exactly) or :data:`SAME_PADDING`.

    ``TORCH_PADDING`` needs every encoder convolution to be ``'valid'`` after a
    ``ZeroPadding2D(k//2)`` named ``encoder{i}_pad`` and every decoder transposed convolution to
    be ``'valid'`` followed by a ``Cropping2D((k//2, k//2 - 1))`` named ``decoder{i}_crop`` (see
    the module docstring). All-'same' convolutions are ``SAME_PADDING``; anything else raises
    :class:`UserError`.
    """
    depth = keras_depth(model)
    names = {layer.name for layer in model.layers}
    paddings = {model.get_layer(f"encoder{i}_conv").padding for i in range(1, depth + 1)}
    paddings |= {model.get_layer(f"decoder{i}_deconv").padding for i in range(1, depth + 1)}
    if paddings == {"same"}:
        return SAME_PADDING
    if paddings == {"valid"}:
        k = model.get_layer("encoder1_conv").kernel_size[0]
        pad, crop = k // 2, ((k // 2, k // 2 - 1),) * 2
        if all(f"encoder{i}_pad" in names and _pairs(model.get_layer(f"encoder{i}_pad").padding) == ((pad, pad),) * 2
               and f"decoder{i}_crop" in names and _pairs(model.get_layer(f"decoder{i}_crop").cropping) == crop
               for i in range(1, depth + 1)):
            return TORCH_PADDING
    raise UserError(f"model {model.name!r} pads neither as PyTorch (ZeroPadding2D + 'valid' convolutions, "
                    "cropped transposed convolutions) nor 'same'; pytorch_twin/convert_weights.py knows only these two")


def _pairs(value) -> tuple:
    """``((a, b), (c, d))`` from Keras' padding/cropping attribute (an int or pairs)."""
    if isinstance(value, int):
        return ((value, value),) * 2
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in value)


def _swap_halves(kernel: np.ndarray, axis: int) -> np.ndarray:
    """Exchange the two halves of a decoder kernel's input channels (skip-first <-> decoder-first)."""
    a, b = np.split(kernel, 2, axis=axis)
    return np.concatenate([b, a], axis=axis)


def keras_to_state_dict(model, skip_first: bool = False) -> dict[str, np.ndarray]:
    """The PyTorch twin's state_dict (as numpy arrays) holding the weights of a Keras U-Net.

    Keys and shapes are those documented in ``unet_torch``: ``conv{i}.weight`` ``(out, in, k, k)``,
    ``deconv{i}.weight`` ``(in, out, k, k)``, biases and batch norm statistics ``(channels,)``,
    and ``num_batches_tracked`` 0 so that a strict ``load_state_dict`` accepts it.
    """
    depth = keras_depth(model)
    state = {}
    for i in range(1, depth + 1):
        kernel, bias = model.get_layer(f"encoder{i}_conv").get_weights()
        state[f"conv{i}.weight"], state[f"conv{i}.bias"] = kernel.transpose(_TO_TORCH), bias
        state.update(_bn_to_torch(model.get_layer(f"encoder{i}_bn"), f"bn{i}"))
    for i in range(1, depth + 1):
        kernel, bias = model.get_layer(f"decoder{i}_deconv").get_weights()
        weight = kernel.transpose(_TO_TORCH)  # (in, out, k, k)
        state[f"deconv{i}.weight"] = _swap_halves(weight, 0) if skip_first and i > 1 else weight
        state[f"deconv{i}.bias"] = bias
        if i < depth:
            state.update(_bn_to_torch(model.get_layer(f"decoder{i}_bn"), f"debn{i}"))
    return {k: np.array(v, order="C") for k, v in state.items()}  # ascontiguousarray makes 0-d arrays 1-d


def _bn_to_torch(layer, prefix: str) -> dict[str, np.ndarray]:
    state = {f"{prefix}.{k}": w for k, w in zip(_BN_KEYS, layer.get_weights())}
    state[f"{prefix}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return state


def state_dict_to_keras(state_dict: dict, model, skip_first: bool = False, source: str = "checkpoint") -> None:
    """Set a Keras U-Net's weights from a twin state_dict (numpy arrays or tensors), in place.

    Every key and shape is checked before any weight is set: a mismatch raises
    :class:`UserError` naming ``source`` and listing the missing and unexpected keys and the
    shapes that differ. ``num_batches_tracked`` entries are optional and ignored.
    """
    expected = keras_to_state_dict(model, skip_first)
    given = {k: _to_numpy(v) for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    check_state_dict(given, {k: v.shape for k, v in expected.items() if not k.endswith(".num_batches_tracked")},
                     source)
    depth = keras_depth(model)
    for i in range(1, depth + 1):
        model.get_layer(f"encoder{i}_conv").set_weights(
            [given[f"conv{i}.weight"].transpose(_TO_KERAS), given[f"conv{i}.bias"]])
        model.get_layer(f"encoder{i}_bn").set_weights([given[f"bn{i}.{k}"] for k in _BN_KEYS])
        weight = given[f"deconv{i}.weight"]
        weight = _swap_halves(weight, 0) if skip_first and i > 1 else weight
        model.get_layer(f"decoder{i}_deconv").set_weights([weight.transpose(_TO_KERAS), given[f"deconv{i}.bias"]])
        if i < depth:
            model.get_layer(f"decoder{i}_bn").set_weights([given[f"debn{i}.{k}"] for k in _BN_KEYS])


def check_state_dict(given: dict, expected_shapes: dict, source: str = "checkpoint") -> None:
    """Raise :class:`UserError` listing every difference between a state_dict and the expected keys/shapes."""
    missing = [k for k in expected_shapes if k not in given]
    unexpected = [k for k in given if k not in expected_shapes]
    shapes = [f"{k} {tuple(given[k].shape)} instead of {tuple(s)}" for k, s in expected_shapes.items()
              if k in given and tuple(given[k].shape) != tuple(s)]
    parts = [f"{what}: {_listing(names)}" for what, names in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)) if names]
    if parts:
        raise UserError(f"{source}: does not match the coursework U-Net ({'; '.join(parts)}); "
                        "pytorch_twin/unet_torch.py documents the expected state_dict layout")


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _to_numpy(value) -> np.ndarray:
    """A tensor (any dtype, any device) or array as a float32 numpy array (int buffers kept)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.kind == "f" else value


# --------------------------------------------------------------------------------------------
# Between models (needs torch)
# --------------------------------------------------------------------------------------------


def keras_to_torch(model, skip_first: bool = False):
    """A ``unet_torch.UNet`` in eval mode with a Keras U-Net's weights and settings (slope, dropout)."""
    import torch
    from pytorch_twin import unet_torch

    settings = _settings(model)
    module = unet_torch.UNet(
        filters=settings["filters"], kernel_size=settings["kernel_size"], dropout=settings["dropout"],
        dropout_layers=settings["dropout_layers"], leaky_slope=settings["leaky_slope"], skip_first=skip_first,
    )
    _check_batch_norm(model, module)
    state = {k: torch.from_numpy(v) for k, v in keras_to_state_dict(model, skip_first).items()}
    module.load_state_dict(state)
    return module.eval()


def torch_to_keras(source, input_shape: tuple[int, int, int] = (DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1),
                   *, skip_first: bool | None = None, leaky_slope: float | None = None, name: str = "checkpoint"):
    """A Keras U-Net (``unet_model.build_unet``) with the weights of a PyTorch U-Net.

    ``source`` is a ``unet_torch.UNet`` (its settings are used) or a state_dict of that layout
    (depth, widths and kernel size are read from its shapes; ``skip_first`` and
    ``leaky_slope`` default to the coursework's False and 0.2). ``name`` labels errors.
    """
    import unet_model
    from pytorch_twin import unet_torch

    if isinstance(source, unet_torch.UNet):
        settings = dict(dropout=source.dropout, dropout_layers=source.dropout_layers,
                        leaky_slope=source.leaky_slope, skip_first=source.skip_first)
        state_dict = source.state_dict()
    else:
        settings, state_dict = {}, source
    if skip_first is not None:
        settings["skip_first"] = skip_first
    if leaky_slope is not None:
        settings["leaky_slope"] = leaky_slope
    try:
        template = unet_torch.unet_from_state_dict(state_dict, **settings)
    except ValueError as err:
        raise UserError(f"{name}: {err}; pytorch_twin/unet_torch.py documents the expected state_dict layout "
                        f"(keys seen: {_listing(list(state_dict))})") from None
    try:
        model = unet_model.build_unet(input_shape=input_shape, filters=template.filters,
                                      kernel_size=template.kernel_size, dropout=template.dropout,
                                      dropout_layers=template.dropout_layers, leaky_slope=template.leaky_slope)
    except ValueError as err:
        raise UserError(f"{name}: cannot build its Keras twin ({err})") from None
    state_dict_to_keras(state_dict, model, template.skip_first, source=name)
    _check_batch_norm(model, template)
    return model


def _check_batch_norm(model, module) -> None:
    """Warn when the frameworks' batch norm epsilons differ (the outputs would then differ too)."""
    import torch

    eps = {layer.epsilon for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"}
    torch_eps = {m.eps for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    if eps != torch_eps:
        warnings.warn(f"batch norm epsilon differs: Keras {sorted(eps)}, PyTorch {sorted(torch_eps)}; "
                      "the converted model's outputs will differ slightly", stacklevel=2)


def mask_difference(model, module, n: int = 1, seed: int = 0) -> tuple[float, float]:
    """Largest absolute and relative difference of the two models' masks on ``n`` random patches.

    The patches are mixture-like (non-negative, peak 1) of the Keras model's input shape; both
    models run in inference mode. The relative difference divides by the larger of the two
    masks (in [0, 1]; at least 1e-12).
    """
    import unet_model
    from pytorch_twin import unet_torch

    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(seed).random((n,) + shape, dtype=np.float32) ** 4
    x /= x.max(axis=(1, 2, 3), keepdims=True)
    ours = np.asarray(unet_model.mask_model(model).predict_on_batch(x))
    theirs = unet_torch.predict_mask(module, x)
    diff = np.abs(ours - theirs)
    return float(diff.max()), float((diff / np.maximum(np.maximum(ours, theirs), 1e-12)).max())


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


def load_torch_checkpoint(path, unsafe_pickle: bool = False) -> dict:
    """The state_dict in a PyTorch checkpoint file, as ``{key: tensor}``.

    Accepts a raw state_dict, a dict holding one under ``model_state_dict``, ``state_dict`` or
    ``model`` (a training checkpoint with optimizer and epoch), or a whole pickled module. The
    file is read with ``weights_only=True`` unless ``unsafe_pickle`` (unpickling a module runs
    code from the file, and needs its class to be importable). A ``module.`` prefix on every key
    (``nn.DataParallel``) is removed. Raises :class:`UserError` naming the file and the fix.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file" + (" (it is a folder)" if path.is_dir() else ""))
    if not _is_torch_file(path):
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint (not a file written by torch.save)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as err:
        if unsafe_pickle:
            raise UserError(f"{path}: cannot unpickle ({first_line(err)})") from None
        raise UserError(
            f"{path}: holds pickled Python objects besides tensors (a whole saved module?); if you trust the file, "
            "add --unsafe-pickle (this runs code from it), or re-save it in the original project with "
            "torch.save(model.state_dict(), 'weights.pt')") from None
    except (AttributeError, ModuleNotFoundError, ImportError) as err:
        raise UserError(
            f"{path}: was saved as a whole module whose class cannot be imported here ({first_line(err)}); "
            "in the original project run torch.save(model.state_dict(), 'weights.pt') and convert that") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint ({first_line(err)})") from None
    return extract_state_dict(obj, str(path))


#: How torch.save's legacy (before PyTorch 1.6) format begins: its magic number, pickled.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` has the form of a torch.save file: a zip archive, or the legacy format."""
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def extract_state_dict(obj, source: str = "checkpoint") -> dict:
    """The state_dict inside what ``torch.load`` returned (see :func:`load_torch_checkpoint`)."""
    import torch

    for _ in range(3):  # a module's state_dict, or one nested in a training checkpoint
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
        elif isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
            nested = [k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), (dict, torch.nn.Module))]
            if not nested:
                raise UserError(f"{source}: a dict without tensors nor a state_dict under {', '.join(CHECKPOINT_KEYS)} "
                                f"(keys: {_listing([str(k) for k in obj])})")
            obj = obj[nested[0]]
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{source}: holds a {type(obj).__name__}, not a state_dict or a module")
    state = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="direction", required=True)
    k2t = sub.add_parser("keras2torch", help="a .keras model to a PyTorch state_dict (.pt)")
    k2t.add_argument("source", help="the .keras model (audio_params.json beside it), e.g. runs/NAME/best.keras")
    k2t.add_argument("output", help="the .pt file to write (a plain state_dict)")
    t2k = sub.add_parser("torch2keras", help="a PyTorch checkpoint of the coursework U-Net to a .keras model")
    t2k.add_argument("source", help="the checkpoint (.pt/.pth): state_dict, training checkpoint dict or module")
    t2k.add_argument("output", help="the .keras file to write; audio_params.json is written beside it")
    t2k.add_argument("--params", help="audio_params.json the PyTorch model was trained with "
                                      "(default: the project's 8192 Hz, n_fft 1024, hop 768, 128 x 512)")
    t2k.add_argument("--leaky-slope", type=float, default=0.2,
                     help="the encoder's LeakyReLU slope, not stored in a state_dict (default 0.2)")
    t2k.add_argument("--unsafe-pickle", action="store_true",
                     help="allow a checkpoint that is a whole pickled module (runs code from the file)")
    for p in (k2t, t2k):
        p.add_argument("--skip-first", action="store_true",
                       help="the PyTorch model concatenates (skip, decoder) instead of (decoder, skip)")
        p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    return parser


def require_torch() -> None:
    """Raise :class:`UserError` with the install command when PyTorch (optional) is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("PyTorch is needed for this (an optional dependency): "
                        "pip install torch==2.13.0 (the CPU build)") from None


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    require_torch()
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output}: exists; choose another name or add --overwrite")
    if args.direction == "keras2torch":
        return _keras2torch(Path(args.source), output, args.skip_first)
    return _torch2keras(Path(args.source), output, args)


def _keras2torch(source: Path, output: Path, skip_first: bool) -> int:
    import torch
    import unet_model

    model, _ = unet_model.load_model(source)
    _warn_same_padding(model)
    module = keras_to_torch(model, skip_first)
    with atomic_output(output) as tmp:
        torch.save(module.state_dict(), tmp)
    print(f"wrote {output} ({len(module.state_dict())} state_dict entries, filters {module.filters})")
    _report_difference(model, module)
    return 0


def _torch2keras(source: Path, output: Path, args) -> int:
    import unet_model
    from pytorch_twin import unet_torch

    if output.suffix != ".keras":
        raise UserError(f"{output}: the Keras model file must end in .keras")
    params = AudioParams.load(args.params) if args.params else DEFAULT_PARAMS
    params_path = output.parent / unet_model.PARAMS_FILE
    if params_path.is_file():
        AudioParams.load(params_path).check_same(
            params, str(params_path), "write the model to another folder or pass that file with --params")
    state_dict = load_torch_checkpoint(source, args.unsafe_pickle)
    model = torch_to_keras(state_dict, (params.n_bins, params.patch_frames, 1), skip_first=args.skip_first,
                           leaky_slope=args.leaky_slope, name=str(source))
    _warn_same_padding(model)
    with atomic_output(output) as tmp:
        model.save(tmp)
    if not params_path.is_file():
        params.save(params_path)
    print(f"wrote {output} and {params_path} ({model.count_params():,} parameters)")
    module = unet_torch.unet_from_state_dict(state_dict, skip_first=args.skip_first, leaky_slope=args.leaky_slope)
    module.load_state_dict(state_dict, strict=False)  # num_batches_tracked may be absent
    _report_difference(model, module.eval())
    return 0


def _warn_same_padding(model) -> None:
    if padding_layout(model) == SAME_PADDING:
        print("warning: this Keras model pads 'same' (1 before, 2 after) where PyTorch pads 2 on both sides; "
              "the weights convert exactly but the two models compute different functions "
              "(see pytorch_twin/convert_weights.py's docstring)", file=sys.stderr)


def _report_difference(model, module) -> None:
    largest, relative = mask_difference(model, module)
    verdict = "equivalent" if relative <= TOLERANCE else "NOT equivalent"
    print(f"masks on a random patch: largest difference {largest:.3g} (relative {relative:.3g}): {verdict}")


if __name__ == "__main__":
    sys.exit(run_cli(main))

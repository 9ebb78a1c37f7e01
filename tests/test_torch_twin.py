"""Tests of the PyTorch twin (pytorch_twin/unet_torch.py), the weight conversion (pytorch_twin/convert_weights.py) and the
framework comparison (pytorch_twin/compare_frameworks.py). Skipped as a whole without PyTorch."""

import pickle
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch not installed: `pip install torch==2.13.0` (CPU wheel) to test the PyTorch twin")

from pytorch_twin import compare_frameworks  # noqa: E402
from pytorch_twin import convert_weights  # noqa: E402
import unet_model  # noqa: E402
from pytorch_twin import unet_torch  # noqa: E402
from separation.audio import AudioParams, save_audio  # noqa: E402
from separation.errors import UserError  # noqa: E402

TINY_FILTERS = (4, 8, 8, 8, 8, 8)
TINY_SHAPE = (64, 64, 1)  # depth 6 needs both axes divisible by 2**6
TINY_PARAMS = AudioParams(patch_frames=64, n_bins=64)


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    """The machine's cores are shared: keep PyTorch to what TensorFlow gets in the suite."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def randomize(model, seed=0):
    """Random weights with batch norm statistics far from Keras' initial (0, 1), so they count."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if type(layer).__name__ == "BatchNormalization":
            c = weights[0].shape
            weights = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
        else:
            kernel, bias = weights
            fan_in = kernel[..., 0].size if type(layer).__name__ == "Conv2D" else kernel[..., 0, :].size / 4
            weights = [rng.normal(0, fan_in ** -0.5, kernel.shape), rng.normal(0, 0.1, bias.shape)]
        layer.set_weights([w.astype(np.float32) for w in weights])
    return model


def random_patches(n, shape=TINY_SHAPE, seed=0):
    """Mixture-like patches: non-negative, peak 1 per patch, ``(n, bins, frames, 1)``."""
    x = np.random.default_rng(seed).random((n,) + shape, dtype=np.float32) ** 4
    return x / x.max(axis=(1, 2, 3), keepdims=True)


def keras_mask(model, x):
    return np.asarray(unet_model.mask_model(model).predict_on_batch(x))


def same_weights(a, b):
    return len(a.get_weights()) == len(b.get_weights()) and all(
        np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


# --------------------------------------------------------------------------------------------
# The twin
# --------------------------------------------------------------------------------------------


def expected_state_dict_shapes(filters, k=5):
    """The documented layout (unet_torch's docstring), derived from the filters alone."""
    shapes, c_in = {}, 1
    for i, f in enumerate(filters, start=1):
        shapes |= {f"conv{i}.weight": (f, c_in, k, k), f"conv{i}.bias": (f,)}
        shapes |= {f"bn{i}.{n}": (f,) for n in ("weight", "bias", "running_mean", "running_var")}
        shapes[f"bn{i}.num_batches_tracked"] = ()
        c_in = f
    for i, f in enumerate(list(reversed(filters[:-1])) + [1], start=1):
        shapes |= {f"deconv{i}.weight": (c_in, f, k, k), f"deconv{i}.bias": (f,)}
        if i < len(filters):
            shapes |= {f"debn{i}.{n}": (f,) for n in ("weight", "bias", "running_mean", "running_var")}
            shapes[f"debn{i}.num_batches_tracked"] = ()
        c_in = 2 * f
    return shapes


def test_twin_has_the_documented_state_dict_and_the_keras_parameter_count():
    module = unet_torch.UNet()
    state = module.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_state_dict_shapes(unet_torch.FILTERS)
    assert len(state) == 79
    assert state["deconv2.weight"].shape == (512, 128, 5, 5) and state["deconv6.weight"].shape == (32, 1, 5, 5)
    assert "debn6.weight" not in state
    counted = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert counted == 9_826_321 == unet_model.build_unet().count_params()
    conv, deconv = module.conv1, module.deconv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 5), (2, 2), (2, 2))
    assert (deconv.stride, deconv.padding, deconv.output_padding) == ((2, 2), (2, 2), (1, 1))
    assert module.bn1.eps == 1e-5 and module.bn1.momentum == 0.1


@pytest.mark.slow
def test_twin_forward_shapes_mask_range_and_dropout():
    torch.manual_seed(0)
    module = unet_torch.UNet(TINY_FILTERS)
    x = torch.from_numpy(random_patches(3)).permute(0, 3, 1, 2)
    module.eval()
    with torch.no_grad():
        mask = module(x)
        assert mask.shape == (3, 1, 64, 64)
        assert torch.all((mask >= 0) & (mask <= 1)) and mask.std() > 0
        assert torch.equal(mask, module(x))  # inference mode is deterministic
    # the layout helper: NHWC in, NHWC out, in eval mode whatever the module's mode
    module.train()
    np.testing.assert_array_equal(unet_torch.predict_mask(module, random_patches(3)), mask.permute(0, 2, 3, 1).numpy())
    assert module.training
    with torch.no_grad():
        assert not torch.equal(module(x), module(x))  # dropout is active in training
    rebuilt = unet_torch.unet_from_state_dict(module.state_dict())
    assert rebuilt.filters == TINY_FILTERS and rebuilt.kernel_size == 5


# --------------------------------------------------------------------------------------------
# The padding analysis, one layer at a time
# --------------------------------------------------------------------------------------------


def _layer_pair(transposed, keras_padding, seed=0):
    """(Keras layer output, PyTorch layer output) for one 5x5 stride-2 layer with copied weights."""
    import keras

    rng = np.random.default_rng(seed)
    n = 8 if transposed else 16
    x = rng.normal(size=(1, n, n, 3)).astype(np.float32)
    layer = (keras.layers.Conv2DTranspose if transposed else keras.layers.Conv2D)(2, 5, strides=2, padding=keras_padding)
    layers = [layer]
    if keras_padding == "valid":
        layers = [layer, keras.layers.Cropping2D(((2, 1), (2, 1)))] if transposed else [keras.layers.ZeroPadding2D(2), layer]
    stack = keras.Sequential(layers)
    stack.build(x.shape)
    kernel, bias = layer.get_weights()
    layer.set_weights([rng.normal(size=kernel.shape).astype(np.float32), rng.normal(size=bias.shape).astype(np.float32)])
    y = np.asarray(stack(x))
    kernel, bias = (torch.from_numpy(w) for w in layer.get_weights())
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        if transposed:
            t = torch.nn.functional.conv_transpose2d(tx, kernel.permute(3, 2, 0, 1), bias, stride=2, padding=2,
                                                     output_padding=1)
        else:
            t = torch.nn.functional.conv2d(tx, kernel.permute(3, 2, 0, 1), bias, stride=2, padding=2)
    return x, y, t.permute(0, 2, 3, 1).numpy(), layer


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_keras_same_padding_is_pytorch_mirrored_and_explicit_padding_is_exact(transposed):
    x, y, t, layer = _layer_pair(transposed, "valid")
    assert y.shape == t.shape
    np.testing.assert_allclose(y, t, rtol=1e-5, atol=1e-5)  # explicit padding: the same function

    x, y, t, layer = _layer_pair(transposed, "same")
    assert y.shape == t.shape
    assert np.abs(y - t).max() > 0.1  # 'same' with the kernel copied: another function
    # ... which is PyTorch's with the kernel rotated by 180 degrees, on the mirrored input
    import keras

    kernel, bias = layer.get_weights()
    layer.set_weights([kernel[::-1, ::-1].copy(), bias])
    mirrored = np.asarray(layer(np.ascontiguousarray(x[:, ::-1, ::-1])))[:, ::-1, ::-1]
    np.testing.assert_allclose(mirrored, t, rtol=1e-5, atol=1e-5)
    assert isinstance(layer, keras.layers.Layer)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_first", [False, True], ids=["decoder-first", "skip-first"])
@pytest.mark.slow
def test_conversion_is_exact_for_torch_padding_and_round_trips(skip_first):
    model = randomize(unet_model.build_unet(TINY_SHAPE, TINY_FILTERS), seed=1)
    assert convert_weights.padding_layout(model) == convert_weights.TORCH_PADDING
    module = convert_weights.keras_to_torch(model, skip_first=skip_first)
    assert module.skip_first == skip_first and not module.training
    x = random_patches(2, seed=2)
    ours, theirs = keras_mask(model, x), unet_torch.predict_mask(module, x)
    assert ours.std() > 0.01  # a mask that varies, so agreement means something
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(x)), theirs * x, rtol=1e-4, atol=1e-6)
    largest, relative = convert_weights.mask_difference(model, module)
    assert relative < convert_weights.TOLERANCE

    back = convert_weights.torch_to_keras(module, TINY_SHAPE)  # settings come from the module
    assert same_weights(back, model)
    if skip_first:  # the swapped halves are what make it agree, not an accident of symmetry
        wrong = convert_weights.torch_to_keras(module.state_dict(), TINY_SHAPE, skip_first=False)
        assert np.abs(keras_mask(wrong, x) - ours).max() > 1e-3


@pytest.mark.slow
def test_full_size_model_gives_the_same_mask_in_both_frameworks():
    """The default 512 x 128 U-Net on one patch, batch norm statistics included."""
    model = randomize(unet_model.build_unet((512, 128, 1), unet_torch.FILTERS), seed=3)
    module = convert_weights.keras_to_torch(model)
    x = random_patches(1, (512, 128, 1), seed=4)
    ours, theirs = keras_mask(model, x), unet_torch.predict_mask(module, x)
    assert ours.std() > 0.01
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-6)
    assert same_weights(convert_weights.torch_to_keras(module), model)


@pytest.mark.slow
def test_build_unet_pads_as_pytorch_so_the_functions_agree():
    """build_unet pads as PyTorch does: the weights round-trip and the outputs agree."""
    model = randomize(unet_model.build_unet(TINY_SHAPE, TINY_FILTERS), seed=5)
    assert convert_weights.padding_layout(model) == convert_weights.TORCH_PADDING
    module = convert_weights.keras_to_torch(model)
    assert same_weights(convert_weights.torch_to_keras(module, TINY_SHAPE), model)
    largest, relative = convert_weights.mask_difference(model, module, n=2)
    assert relative < convert_weights.TOLERANCE


def test_state_dict_mismatches_are_listed():
    model = unet_model.build_unet(TINY_SHAPE, TINY_FILTERS)
    state = convert_weights.keras_to_state_dict(model)
    del state["bn3.running_var"]
    state["conv7.weight"] = np.zeros((1,), np.float32)
    state["deconv2.weight"] = np.zeros((16, 4, 5, 5), np.float32)
    with pytest.raises(UserError) as err:
        convert_weights.state_dict_to_keras(state, model, source="old.pt")
    message = str(err.value)
    assert message.startswith("old.pt: does not match")
    assert "missing keys: bn3.running_var" in message and "unexpected keys: conv7.weight" in message
    assert "shapes differ: deconv2.weight (16, 4, 5, 5) instead of (16, 8, 5, 5)" in message
    before = [w.copy() for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # nothing was set
    with pytest.raises(UserError, match="no conv1.weight.*keys seen: encoder.weight"):
        convert_weights.torch_to_keras({"encoder.weight": torch.zeros(1)}, TINY_SHAPE, name="x.pt")


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def twin():
    torch.manual_seed(0)
    module = unet_torch.UNet(TINY_FILTERS)
    with torch.no_grad():
        module.bn2.running_mean.uniform_(-1, 1)
    return module


@pytest.mark.parametrize("wrap", ["raw", "model_state_dict", "state_dict", "data_parallel", "module"])
def test_checkpoint_formats_load(tmp_path, twin, wrap):
    state = twin.state_dict()
    obj = {
        "raw": state,
        "model_state_dict": {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": {"state": {}}},
        "state_dict": {"state_dict": state, "best_loss": 0.1},
        "data_parallel": {f"module.{k}": v for k, v in state.items()},
        "module": twin,
    }[wrap]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    if wrap == "module":
        with pytest.raises(UserError, match="ckpt.pt: holds pickled Python objects.*--unsafe-pickle"):
            convert_weights.load_torch_checkpoint(path)
    loaded = convert_weights.load_torch_checkpoint(path, unsafe_pickle=wrap == "module")
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_checkpoint_errors_name_the_file_and_fix(tmp_path, twin, monkeypatch):
    with pytest.raises(UserError, match="missing.pt: no such checkpoint file"):
        convert_weights.load_torch_checkpoint(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="broken.pt: cannot"):
        convert_weights.load_torch_checkpoint(broken)
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "losses": [1.0]}, other)
    with pytest.raises(UserError, match="other.pt: a dict without tensors.*keys: epoch, losses"):
        convert_weights.load_torch_checkpoint(other)

    # a whole module whose class lived in the user's own script, absent here
    coursework = types.ModuleType("coursework_unet")
    coursework.UNet = type("UNet", (unet_torch.UNet,), {"__module__": "coursework_unet"})
    monkeypatch.setitem(sys.modules, "coursework_unet", coursework)
    foreign = coursework.UNet(TINY_FILTERS)
    path = tmp_path / "whole.pt"
    torch.save(foreign, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    monkeypatch.delitem(sys.modules, "coursework_unet")
    with pytest.raises(UserError, match="whole.pt: was saved as a whole module.*torch.save\\(model.state_dict"):
        convert_weights.load_torch_checkpoint(path, unsafe_pickle=True)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


#: The filters of the command's model: two levels (the conversion of every depth is tested above).
RUN_FILTERS = (4, 8)


@pytest.fixture
def run_dir(tmp_path):
    """A trained-looking tiny two-level model saved as run/best.keras with its audio parameters."""
    run = tmp_path / "run"
    run.mkdir()
    model = randomize(unet_model.build_unet(TINY_SHAPE, RUN_FILTERS), seed=6)
    model.save(run / "best.keras")
    TINY_PARAMS.save(run / unet_model.PARAMS_FILE)
    return model, run / "best.keras"


@pytest.mark.slow
def test_cli_keras2torch_then_torch2keras(run_dir, tmp_path, capsys):
    model, path = run_dir
    pt = tmp_path / "out.pt"
    assert convert_weights.main(["keras2torch", str(path), str(pt)]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and ": equivalent" in out
    # the coursework's own code loads it strictly
    module = unet_torch.UNet(RUN_FILTERS)
    module.load_state_dict(torch.load(pt, weights_only=True))
    x = random_patches(2, seed=7)
    np.testing.assert_allclose(unet_torch.predict_mask(module, x), keras_mask(model, x), rtol=1e-4, atol=1e-6)

    params_file = tmp_path / "tiny_params.json"
    TINY_PARAMS.save(params_file)
    out_dir = tmp_path / "converted"
    out_dir.mkdir()
    keras_path = out_dir / "model.keras"
    assert convert_weights.main(["torch2keras", str(pt), str(keras_path), "--params", str(params_file)]) == 0
    out = capsys.readouterr()
    loaded, params = unet_model.load_model(keras_path)
    assert params == TINY_PARAMS
    assert ": equivalent" in out.out or "pads 'same'" in out.err  # build_unet's padding decides
    assert [w.shape for w in loaded.get_weights()] == [w.shape for w in model.get_weights()]
    state = convert_weights.keras_to_state_dict(loaded)
    assert state.keys() == module.state_dict().keys()
    assert all(state[k].shape == v.shape and np.array_equal(state[k], v.numpy()) for k, v in module.state_dict().items())

    with pytest.raises(UserError, match="model.keras: exists.*--overwrite"):
        convert_weights.main(["torch2keras", str(pt), str(keras_path)])
    # a folder holding other audio parameters is refused before anything is written
    with pytest.raises(UserError, match="audio_params.json was made with other audio parameters"):
        convert_weights.main(["torch2keras", str(pt), str(out_dir / "second.keras")])
    assert not (out_dir / "second.keras").exists()
    with pytest.raises(UserError, match="must end in .keras"):
        convert_weights.main(["torch2keras", str(pt), str(tmp_path / "model.h5")])


def test_commands_without_torch_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without PyTorch gives
    with pytest.raises(UserError, match="pip install torch==2.13.0"):
        convert_weights.main(["keras2torch", str(tmp_path / "a.keras"), str(tmp_path / "a.pt")])
    with pytest.raises(UserError, match="pip install torch==2.13.0"):
        compare_frameworks.main(["--model", str(tmp_path / "a.keras"), str(tmp_path / "song.wav")])


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_frameworks_on_two_short_tracks(run_dir, tmp_path, capsys):
    _, path = run_dir
    rng = np.random.default_rng(0)
    sr = TINY_PARAMS.sample_rate
    t = np.arange(3 * sr) / sr
    for name in ("a", "b"):
        folder = tmp_path / "stems" / "test" / name
        folder.mkdir(parents=True)
        vocals = (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t))[:, None].astype(np.float32)
        accompaniment = (0.1 * rng.normal(size=t.shape))[:, None].astype(np.float32)
        for stem, x in (("vocals", vocals), ("accompaniment", accompaniment), ("mixture", vocals + accompaniment)):
            save_audio(folder / f"{stem}.wav", x, sr)
    argv = ["--model", str(path), "--dataset", "stems", "--root", str(tmp_path / "stems"), "--split", "test",
            "--batch-size", "2", "--threads", "1", "--bench-batches", "1"]
    assert compare_frameworks.main(argv) == 0
    out = capsys.readouterr().out
    assert "Keras padding: torch" in out
    diff_line = next(line for line in out.splitlines() if line.startswith("overall:"))
    mask_diff = float(diff_line.split("mask ")[1].split(",")[0])
    assert mask_diff < 1e-4  # the same function in both frameworks, on real spectrogram patches
    assert out.count("keras") >= 3 and "GNSDR" in out
    for task in ("inference", "training"):
        row = next(line for line in out.splitlines() if line.startswith(task)).split()
        assert float(row[1]) > 0 and float(row[2]) > 0  # patches per second of both

    # from a PyTorch checkpoint, on a plain song (no references: differences only, no scores)
    pt = tmp_path / "coursework.pt"
    torch.save(convert_weights.keras_to_torch(unet_model.load_model(path)[0]).state_dict(), pt)
    params = tmp_path / "params.json"
    TINY_PARAMS.save(params)
    argv = ["--torch", str(pt), "--params", str(params), str(tmp_path / "stems" / "test" / "a" / "mixture.wav"),
            "--bench-batches", "0", "--threads", "1"]
    assert compare_frameworks.main(argv) == 0
    out = capsys.readouterr().out
    layout = convert_weights.padding_layout(unet_model.build_unet(TINY_SHAPE, RUN_FILTERS))
    assert f"Keras padding: {layout}" in out and "overall: mask" in out
    assert "GNSDR" not in out and "Patches per second" not in out

    with pytest.raises(UserError, match="--dataset and --root go together"):
        compare_frameworks.main(["--model", str(path), "--dataset", "stems"])

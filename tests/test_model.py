"""Tests of unet_model.py: architecture, parameter count, mask output, saving and loading,
and the same model on a second Keras backend (PyTorch) when one is installed."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import unet_model
from helpers import ROOT, randomized
from separation.audio import AudioParams, DEFAULT_PARAMS
from separation.errors import UserError

TINY_FILTERS = (4, 8, 8, 8, 8, 8)
TINY_SHAPE = (64, 64, 1)  # depth 6 needs both axes divisible by 2**6
TINY_PARAMS = AudioParams(patch_frames=64, n_bins=64)


def tiny_model(**kwargs):
    return unet_model.build_unet(input_shape=TINY_SHAPE, filters=TINY_FILTERS, **kwargs)


def random_patches(n, shape=TINY_SHAPE, seed=0):
    """Mixture-like patches: non-negative, peak 1 per patch."""
    x = np.random.default_rng(seed).random((n,) + shape, dtype=np.float32) ** 4
    return x / x.max(axis=(1, 2, 3), keepdims=True)


def expected_param_count(filters, kernel_size, channels_in=1):
    """Count the U-Net's parameters from its description, independently of Keras.

    A (transposed) convolution from c_in to c_out channels has k*k*c_in*c_out weights plus
    c_out biases; a batch norm over c channels has 4c (gamma, beta, moving mean and variance).
    Encoder: 1 -> f1 -> ... -> fn, each with batch norm. Decoder block i maps its input to
    f_{n-i} channels and is concatenated with the encoder's f_{n-i} channels, so the next
    block's input has 2 f_{n-i}; the first block's input is the bottleneck f_n; the last block
    maps 2 f_1 to one channel and has no batch norm.
    """
    k2 = kernel_size * kernel_size
    total, c_in = 0, channels_in
    for f in filters:
        total += k2 * c_in * f + f + 4 * f
        c_in = f
    for f in reversed(filters[:-1]):
        total += k2 * c_in * f + f + 4 * f
        c_in = 2 * f
    total += k2 * c_in * 1 + 1
    return total


def test_default_architecture_parameter_count_and_shapes():
    model = unet_model.build_unet()
    assert model.count_params() == expected_param_count((16, 32, 64, 128, 256, 512), 5)
    assert model.count_params() == 9_826_321  # the formula's value, quoted in docs/model.md
    assert tuple(model.inputs[0].shape) == (None, DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1)
    assert model.output_names == ["vocals"]
    assert tuple(model.outputs[0].shape) == (None, 512, 128, 1)
    # the bottleneck after six stride-2 encoder layers, and the encoder filters as specified
    assert tuple(model.get_layer("encoder6_act").output.shape) == (None, 8, 2, 512)
    assert [model.get_layer(f"encoder{i}_conv").filters for i in range(1, 7)] == [16, 32, 64, 128, 256, 512]
    assert [model.get_layer(f"decoder{i}_deconv").filters for i in range(1, 7)] == [256, 128, 64, 32, 16, 1]
    for i in range(1, 7):
        conv = model.get_layer(f"encoder{i}_conv")
        assert conv.kernel_size == (5, 5) and conv.strides == (2, 2) and conv.padding == "valid"
        assert model.get_layer(f"encoder{i}_pad").padding == ((2, 2), (2, 2))  # PyTorch's padding=2
        assert model.get_layer(f"encoder{i}_act").negative_slope == pytest.approx(0.2)
    # dropout 0.5 on the first three decoder blocks only; the last block has no batch norm
    names = {layer.name for layer in model.layers}
    assert [model.get_layer(f"decoder{i}_dropout").rate for i in (1, 2, 3)] == [0.5] * 3
    assert not {"decoder4_dropout", "decoder5_dropout", "decoder6_bn", "decoder6_act"} & names
    # skip connections double the channels of every decoder block but the last
    assert [model.get_layer(f"decoder{i}_skip").output.shape[-1] for i in range(1, 6)] == [512, 256, 128, 64, 32]


def test_tiny_model_parameter_count_follows_arguments():
    model = unet_model.build_unet(input_shape=(32, 16, 1), filters=(3, 5, 7), kernel_size=3)
    assert model.count_params() == expected_param_count((3, 5, 7), 3)
    assert tuple(model.outputs[0].shape) == (None, 32, 16, 1)


@pytest.mark.slow
def test_output_is_mask_times_input_and_mask_is_in_unit_interval():
    model = tiny_model()
    x = random_patches(3)
    vocals = np.asarray(model.predict(x, verbose=0))
    mask = np.asarray(unet_model.mask_model(model).predict(x, verbose=0))
    assert vocals.shape == mask.shape == x.shape
    assert np.all((mask >= 0) & (mask <= 1))
    assert mask.std() > 0  # a real function of the input, not a constant
    np.testing.assert_allclose(vocals, mask * x, rtol=1e-5, atol=1e-7)
    # inference is deterministic (dropout and batch norm in inference mode)
    np.testing.assert_array_equal(vocals, np.asarray(model.predict(x, verbose=0)))


def test_dropout_can_be_disabled():
    names = {layer.name for layer in tiny_model(dropout=0.0).layers}
    assert not any("dropout" in name for name in names)
    names = {layer.name for layer in tiny_model(dropout_layers=9).layers}
    assert sum("dropout" in name for name in names) == 5  # every decoder block before the mask


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(96, 64, 1)), "bins=96 must divide by 2\\*\\*6"),
        (dict(input_shape=(64, 64, 2)), "must be \\(bins, frames, 1\\)"),
        (dict(filters=()), "non-empty"),
        (dict(dropout_layers=-1), "dropout_layers >= 0"),
        (dict(dropout=1.0), "dropout in \\[0, 1\\)"),
    ],
)
def test_build_unet_rejects_inconsistent_settings(kwargs, message):
    settings = dict(input_shape=TINY_SHAPE, filters=TINY_FILTERS) | kwargs
    with pytest.raises(ValueError, match=message):
        unet_model.build_unet(**settings)


@pytest.fixture
def saved_tiny(tmp_path):
    """A tiny two-level model saved as run/best.keras with its audio parameters beside it."""
    import keras

    keras.utils.set_random_seed(1)
    model = unet_model.build_unet(input_shape=TINY_SHAPE, filters=(4, 8))  # two levels: loading is not about depth
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    TINY_PARAMS.save(run / unet_model.PARAMS_FILE)
    return model, run / "best.keras"


def test_load_model_round_trip(saved_tiny):
    import keras

    model, path = saved_tiny
    loaded, params = unet_model.load_model(path)
    assert params == TINY_PARAMS
    x = random_patches(2)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    # the mask is reachable on a loaded model too, and a plain Keras load needs no custom objects
    assert unet_model.mask_model(loaded).output_shape == (None,) + TINY_SHAPE
    assert keras.saving.load_model(path).output_names == ["vocals"]


def test_load_model_errors_name_the_file_and_fix(saved_tiny, tmp_path):
    _, path = saved_tiny
    with pytest.raises(UserError, match="no such model file or folder.*train.py"):
        unet_model.load_model(tmp_path / "missing.keras")
    assert unet_model.load_model(path.parent)[0].count_params() == saved_tiny[0].count_params()  # a run folder
    (path.parent / "other.keras").write_bytes(b"x")
    path.rename(path.with_name("first.keras"))
    with pytest.raises(UserError, match="several models"):
        unet_model.load_model(path.parent)
    path.with_name("first.keras").rename(path)

    (path.parent / unet_model.PARAMS_FILE).write_text(json.dumps(DEFAULT_PARAMS.to_dict()))
    with pytest.raises(UserError, match=r"model input \(64, 64, 1\) does not match"):
        unet_model.load_model(path)
    (path.parent / unet_model.PARAMS_FILE).unlink()
    with pytest.raises(UserError, match="audio parameters missing beside the model"):
        unet_model.load_model(path)

    TINY_PARAMS.save(path.parent / unet_model.PARAMS_FILE)
    path.write_bytes(path.read_bytes()[:200])  # a truncated download
    with pytest.raises(UserError, match="best.keras: damaged or not a Keras model file"):
        unet_model.load_model(path)
    other = path.with_suffix(".h5")
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="not a Keras 3 model file"):
        unet_model.load_model(other)


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "zip without a model"])
def test_a_damaged_model_file_is_named_as_such(saved_tiny, damage):
    import zipfile

    _, path = saved_tiny
    data = path.read_bytes()
    if damage == "zip without a model":
        path.unlink()
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    else:
        path.write_bytes({"empty": b"", "truncated": data[: len(data) * 2 // 3], "text": b"model\n"}[damage])
    with pytest.raises(UserError, match=r"best.keras: damaged or not a Keras model file \(.*\); download or copy it "
                                        "again") as err:
        unet_model.load_model(path)
    assert "not found" not in str(err.value).lower()


def wrong_mask_model(kind):
    """A functional model with a layer named ``mask`` and 64 x 64 x 1 patches in, not the U-Net:
    its mask has two channels, or half the resolution (upsampled before the output)."""
    import keras

    mix = keras.Input(shape=TINY_SHAPE, name="mixture")
    if kind == "channels":
        mask = keras.layers.Conv2D(2, 3, padding="same", activation="sigmoid", name="mask")(mix)
        vocals = keras.layers.Multiply(name="vocals")([mask, mix])  # broadcasts to 64 x 64 x 2
    else:
        small = keras.layers.AveragePooling2D(2)(mix)
        mask = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask")(small)
        vocals = keras.layers.Multiply(name="vocals")([keras.layers.UpSampling2D(2)(mask), mix])
    return keras.Model(mix, vocals)


@pytest.mark.parametrize("kind, shape", [("channels", r"'mask' layer \(64, 64, 2\)"),
                                         ("resolution", r"'mask' layer \(32, 32, 1\)")])
def test_a_model_with_a_wrong_mask_layer_is_refused_in_one_line(tmp_path, kind, shape, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    wrong_mask_model(kind).save(folder / "best.keras")
    TINY_PARAMS.save(folder / unet_model.PARAMS_FILE)
    with pytest.raises(UserError, match=rf"best.keras: not the U-Net of this project for \(64, 64, 1\) patches "
                                        rf"\(.*{shape}.*\); use a model saved by train.py"):
        unet_model.load_model(folder)
    # the command line: one line, exit 2, nothing written
    import soundfile

    import inference
    from separation import cli

    song = tmp_path / "song.wav"
    soundfile.write(song, np.zeros((8192, 2), "float32"), 8192)
    assert cli.run_cli(inference.main, [str(song), "--model", str(folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not the U-Net of this project" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_audio_parameters_travel_inside_the_model_file(saved_tiny, tmp_path):
    model, path = saved_tiny
    assert unet_model.saved_params(path) is None  # saved by plain Keras, as before: the JSON beside it counts
    inside = tmp_path / "alone" / "model.keras"
    inside.parent.mkdir()
    unet_model.save_model(model, inside, TINY_PARAMS)
    assert unet_model.saved_params(inside) == TINY_PARAMS
    loaded, params = unet_model.load_model(inside)  # no audio_params.json beside it: the model's own
    assert params == TINY_PARAMS
    x = random_patches(1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    TINY_PARAMS.save(inside.parent / unet_model.PARAMS_FILE)  # an agreeing file beside it is fine
    assert unet_model.load_model(inside)[1] == TINY_PARAMS
    import dataclasses

    dataclasses.replace(TINY_PARAMS, sample_rate=16000).save(inside.parent / unet_model.PARAMS_FILE)
    with pytest.raises(UserError, match=r"audio_params.json: the model model.keras was made with other audio "
                                        r"parameters \(sample_rate: 8192 vs 16000\); remove this audio_params.json"):
        unet_model.load_model(inside)


SECOND_BACKEND = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    sys.path.insert(0, sys.argv[1])
    from separation import unet_fast
    import unet_model

    assert keras.backend.backend() == "torch", keras.backend.backend()
    # the model saved by the TensorFlow backend gives the same predictions here
    x = np.load(sys.argv[3])
    loaded = keras.saving.load_model(sys.argv[2])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), np.load(sys.argv[4]),
                               rtol=1e-4, atol=1e-6)

    # and a fresh model builds and trains here
    keras.utils.set_random_seed(0)
    model = unet_model.build_unet(input_shape=(64, 64, 1), filters=(4, 8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    y = x * (np.arange(64, dtype="float32")[None, :, None, None] < 32)  # "vocals": the low half
    before = [w.copy() for w in model.get_weights()]
    loss = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss), loss
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    mask = keras.ops.convert_to_numpy(unet_model.mask_model(model)(x, training=False))
    out = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(out, mask * x, rtol=1e-5, atol=1e-7)

    # keras.ops only: the inference-only U-Net (unet_fast) runs here too, every path
    model = keras.saving.load_model(sys.argv[5])
    x = np.load(sys.argv[6])
    reference = keras.ops.convert_to_numpy(unet_model.mask_model(model)(x, training=False))
    for precision, tolerance in (("float32", 2e-6), ("bfloat16", 1e-2)):
        fast = np.asarray(unet_fast.inference_mask_model(model, precision).predict_on_batch(x))
        assert np.abs(fast - reference).max() < tolerance, (precision, np.abs(fast - reference).max())
    assert not unet_fast.bfloat16_is_fast()  # TensorFlow's oneDNN only
    print("ok", loss)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch not installed (pip install torch==2.13.0 to test the torch backend)")
def test_model_loads_trains_and_runs_the_inference_model_on_torch_backend(saved_tiny, tmp_path):
    """One process on Keras' PyTorch backend: a model saved by the TensorFlow backend predicts the
    same there, a fresh one trains, and the inference-only U-Net gives its mask on every path."""
    model, path = saved_tiny
    x = random_patches(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model.predict(x, verbose=0)))
    # the speed paths' every-route U-Net (test_speed_paths.py), batch norm far from its initial values
    paths = randomized(unet_model.build_unet((64, 32, 1), (8, 16, 24), kernel_size=7), seed=12)
    paths.save(tmp_path / "paths.keras")
    np.save(tmp_path / "paths.npy", random_patches(2, (64, 32, 1), seed=13))
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run(
        [sys.executable, "-c", SECOND_BACKEND, str(ROOT), str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
         str(tmp_path / "paths.keras"), str(tmp_path / "paths.npy")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")

"""Correctness of the speed paths (benchmarks/RESULTS.md measures their speed): the inference-only
U-Net (unet_fast.inference_mask_model) computes the mask of unet_model.mask_model, whatever
route each block takes, falls back to it when they disagree, and inference.Separator uses it.
On Keras' PyTorch backend it is checked in test_model.py's process on that backend."""

import os

import numpy as np
import pytest

import inference
from separation import unet_fast
import unet_model
from helpers import randomized
from separation.audio import AudioParams

PATHS = {"conv", "matmul", "phases", "transpose", "subpixel"}
#: A three-level U-Net for the tests where the depth is not what is tested (quicker to trace than six).
SMALL = (4, 8, 8)


def patches(n, shape, seed=1):
    """Mixture-like normalised patches ``(n, bins, frames, 1)``: non-negative, peak 1."""
    x = np.random.default_rng(seed).random((n,) + shape, dtype=np.float32) ** 4
    return x / x.max(axis=(1, 2, 3), keepdims=True)


def masks(model, x, precision="float32"):
    """``(reference mask, inference-path mask, the path of each block)``."""
    reference = np.asarray(unet_model.mask_model(model).predict_on_batch(x))
    fast = unet_fast.inference_mask_model(model, precision)
    return reference, np.asarray(fast.predict_on_batch(x)), [block[1] for block in fast.get_layer("mask").blocks]


@pytest.mark.parametrize("shape, filters, kernel_size", [
    ((64, 64, 1), (4, 8, 8, 8, 8, 8), 5),      # bottleneck blocks as matrix products, mask as sub-pixel
    ((64, 64, 1), (16, 16, 16, 16, 16, 16), 5),  # adds a transposed convolution before the mask
    ((32, 16, 1), (3, 5, 7), 3),               # 2x2 parity kernels
    ((64, 32, 1), (8, 16, 24), 7),             # 4x4 parity kernels, every path
])
@pytest.mark.slow
def test_inference_model_gives_the_mask_of_the_trained_model(shape, filters, kernel_size):
    import keras

    keras.utils.set_random_seed(0)  # initial weights fixed: the mask's spread below is then always the same
    model = randomized(unet_model.build_unet(shape, filters, kernel_size=kernel_size))
    x = patches(3, shape)
    reference, fast, paths = masks(model, x)
    assert reference.std() > 0.01  # a mask that depends on the input, so agreement means something
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=2e-6)
    assert fast.dtype == np.float32 and fast.shape == x.shape
    assert paths[0] == "conv" and paths[-1] == "subpixel"


@pytest.mark.slow
def test_full_size_model_every_path_and_bfloat16():
    model = randomized(unet_model.build_unet(), seed=2)
    x = patches(2, (512, 128, 1), seed=3)
    reference, fast, paths = masks(model, x)
    assert set(paths) == PATHS  # each route is exercised by the default U-Net
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=2e-6)

    _, low, _ = masks(model, x, "bfloat16")
    difference = np.abs(low - reference)
    assert low.dtype == np.float32
    assert 1e-6 < difference.max() < 1e-2  # computed in bfloat16 (8-bit mantissa), yet the same mask
    assert difference.mean() < 1e-3


@pytest.mark.slow
def test_trained_batch_norm_and_dropout_settings_are_followed():
    """A model after a few training steps (moving statistics updated, dropout off at inference); a
    three-level U-Net whose blocks take every route (as in the first test's last case)."""
    import keras

    keras.utils.set_random_seed(4)
    model = unet_model.build_unet((64, 32, 1), (8, 16, 24), kernel_size=7, dropout=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = patches(4, (64, 32, 1), seed=5)
    model.fit(x, 0.5 * x, batch_size=2, epochs=2, verbose=0)
    reference, fast, paths = masks(model, x)
    assert set(paths) == PATHS
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=2e-6)


def test_inference_model_refuses_other_models_and_precisions():
    import keras

    inputs = keras.Input((64, 64, 1))
    other = keras.Model(inputs, keras.layers.Activation("sigmoid", name="mask")(keras.layers.Conv2D(1, 3, padding="same")(inputs)))
    with pytest.raises(ValueError, match="not a U-Net from unet_model.build_unet"):
        unet_fast.inference_mask_model(other)
    with pytest.raises(ValueError, match="precision must be one of"):
        unet_fast.inference_mask_model(unet_model.build_unet((64, 64, 1), (4, 8)), "float16")


@pytest.mark.slow
def test_separator_runs_the_inference_model_and_keeps_other_models_working():
    params = AudioParams(n_bins=64, patch_frames=64)
    model = randomized(unet_model.build_unet((64, 64, 1), SMALL), seed=6)
    x = patches(2, (64, 64, 1), seed=7)
    reference = np.asarray(unet_model.mask_model(model).predict_on_batch(x))
    separator = inference.Separator(model, params)
    assert separator.precision == "float32"
    np.testing.assert_allclose(separator.predict(x), reference, rtol=1e-5, atol=2e-6)
    low = inference.Separator(model, params, precision="bfloat16")
    assert low.precision == "bfloat16" and 0 < np.abs(low.predict(x) - reference).max() < 1e-2

    import keras  # a model with a mask layer but not build_unet's layout runs as it is

    inputs = keras.Input((64, 64, 1))
    mask = keras.layers.Activation("sigmoid", name="mask")(keras.layers.Conv2D(1, 3, padding="same")(inputs))
    other = keras.Model(inputs, keras.layers.Multiply(name="vocals")([mask, inputs]))
    expected = np.asarray(keras.Model(inputs, mask).predict_on_batch(x))
    np.testing.assert_allclose(inference.Separator(other, params).predict(x), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="not a U-Net from unet_model.build_unet.*float32 only"):
        inference.Separator(other, params, precision="bfloat16")  # said, rather than silently ignored
    np.testing.assert_allclose(inference.Separator(other, params, precision="auto").predict(x), expected, rtol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.slow
def test_auto_precision_follows_the_cpu(monkeypatch, fast):
    """"auto" (the command line's default) is bfloat16 exactly where unet_fast says it is fast."""
    monkeypatch.setattr(unet_fast, "bfloat16_is_fast", lambda: fast)
    params = AudioParams(n_bins=64, patch_frames=64)
    model = randomized(unet_model.build_unet((64, 64, 1), SMALL), seed=10)
    x = patches(2, (64, 64, 1), seed=11)
    expected = inference.Separator(model, params, precision="bfloat16" if fast else "float32").predict(x)
    np.testing.assert_array_equal(inference.Separator(model, params, precision="auto").predict(x), expected)


def test_an_edited_network_falls_back_to_the_readable_model_with_a_warning(monkeypatch):
    """A student changes build_unet (here: the decoder's ReLU becomes a tanh). The fast path,
    which still computes the paper's network, disagrees with it on the check patch: the
    student's network is served, and a warning says why it is slower."""
    import keras

    original = keras.layers.ReLU
    monkeypatch.setattr(keras.layers, "ReLU", lambda name, **kwargs: keras.layers.Activation("tanh", name=name, **kwargs))
    edited = randomized(unet_model.build_unet((64, 64, 1), SMALL), seed=14)
    monkeypatch.setattr(keras.layers, "ReLU", original)
    x = patches(2, (64, 64, 1), seed=15)
    reference = np.asarray(unet_model.mask_model(edited).predict_on_batch(x))
    with pytest.warns(UserWarning, match="does not reproduce.*mask_model"):
        served = unet_fast.inference_mask_model(edited)
    np.testing.assert_allclose(np.asarray(served.predict_on_batch(x)), reference, rtol=1e-6)
    assert unet_fast.inference_mask_model(edited, check=False).get_layer("mask").__class__ is unet_fast.InferenceMask


@pytest.mark.slow
def test_perturbed_weights_are_still_followed_and_a_wrong_fold_is_caught(monkeypatch):
    """Weights are read afresh from the model (edited ones are followed); a fast path that folds
    them wrongly is caught by the check instead of serving another mask."""
    model = randomized(unet_model.build_unet((64, 64, 1), SMALL), seed=16)
    conv = model.get_layer("decoder2_deconv")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 3.0, bias + 0.5])
    x = patches(2, (64, 64, 1), seed=17)
    reference = np.asarray(unet_model.mask_model(model).predict_on_batch(x))
    np.testing.assert_allclose(np.asarray(unet_fast.inference_mask_model(model).predict_on_batch(x)), reference,
                               rtol=1e-5, atol=2e-6)
    load = unet_fast.InferenceMask.load_folded

    def wrong_fold(self, source):
        load(self, source)
        self.biases[-1].assign(self.biases[-1] + 1.0)  # the mask layer's bias off by one

    monkeypatch.setattr(unet_fast.InferenceMask, "load_folded", wrong_fold)
    with pytest.warns(UserWarning, match="differs from unet_model.mask_model"):
        served = unet_fast.inference_mask_model(model)
    np.testing.assert_allclose(np.asarray(served.predict_on_batch(x)), reference, rtol=1e-6)
    with pytest.warns(UserWarning, match="differs from unet_model.mask_model"):  # bfloat16's looser check too
        unet_fast.inference_mask_model(model, "bfloat16")


@pytest.mark.slow
def test_the_shipped_model_passes_the_bfloat16_check():
    """bfloat16 rounding leaves isolated mask cells several 1e-2 off (0.09 on an AMD EPYC): the
    check must accept that rounding, or every bfloat16 run warns and falls back to the slow path."""
    import warnings

    model, _ = unet_model.load_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = unet_fast.inference_mask_model(model, "bfloat16")
    assert fast.get_layer("mask").__class__ is unet_fast.InferenceMask


def test_bfloat16_is_fast_reads_the_cpu_flags(monkeypatch):
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert unet_fast.bfloat16_is_fast() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # emulated bfloat16: never chosen
    assert not unet_fast.bfloat16_is_fast()


def test_cli_bfloat16_separates_like_float32(tmp_path, tiny_model_dir):
    import soundfile as sf

    song = (0.1 * np.random.default_rng(8).standard_normal((3 * 22050, 2))).astype(np.float32)
    sf.write(tmp_path / "song.wav", song, 22050, subtype="FLOAT")
    stems = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        assert inference.main([str(tmp_path / "song.wav"), "-o", str(out), "--model", str(tiny_model_dir),
                               "--precision", precision]) == 0
        stems[precision], sr = sf.read(out / "song" / "vocals.wav", dtype="float32")
        assert sr == 22050 and stems[precision].shape == song.shape
    difference = np.abs(stems["bfloat16"] - stems["float32"]).max()
    assert 0 < difference < 0.01 * np.abs(stems["float32"]).max()

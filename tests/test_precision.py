"""Mixed-precision training (train.py and pytorch_twin/train_torch.py ``--precision``): the U-Net built for
bfloat16 keeps its mask and loss in float32, saves float32 models that load and separate as before, keeps its
precision when resumed (``auto`` decided once), and refuses a bad value in one line."""

import json

import numpy as np
import pytest

import inference
import train
import unet_model
from separation import cli, runs, unet_fast

from helpers import SR, TINY_PARAMS

TINY_FILTERS = (4, 8, 8, 8, 8, 8)


def options(cache, run, epochs, *extra):
    """train.py's options for a two-level U-Net (precision is not about depth) on conftest.tiny_cache."""
    return ["--cache", str(cache), "--run-dir", str(run), "--epochs", str(epochs), "--steps-per-epoch", "2",
            "--batch-size", "2", "--filters", "4,8", "--validation-split", "0.25", "--verbose", "0", *extra]


def policies(model) -> dict[str, str]:
    return {layer.name: layer.dtype_policy.name for layer in model.layers}


def test_the_bfloat16_unet_keeps_weights_mask_and_output_in_float32():
    model = unet_model.build_unet((64, 64, 1), TINY_FILTERS, precision="bfloat16")
    layers = policies(model)
    assert layers["encoder1_conv"] == layers["decoder1_bn"] == "mixed_bfloat16"
    assert layers["mask"] == layers["vocals"] == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    x = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
    assert model(x, training=False).dtype == "float32"
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        unet_model.build_unet((64, 64, 1), TINY_FILTERS, precision="float16")


def test_float32_model_is_the_same_network_and_weights_in_float32():
    mixed = unet_model.build_unet((64, 64, 1), TINY_FILTERS, precision="bfloat16")
    copy = unet_model.float32_model(mixed)
    assert set(policies(copy).values()) == {"float32"}
    for a, b in zip(mixed.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).random((2, 64, 64, 1), dtype=np.float32)
    # bfloat16 keeps 8 bits of mantissa: the two agree to about 1% of the mixture
    np.testing.assert_allclose(np.asarray(mixed(x, training=False)), np.asarray(copy(x, training=False)), atol=2e-2)
    assert unet_model.float32_model(copy) is copy


@pytest.mark.slow
def test_a_bfloat16_run_saves_float32_models_that_separate_and_resumes_in_bfloat16(tiny_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(options(tiny_cache, run, 1, "--precision", "bfloat16")) == 0
    assert "1 replica, in bfloat16\n" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert (config["precision"], config["precision_used"]) == ("bfloat16", "bfloat16")
    for name in ("best.keras", "last.keras"):
        model, params = unet_model.load_model(run / name)
        assert set(policies(model).values()) == {"float32"} and params == TINY_PARAMS
    song = (0.1 * np.random.default_rng(2).standard_normal((3 * SR, 2))).astype(np.float32)
    stems = inference.Separator(run).separate(song, SR)
    assert stems["vocals"].shape == song.shape and np.all(np.isfinite(stems["vocals"]))

    assert train.main(options(tiny_cache, run, 2, "--precision", "bfloat16")) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 1" in out and "in bfloat16" in out
    assert len(runs.read_history(run / "history.csv")["epoch"]) == 2

    assert cli.run_cli(train.main, options(tiny_cache, run, 3, "--precision", "float32")) == 2
    err = capsys.readouterr().err
    assert "precision: 'bfloat16' -> 'float32'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_auto_is_decided_when_the_run_starts_and_kept_when_it_resumes(tiny_cache, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(unet_fast, "auto_precision", lambda: ("bfloat16", "a stand-in machine"))
    assert train.main(options(tiny_cache, run, 1, "--precision", "auto")) == 0
    assert "in bfloat16 (auto: a stand-in machine)" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert (config["precision"], config["precision_used"]) == ("auto", "bfloat16")
    monkeypatch.setattr(unet_fast, "auto_precision", lambda: ("float32", "another machine"))
    assert train.main(options(tiny_cache, run, 2, "--precision", "auto")) == 0
    assert "in bfloat16 (auto, as the run started)" in capsys.readouterr().out


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_follows_the_cpu(monkeypatch, fast):
    monkeypatch.setattr(unet_fast, "bfloat16_is_fast", lambda: fast)
    precision, why = unet_fast.auto_precision()  # no GPU here (nor in CI)
    assert precision == ("bfloat16" if fast else "float32") and why


def test_a_bad_precision_is_refused_in_one_line(tiny_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(options(tiny_cache, tmp_path / "run", 1, "--precision", "half"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--precision" in err and "half" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_twin_trains_in_bfloat16_and_records_it(tiny_cache, tmp_path, capsys):
    pytest.importorskip("torch")
    from pytorch_twin import train_torch

    run = tmp_path / "twin"
    assert train_torch.main(options(tiny_cache, run, 1, "--precision", "bfloat16")) == 0
    assert "in bfloat16" in capsys.readouterr().out
    config = json.loads((run / train_torch.CONFIG_FILE).read_text())
    assert (config["precision"], config["precision_used"]) == ("bfloat16", "bfloat16")
    history = runs.read_history(run / "history.csv")
    assert history["epoch"] == [0] and np.isfinite(history["loss"][0]) and (run / "best.pt").is_file()

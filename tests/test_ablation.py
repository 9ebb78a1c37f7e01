"""Tests of issue 26's switches (pytorch_twin/alignment.py): each one, on, makes the twin do what Keras does
(Adam's update, batch norm's running variance, the batch order, no dropout); off, the twin is PyTorch's
as before. Small layers and tiny U-Nets; skipped as a whole without PyTorch."""

import argparse
import random
import re
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch not installed: `pip install torch==2.13.0` (CPU wheel) to test the PyTorch twin")

import keras  # noqa: E402

import data_generator  # noqa: E402
import train  # noqa: E402
from pytorch_twin import alignment, compare_frameworks, compare_training, train_torch, unet_torch  # noqa: E402
from separation import runs  # noqa: E402
from separation.audio import AudioParams, save_audio  # noqa: E402
from separation.cache import prepare  # noqa: E402
from separation.errors import UserError  # noqa: E402
from unet_model import build_unet  # noqa: E402

SR = 8192
PARAMS = AudioParams(n_bins=64, patch_frames=64)
FILTERS = "4,8,8,8,8,8"


# --------------------------------------------------------------------------------------------
# The options
# --------------------------------------------------------------------------------------------


def test_align_option_names_factors_folders_and_twin_options(tmp_path):
    assert alignment.factor_list("all") == alignment.FACTORS
    assert alignment.factor_list("order, adam") == ("adam", "order")  # FACTORS' order, whatever was typed
    for bad in ("adma", "", "all,adam"):
        with pytest.raises(argparse.ArgumentTypeError, match="choose from adam, batchnorm, order, dropout"):
            alignment.factor_list(bad)
    assert [t.folder for t in compare_training.trainings(())] == ["keras-tensorflow", "keras-torch", "pytorch"]
    assert [t.folder for t in compare_training.trainings(("adam", "order"))] == [
        "keras-tensorflow", "keras-torch", "pytorch-align-adam-order"]  # Keras' trainings are shared...
    assert [t.folder for t in compare_training.trainings(("batchnorm", "dropout"))] == [
        "keras-tensorflow-align-dropout", "keras-torch-align-dropout", "pytorch-align-batchnorm-dropout"]  # ...but this
    assert compare_training.table_file(("adam",)) == "comparison-align-adam.csv"
    assert compare_training.table_file(()) == compare_training.TABLE_FILE
    assert alignment.twin_options(alignment.FACTORS, tmp_path / "o.json") == [
        "--keras-adam-epsilon", "--keras-batchnorm", "--batch-order", str(tmp_path / "o.json")]
    assert alignment.twin_options(()) == []


def test_align_is_in_the_comparison_help_and_refused_when_unknown(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_frameworks.main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--align FACTORS", "issue 26", "Keras' Adam update", "biased batch variance", "--dropout 0"):
        assert words in text
    with pytest.raises(SystemExit) as exit_:
        compare_frameworks.main(["train", "--cache", "c", "--run-dir", "r", "--align", "epsilon"])
    assert exit_.value.code == 2
    assert "epsilon: choose from" in capsys.readouterr().err
    args = train_torch.get_parser().parse_args(["--cache", "c", "--run-dir", "r"])
    assert (args.keras_adam_epsilon, args.keras_batchnorm, args.batch_order) == (False, False, None)  # off by default


# --------------------------------------------------------------------------------------------
# Adam: PyTorch's update by default, Keras' with the switch
# --------------------------------------------------------------------------------------------


def adam_trajectories(gradients, keras_epsilon: bool | None):
    """One weight vector updated by Keras' Adam and by PyTorch's (``keras_epsilon``: with
    set_keras_epsilon; None: PyTorch's eps set to 1e-7) for the same gradients; both end points."""
    start = np.zeros(gradients.shape[1], dtype=np.float32)  # the steps alone, without rounding to the weights
    variable = keras.Variable(start)
    optimizer = keras.optimizers.Adam(1e-3)
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    twin = torch.optim.Adam([weight], lr=1e-3, **({"eps": 1e-7} if keras_epsilon is None else {}))
    for g in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        weight.grad = torch.from_numpy(g.copy())
        if keras_epsilon:
            train_torch.set_keras_epsilon(twin)
        twin.step()
    return keras.ops.convert_to_numpy(variable) - start, weight.detach().numpy() - start


@pytest.mark.slow
def test_keras_adam_epsilon_gives_keras_update_and_pytorch_is_the_default():
    # gradients of 1e-7..1e-5, the size where the two epsilons matter
    rng = np.random.default_rng(0)
    gradients = (rng.standard_normal((5, 64)) * np.logspace(-7, -5, 64)).astype(np.float32)
    keras_step, twin_step = adam_trajectories(gradients, keras_epsilon=True)
    np.testing.assert_allclose(twin_step, keras_step, rtol=1e-5, atol=1e-9)
    for variant in (False, None):  # PyTorch's default, and only its eps set to Keras' 1e-7: both differ
        keras_step, twin_step = adam_trajectories(gradients, keras_epsilon=variant)
        assert np.max(np.abs(twin_step - keras_step) / np.abs(keras_step)) > 0.01
    assert torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]).defaults["eps"] == 1e-8


# --------------------------------------------------------------------------------------------
# Batch norm: the running variance
# --------------------------------------------------------------------------------------------


def test_keras_batchnorm_keeps_keras_running_variance_and_pytorch_is_the_default():
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 3)).astype(np.float32) * 2 + 1  # 12 values a channel
    layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)  # as unet_model builds it
    expected = layer(np.moveaxis(x, 1, -1), training=True)
    keras_var = keras.ops.convert_to_numpy(layer.moving_variance)

    aligned, default = unet_torch.KerasBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    outputs = [bn.train()(torch.from_numpy(x)).detach().numpy() for bn in (aligned, default)]
    np.testing.assert_allclose(aligned.running_var.numpy(), keras_var, rtol=1e-5)
    np.testing.assert_allclose(default.running_var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert np.all(default.running_var.numpy() > keras_var + 1e-3)  # n/(n-1) = 12/11 of the variance
    np.testing.assert_allclose(aligned.running_mean.numpy(), default.running_mean.numpy(), rtol=1e-6)
    for out in outputs:  # training steps are unchanged: batch statistics in both
        np.testing.assert_allclose(np.moveaxis(out, 1, -1), keras.ops.convert_to_numpy(expected), atol=1e-5)
    assert int(aligned.num_batches_tracked) == 1

    model = unet_torch.UNet((2, 4), keras_batchnorm=True)
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {unet_torch.KerasBatchNorm2d}
    assert model.state_dict().keys() == unet_torch.UNet((2, 4)).state_dict().keys()
    assert {type(m) for m in unet_torch.UNet((2, 4)).modules()
            if isinstance(m, torch.nn.BatchNorm2d)} == {torch.nn.BatchNorm2d}  # the default stays PyTorch's


# --------------------------------------------------------------------------------------------
# The quick check, and the batch order against train.py itself
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_each_switch_aligns_when_on_and_not_when_off(capsys):
    """compare_frameworks.py check: with each switch on, Keras and the twin agree within the
    tolerance; off, they differ beyond it (Keras' Adam is not PyTorch's with eps=1e-7 either)."""
    assert compare_frameworks.main(["check", "--steps", "3", "--epochs", "2", "--filters", "4,8", "--bins", "16",
                                    "--frames", "8", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    factors = ["dropout", "adam", "adam, eps=1e-7 only", "batchnorm", "order", "all", "all"]
    lines = [line for line in out.splitlines() if line.split("  ")[0] in factors]
    assert [line.split("  ")[0] for line in lines] == factors
    for line in lines:
        if line.startswith("order"):
            assert re.search(r" 0 +2 +all 2 +aligned$", line), line
            continue
        off, on, tolerance = (float(x) for x in re.findall(r"\d(?:\.\d+)?e[-+]\d+", line)[-3:])
        assert tolerance == alignment.TOLERANCE and off > tolerance, line
        if line.startswith("adam, eps=1e-7 only"):
            assert on > tolerance and line.endswith("not aligned (as expected)"), line
        else:
            assert on < tolerance and line.endswith(" aligned"), line


def write_stems(root: Path, n_tracks: int = 3, seconds: float = 6.0) -> None:
    """root/train/songN/{mixture,vocals,accompaniment}.wav: a gated tone over noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n_tracks):
        vocals = 0.2 * (np.sin(2 * np.pi * 0.5 * t) > 0) * np.sin(2 * np.pi * rng.uniform(200, 500) * t)
        accompaniment = 0.05 * rng.standard_normal(t.size)
        folder = root / "train" / f"song{i}"
        folder.mkdir(parents=True)
        for name, signal in (("vocals", vocals), ("accompaniment", accompaniment), ("mixture", vocals + accompaniment)):
            save_audio(folder / f"{name}.wav", signal.astype(np.float32), SR)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    stems = tmp_path_factory.mktemp("stems")
    write_stems(stems)
    path = tmp_path_factory.mktemp("caches") / "tiny"
    prepare("stems", stems, path, split="train", params=PARAMS, progress=False)
    return path


def recipe(cache, run_dir, epochs=3, steps=5, *extra):
    return ["--cache", str(cache), "--run-dir", str(run_dir), "--epochs", str(epochs), "--steps-per-epoch", str(steps),
            "--batch-size", "2", "--filters", FILTERS, "--learning-rate", "1e-3", "--validation-split", "0.34",
            "--verbose", "0", *extra]


@pytest.fixture()
def requests(monkeypatch):
    """The training batches asked for, as ``(epoch, index)``, of any PatchSampler in this process."""
    asked = []
    get = data_generator.PatchSampler.__getitem__

    def noted(self, index):
        if self.mode == "train":
            asked.append((self.epoch, index))
        return get(self, index)

    monkeypatch.setattr(data_generator.PatchSampler, "__getitem__", noted)
    return asked


@pytest.mark.slow
def test_keras_batch_orders_replay_what_train_py_fits(cache, tmp_path, requests):
    epochs, steps, seed = 3, 5, 4
    assert train.main(recipe(cache, tmp_path / "keras", epochs, steps, "--seed", str(seed))) == 0
    fitted = [[i for e, i in requests if e == epoch] for epoch in range(1, epochs + 1)]  # epoch 0: fit's first look
    build = lambda: build_unet(input_shape=(64, 64, 1), filters=(4, 8, 8, 8, 8, 8))  # noqa: E731
    state = random.getstate()
    assert alignment.keras_batch_orders(seed, steps, epochs, build, "tensorflow") == fitted
    assert random.getstate() == state  # Python's generator is left as it was
    # on PyTorch, fit's first look takes one shuffle: the orders are the next ones
    on_torch = alignment.keras_batch_orders(seed, steps, epochs, build, "torch")
    assert on_torch[:-1] == fitted[1:] and on_torch != fitted


@pytest.mark.slow
def test_twin_visits_the_order_given_keeps_its_switches_and_refuses_bad_files(cache, tmp_path, requests):
    order_file = tmp_path / "order.json"
    orders = [[1, 0, 2], [2, 1, 0]]
    alignment.write_batch_order(order_file, orders)
    run = tmp_path / "twin"
    switches = ["--keras-adam-epsilon", "--keras-batchnorm", "--batch-order", str(order_file)]
    assert train_torch.main(recipe(cache, run, 2, 3, *switches)) == 0
    assert [i for _, i in requests] == [1, 0, 2, 2, 1, 0]
    assert [e for e, _ in requests] == [1, 1, 1, 2, 2, 2]  # the data of Keras' epochs 1 and 2
    saved = json.loads((run / train_torch.ALIGNMENT_FILE).read_text())
    assert saved == {"keras_adam_epsilon": True, "keras_batchnorm": True, "batch_order": orders}
    with pytest.raises(UserError, match="trained with other alignment switches \\(keras_batchnorm\\)"):
        train_torch.main(recipe(cache, run, 2, 3, *switches[:1], *switches[2:]))

    requests.clear()
    assert train_torch.main(recipe(cache, tmp_path / "default", 1, 3)) == 0
    assert [i for _, i in requests] == [0, 1, 2]  # the default order, as before
    assert not (tmp_path / "default" / train_torch.ALIGNMENT_FILE).exists()  # the default run's folder as before
    with pytest.raises(UserError, match="trained with other alignment switches \\(keras_adam_epsilon\\)"):
        train_torch.main(recipe(cache, tmp_path / "default", 1, 3, "--keras-adam-epsilon"))

    for content, message in (({"orders": [[0, 1, 2]]}, "lists 1 epochs, the run trains 2"),
                             ({"orders": [[0, 1, 1], [0, 1, 2]]}, "epoch 1's list is not an order of the 3 batches"),
                             ({"order": []}, "not a JSON object with \"orders\"")):
        order_file.write_text(json.dumps(content))
        with pytest.raises(UserError, match=message):
            train_torch.main(recipe(cache, tmp_path / "bad", 2, 3, "--batch-order", str(order_file)))


@pytest.mark.slow
def test_comparison_with_everything_aligned_trains_the_twin_as_keras_on_pytorch(cache, tmp_path, capfd):
    """--align all: the twin's first epoch (two steps, in Keras' order) has Keras on PyTorch's loss to
    float rounding; the folders, the order file and the table are named after the alignment."""
    run = tmp_path / "compare"
    assert compare_frameworks.main(["train", *recipe(cache, run, 1, 2), "--align", "all", "--threads", "1"]) == 0
    assert "aligned: adam, batchnorm, order, dropout" in capfd.readouterr().out
    suffix = alignment.folder_suffix(alignment.FACTORS)
    twin, keras_torch = run / ("pytorch" + suffix), run / "keras-torch-align-dropout"
    assert json.loads((twin / train_torch.ALIGNMENT_FILE).read_text())["keras_batchnorm"] is True
    assert train.TrainConfig.load(keras_torch / "config.json").dropout == 0.0
    order = json.loads((run / f"keras_batch_order{suffix}.json").read_text())["orders"]
    assert sorted(order[0]) == [0, 1]
    assert (run / f"comparison{suffix}.csv").is_file() and (run / f"loss_curves{suffix}.png").is_file()
    losses = [runs.read_history(folder / runs.HISTORY_FILE)["loss"][0] for folder in (twin, keras_torch)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

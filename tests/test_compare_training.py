"""Tests of the PyTorch twin's training loop (pytorch_twin/train_torch.py) and of the same training run three
ways (``pytorch_twin/compare_frameworks.py train``, pytorch_twin/compare_training.py): tiny real trainings on a small cache,
resuming after SIGKILL, refusals. Skipped as a whole without PyTorch."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch not installed: `pip install torch==2.13.0` (CPU wheel) to test the PyTorch twin")

from pytorch_twin import compare_frameworks  # noqa: E402
from pytorch_twin import compare_training  # noqa: E402
from pytorch_twin import convert_weights  # noqa: E402
import data_generator  # noqa: E402
import train  # noqa: E402
from pytorch_twin import train_torch  # noqa: E402
import unet_model  # noqa: E402
from helpers import ROOT, TINY_PARAMS, history, tiny_args  # noqa: E402
from separation.errors import UserError  # noqa: E402


def recipe(cache, run_dir, epochs=3, steps=4, *extra):
    """Options of train.py / pytorch_twin/train_torch.py for a tiny U-Net on the tiny cache (helpers.tiny_args)."""
    return tiny_args(cache, run_dir, epochs, steps, *extra)


def subprocess_env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------------------------
# pytorch_twin/train_torch.py
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_twin_history_model_and_conversion(tiny_cache, tmp_path, capsys):
    run = tmp_path / "twin"
    assert train_torch.main(recipe(tiny_cache, run, 2)) == 0
    assert sorted(p.name for p in run.iterdir()) == ["audio_params.json", "best.pt", "checkpoint.pt", "history.csv",
                                                     "last.pt", "loss.png", "torch_config.json"]
    header = (run / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,learning_rate,loss,val_loss"  # Keras' CSVLogger's columns
    h = history(run)
    assert h["epoch"] == [0, 1] and h["learning_rate"] == [1e-3, 1e-3]
    assert all(np.isfinite(h["loss"])) and all(np.isfinite(h["val_loss"]))

    # a rerun does nothing; another configuration is refused
    assert train_torch.main(recipe(tiny_cache, run, 2)) == 0
    assert "already trained for 2 epochs" in capsys.readouterr().out
    with pytest.raises(UserError, match="made by another configuration.*learning_rate"):
        train_torch.main(recipe(tiny_cache, run, 2, 4, "--learning-rate", "5e-4"))

    # best.pt -> .keras with pytorch_twin/convert_weights.py; the Keras model gives the twin's validation loss
    keras_file = tmp_path / "converted" / "best.keras"
    keras_file.parent.mkdir()
    assert convert_weights.main(["torch2keras", str(run / "best.pt"), str(keras_file),
                                 "--params", str(run / "audio_params.json")]) == 0
    assert "equivalent" in capsys.readouterr().out
    model, params = unet_model.load_model(keras_file)
    assert params == TINY_PARAMS
    config = train.TrainConfig.load(run / train_torch.CONFIG_FILE)
    val = data_generator.PatchSampler(tiny_cache, list(config.validation_tracks), mode="validation", batch_size=4)
    mixture, vocals = (np.concatenate(parts) for parts in zip(*(val[i] for i in range(len(val)))))
    masks = np.asarray(unet_model.mask_model(model).predict_on_batch(mixture))
    keras_loss = float(np.mean((masks * mixture - vocals) ** 2))
    assert keras_loss == pytest.approx(min(h["val_loss"]), rel=1e-4)


def test_twin_and_keras_refuse_each_others_folders(tiny_cache, tmp_path):
    twin, keras_run = tmp_path / "twin", tmp_path / "keras"
    for folder, name in ((twin, "config.json"), (keras_run, "torch_config.json")):
        folder.mkdir()
        (folder / name).write_text("{}")
    with pytest.raises(UserError, match="no torch_config.json, so it is not a run of pytorch_twin/train_torch.py"):
        train_torch.main(recipe(tiny_cache, twin))
    with pytest.raises(UserError, match="no config.json, so it is not a run of train.py"):
        train.main(recipe(tiny_cache, keras_run))
    with pytest.raises(UserError, match="--distribute and --jit-compile are Keras'"):
        train_torch.main(recipe(tiny_cache, tmp_path / "new", 1, 1, "--distribute", "mirrored"))
    from pytorch_twin import unet_torch

    other = tmp_path / "other.pt"
    torch.save(unet_torch.UNet((4, 8, 8, 8, 8, 16)).state_dict(), other)
    with pytest.raises(UserError, match="other.pt: does not fit this run's U-Net.*size mismatch"):
        train_torch.main(recipe(tiny_cache, tmp_path / "init", 1, 1, "--init-from", str(other)))


@pytest.mark.slow
def test_twin_resumes_after_sigkill_exactly_as_if_never_stopped(tiny_cache, tmp_path, capsys):
    """Killed at any moment and run again, the twin ends with the history of a run never killed:
    the resume point restores weights, Adam, the schedule, early stopping and dropout's random state."""
    epochs, steps = 4, 4
    whole = tmp_path / "whole"
    assert train_torch.main(recipe(tiny_cache, whole, epochs, steps)) == 0

    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "pytorch_twin" / "train_torch.py"), *recipe(tiny_cache, run, epochs, steps)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(history(run).get("epoch", [])) < 2:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "training too slow"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    done = torch.load(run / train_torch.CHECKPOINT_FILE, weights_only=True)["epoch"]
    assert 1 <= done < epochs

    capsys.readouterr()
    assert train_torch.main(recipe(tiny_cache, run, epochs, steps)) == 0  # the same command, in this process
    assert f"resuming after epoch {done} of {epochs}" in capsys.readouterr().out
    assert history(run) == history(whole)
    for name in (train_torch.BEST_FILE, train_torch.LAST_FILE):
        a, b = (torch.load(r / name, weights_only=True) for r in (run, whole))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# pytorch_twin/compare_frameworks.py train
# --------------------------------------------------------------------------------------------


def test_recipe_argv_gives_train_py_the_same_configuration(tiny_cache, tmp_path):
    options = recipe(tiny_cache, tmp_path / "x", 7, 3, "--remix", "--vocal-level", "-4", "6", "--vocal-fx", "reverb,eq",
                     "--no-jit-compile", "--loss", "l1", "--seed", "3", "--max-minutes", "2.5")
    config = train.TrainConfig.from_args(compare_training.get_parser().parse_args(options + ["--test", "test"]))
    argv = compare_training.recipe_argv(config, tmp_path / "y", tmp_path / "init.keras")
    again = train.TrainConfig.from_args(train.get_parser().parse_args(argv))
    assert again == train.TrainConfig.from_args(train.get_parser().parse_args(
        options + ["--init-from", str(tmp_path / "init.keras")]))
    assert argv[:2] == ["--run-dir", str(tmp_path / "y")] and "--test" not in argv
    assert "--patience" not in argv  # defaults are left to train.py


def test_comparison_refuses_other_folders_and_keras_only_options(tiny_cache, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a comparison's folder"):
        compare_frameworks.main(["train", *recipe(tiny_cache, tmp_path / "other")])
    with pytest.raises(UserError, match="Keras-only"):
        compare_frameworks.main(["train", *recipe(tiny_cache, tmp_path / "new"), "--jit-compile"])
    with pytest.raises(UserError, match="--no-refine changes how --test separates"):
        compare_frameworks.main(["train", *recipe(tiny_cache, tmp_path / "new"), "--no-refine"])
    assert not (tmp_path / "new").exists()


def row_of(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(label + " "))
    return line[len(label):].split()


@pytest.mark.slow
def test_three_frameworks_end_to_end_and_resumed_after_a_kill(tiny_comparison):
    """The command trains all three from the same weights on the same batches (without dropout the
    first batch's loss is the same function of the same weights: epoch 1's loss agrees), scores the
    test split, prints the table and draws the curves; killed during the second training, the same
    command keeps the first, resumes the second and trains the third (conftest.tiny_comparison)."""
    run, epochs, done = tiny_comparison.run, tiny_comparison.epochs, tiny_comparison.done
    assert tiny_comparison.survivors == [], "a training outlived the comparison"
    assert tiny_comparison.first_history["epoch"] == list(range(epochs))
    assert 1 <= done < epochs

    assert tiny_comparison.status == 0
    out = tiny_comparison.out
    assert f"already trained for {epochs} epochs" in out  # the first is kept...
    assert f"resuming after epoch {done} of {epochs}" in out  # ...the second resumes
    assert history(run / "keras-tensorflow") == tiny_comparison.first_history

    losses = [history(run / t.folder)["loss"][0] for t in compare_training.TRAININGS]
    assert max(losses) - min(losses) < 1e-4 * min(losses), losses
    for training in compare_training.TRAININGS:
        assert history(run / training.folder)["epoch"] == list(range(epochs))
        cells = row_of(out, training.label)
        assert int(cells[2]) == epochs
        assert all(np.isfinite(float(c)) for c in cells[:-2])  # losses, time, speed, GNSDR, GSDR
        assert cells[-2:] == ["refined", "4096"]  # separated as inference.py does by default
    assert (run / "pytorch" / "best.keras").is_file()  # the twin's model, converted for inference.py
    with open(run / compare_training.TABLE_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["training"] for r in rows] == [t.label for t in compare_training.TRAININGS]
    assert list(rows[0]) == list(compare_training.COLUMNS)
    assert (run / compare_training.CURVES_FILE).stat().st_size > 0


@pytest.mark.slow
def test_no_refine_scores_the_first_mask_into_files_of_its_own(tiny_comparison, tiny_cache):
    """``--no-refine`` (the yardstick of the three-seed table): the test songs are separated
    without the second mask, the scores differ from the refined ones, are cached apart (the
    refined cache stays), and the table's separation column says which scored it."""
    from separation.cache import open_cache

    run = tiny_comparison.run
    tracks = compare_training.find_test_tracks(open_cache(tiny_cache), "train", "test")
    refined_cache = run / "pytorch" / "test-test.json"
    before = refined_cache.read_text()
    refined = compare_training.score_trainings(run, tracks, "test")  # the fixture's scores, reused
    first = compare_training.score_trainings(run, tracks, "test", refine=False)
    for training in compare_training.TRAININGS:
        assert refined[training.folder]["separation"] == "refined 4096"
        assert first[training.folder]["separation"] == "first mask"
        assert first[training.folder]["voc GNSDR"] != pytest.approx(refined[training.folder]["voc GNSDR"], abs=1e-6)
        assert (run / training.folder / "test-test-first-mask.json").is_file()
    assert refined_cache.read_text() == before
    row = compare_training.summarize(run, 16, first)[2]
    assert row["separation"] == "first mask" and row["voc GNSDR"] == first["pytorch"]["voc GNSDR"]

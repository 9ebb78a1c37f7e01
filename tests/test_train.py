"""Tests of train.py: real (tiny) trainings on a small prepared cache, resuming after SIGKILL,
NaN and save failures, refusals of bad input, and MirroredStrategy on two CPU devices.

One run of 3 epochs (conftest.trained_run) serves every test that goes on from a trained run
(resuming, NaN losses, failed saves, damaged checkpoints, fine-tuning): each works on a copy of it.
The run folder's refusals come from the same train.main before any training."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import separation

import data_generator
import train
import unet_model
from helpers import ROOT, TINY_PARAMS, copy_of, history, resume_epoch, tiny_args, weights_of, write_songs
from separation import distributed, runs
from separation.audio import AudioParams
from separation.augment import Augmentation
from separation.cache import Cache, prepare
from separation.errors import UserError


def files_of(run: Path) -> dict:
    """Every file of a run folder and its bytes."""
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Real training
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_decreases_loss_and_fills_the_run_dir(trained_run, tiny_cache, tmp_path, capsys):
    # a time limit stopped the first session after the first epoch; the same command without it trained on
    first, second = trained_run.outputs
    assert "stopped at the time limit after epoch 1" in first
    assert "resuming after epoch 1 of 3" in second
    run = trained_run.run
    h = history(run)
    assert h["epoch"] == [0, 1, 2]
    assert h["loss"][-1] < 0.8 * h["loss"][0], h["loss"]
    assert h["val_loss"][-1] < h["val_loss"][0], h["val_loss"]
    assert h["learning_rate"][0] == pytest.approx(1e-3)

    config = json.loads((run / "config.json").read_text())
    assert config["filters"] == [4, 8] and config["loss"] == "mse" and config["seed"] == 0
    assert sorted(config["train_tracks"] + config["validation_tracks"]) == [f"song{i}" for i in range(4)]
    assert len(config["validation_tracks"]) == 1
    assert AudioParams.load(run / "audio_params.json") == TINY_PARAMS
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if (run / "logs").exists():  # TensorBoard is optional (see train.make_callbacks)
        assert list((run / "logs").rglob("events.out.tfevents.*"))

    # best.keras is the epoch of lowest validation loss, loadable with its parameters (inside the files too)
    model, params = unet_model.load_model(run / "best.keras")
    assert params == TINY_PARAMS
    assert unet_model.saved_params(run / "best.keras") == unet_model.saved_params(run / "last.keras") == TINY_PARAMS
    x, _ = data_generator.DataGenerator(tiny_cache, batch_size=2, mode="validation")[0]
    assert np.isfinite(model.predict(x, verbose=0)).all()
    best_epoch = int(np.argmin(h["val_loss"]))
    state = json.loads((run / "backup" / "state.json").read_text())
    assert state["epoch"] == 3 and state["finished"] == "completed"
    assert state["callbacks"]["best_checkpoint"]["best"] == pytest.approx(h["val_loss"][best_epoch])
    # the last two epochs' resume points are kept
    assert sorted(p.name for p in (run / "backup").glob("*.h5")) == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]

    # the same command again does nothing; a larger --epochs continues from epoch 3
    run = copy_of(run, tmp_path / "run")
    last = (run / "last.keras").read_bytes()
    assert train.main(tiny_args(tiny_cache, run, 3, 10)) == 0
    assert "already trained for 3 epochs" in capsys.readouterr().out
    assert (run / "last.keras").read_bytes() == last
    assert train.main(tiny_args(tiny_cache, run, 4, 10)) == 0
    assert "resuming after epoch 3 of 4" in capsys.readouterr().out
    h2 = history(run)
    assert h2["epoch"] == [0, 1, 2, 3]
    assert h2["loss"][:3] == h["loss"]


@pytest.mark.slow
def test_seed_fixes_initial_weights_and_data_order(tiny_cache, tmp_path):
    folders = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, run in folders.items():
        seed = "1" if name == "c" else "0"
        assert train.main(tiny_args(tiny_cache, run, 1, 3, "--seed", seed, "--validation-split", "0")) == 0
    a, b, c = (history(run)["loss"][0] for run in folders.values())
    assert a == pytest.approx(b, rel=1e-5)
    assert a != pytest.approx(c, rel=1e-3)
    for wa, wb in zip(weights_of(folders["a"] / "last.keras"), weights_of(folders["b"] / "last.keras")):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(trained_run, tiny_cache, tmp_path):
    # the run's cache, whose arrays turn NaN after three good epochs (a damaged file, say)
    bad = copy_of(tiny_cache, tmp_path / "cache")
    run = copy_of(trained_run.run, tmp_path / "run")
    saved = {name: (run / name).read_bytes() for name in ("best.keras", "last.keras")}
    for path in (bad / "tracks").glob("*.mixture.npy"):
        np.save(path, np.full_like(np.load(path), np.nan))

    with pytest.raises(UserError, match="NaN or infinite in epoch 4; the checkpoints keep epoch 3"):
        train.main(tiny_args(bad, run, 5, 10))
    for name, content in saved.items():
        assert (run / name).read_bytes() == content, name
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 3
    assert all(np.isfinite(w).all() for w in weights_of(run / "last.keras"))
    assert np.isnan(history(run)["loss"][3])  # the failed epoch is on record


@pytest.mark.slow
def test_failed_save_keeps_the_previous_checkpoint(trained_run, tiny_cache, tmp_path, monkeypatch):
    import keras

    real_save = keras.Model.save
    calls = []

    def fail(self, filepath, *args, **kwargs):
        calls.append(filepath)
        Path(filepath).write_bytes(b"half a zip")  # the disk fills up halfway through
        raise OSError(28, "No space left on device")

    run = copy_of(trained_run.run, tmp_path / "run")
    saved = {name: (run / name).read_bytes() for name in ("best.keras", "last.keras")}
    monkeypatch.setattr(keras.Model, "save", fail)  # epoch 4's checkpoint fails
    with pytest.raises(UserError, match="cannot save the checkpoint .*No space left.*the previous one is intact"):
        train.main(tiny_args(tiny_cache, run, 4, 10))
    monkeypatch.setattr(keras.Model, "save", real_save)
    assert calls and all(Path(p).name.startswith(".") for p in calls)  # it wrote to a temporary file
    assert not list(run.glob(".*part*"))  # which is gone
    for name, content in saved.items():  # epoch 3's checkpoints, as they were
        assert (run / name).read_bytes() == content, name
        assert all(np.isfinite(w).all() for w in weights_of(run / name))
    assert history(run)["epoch"] == [0, 1, 2]
    # and the same command resumes after epoch 3
    assert train.main(tiny_args(tiny_cache, run, 4, 10)) == 0
    assert history(run)["epoch"] == [0, 1, 2, 3]


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import train
sys.exit(train.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes_under_mirrored_strategy(tiny_cache, tmp_path):
    """train.py with --distribute mirrored on two logical CPU devices (two replicas), killed
    (SIGKILL) during its third epoch; the same command, on two replicas again, resumes it."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", MIRRORED, str(ROOT), *tiny_args(tiny_cache, run, 4, 30, "--distribute", "mirrored")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    log = tmp_path / "first.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while resume_epoch(run) < 2:  # two epochs saved...
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "training too slow"
            time.sleep(0.05)
        time.sleep(0.2)  # ...and part of the third
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert "2 replicas" in log.read_text()
    state = json.loads((run / "backup" / "state.json").read_text())
    done = state["epoch"]
    assert 2 <= done < 4 and state["finished"] is None
    before = {k: v[:done] for k, v in history(run).items()}

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert f"resuming after epoch {done} of 4" in rerun.stdout and "2 replicas" in rerun.stdout
    after = history(run)
    assert after["epoch"] == [0, 1, 2, 3]  # each epoch once: a half-written row was dropped
    assert {k: v[:done] for k, v in after.items()} == before  # the history before the kill is kept
    assert np.isfinite(after["loss"]).all() and np.isfinite(after["val_loss"]).all()
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 4
    assert all(np.isfinite(w).all() for w in weights_of(run / "last.keras"))
    assert sorted(p.name for p in (run / "backup").iterdir()) == ["epoch-0003.weights.h5", "epoch-0004.weights.h5",
                                                                  "state.json"]


# ---------------------------------------------------------------------------------------------
# Refusals (no training)
# ---------------------------------------------------------------------------------------------


def test_missing_or_invalid_cache_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such folder.*data_generator.py prepare"):
        train.main(tiny_args(tmp_path / "nothing", tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a prepared cache"):
        train.main(tiny_args(tmp_path / "empty", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def config_of(argv: list[str], **changes) -> train.TrainConfig:
    """The TrainConfig of a command line, its track lists filled in as train.py fills them (tiny_songs')."""
    config = train.TrainConfig.from_args(train.get_parser().parse_args(argv))
    return dataclasses.replace(config, train_tracks=("song0", "song1", "song2"), validation_tracks=("song3",),
                               **changes)


def test_run_dir_of_another_configuration_or_cache_is_refused(tmp_path):
    """The run folder's preparation (separation.runs.prepare_run_dir, which train.main calls before
    it trains) refuses a run made with one setting changed, or on a cache of other audio parameters."""
    run = tmp_path / "run"
    config = config_of(tiny_args(tmp_path / "cache", run, 3, 10))
    assert runs.prepare_run_dir(run, config, TINY_PARAMS) is None  # a new run
    files = files_of(run)
    assert sorted(p.name for p in files) == ["audio_params.json", "config.json"]
    with pytest.raises(UserError, match="made by another configuration .*learning_rate: 0.001 -> 0.01"):
        runs.prepare_run_dir(run, config_of(tiny_args(tmp_path / "cache", run, 3, 10, "--learning-rate", "1e-2")),
                             TINY_PARAMS)
    with pytest.raises(UserError, match=r"another configuration \(loss: 'mse' -> 'l1'\)"):
        runs.prepare_run_dir(run, config_of(tiny_args(tmp_path / "cache", run, 3, 10, "--loss", "l1")), TINY_PARAMS)
    # a cache of the same tracks made with other audio parameters
    with pytest.raises(UserError, match="other audio parameters .*patch_frames: 64 vs 128"):
        runs.prepare_run_dir(run, config, AudioParams(n_bins=64, patch_frames=128))
    assert files_of(run) == files  # nothing overwritten
    # the same command, or one that only trains longer elsewhere, is the same run
    longer = config_of(tiny_args(tmp_path / "moved", run, 5, 10))
    assert runs.prepare_run_dir(run, longer, TINY_PARAMS) is None
    assert json.loads((run / "config.json").read_text())["epochs"] == 5


def test_a_folder_that_is_not_a_run_is_refused(tiny_cache, tmp_path):
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="not empty and has no config.json"):
        train.main(tiny_args(tiny_cache, stranger))
    assert [p.name for p in stranger.iterdir()] == ["cat.jpg"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--filters", "4,x"], "--filters: '4,x': give comma-separated integers"),
        (["--batch-size", "0"], r"--batch-size: 0 is out of range: must be in \[1, inf\]"),
        (["--learning-rate", "nan"], "--learning-rate: 'nan' is not a finite number"),
        (["--learning-rate", "0"], r"--learning-rate: 0 is out of range: must be in \(0, inf\]"),
        (["--validation-split", "1"], r"--validation-split: 1 is out of range: must be in \[0, 1\)"),
        (["--max-minutes", "0"], r"--max-minutes: 0 is out of range"),
        (["--pitch", "13"], r"--pitch: 13 is out of range: must be in \[0, 12.0\]"),
        (["--pitch", "nan"], r"--pitch: 'nan' is not a finite number"),
        (["--tempo", "1"], r"--tempo: 1 is out of range: must be in \[0, 1\)"),
        (["--tempo", "-0.1"], r"--tempo: -0.1 is out of range"),
    ],
)
def test_options_out_of_range_are_refused_by_argparse(tiny_cache, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_args(tiny_cache, tmp_path / "run", 3, 8, *extra))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--filters", "4,4,4,4,4,4,4"], "7 layers need patches divisible by 128, the cache's are 64 x 64"),
        (["--split", "test"], "--split test: the cache has no such tracks \\(its splits: train\\)"),
        (["--validation-from", "test"], "--validation-from test: the cache has no such tracks"),
    ],
)
def test_options_that_do_not_fit_the_cache_are_refused_before_training(tiny_cache, tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 3, 8, *extra))
    assert not (tmp_path / "run").exists()


def test_pitch_and_tempo_reach_the_config_and_the_training_generator(tiny_cache, tmp_path, monkeypatch):
    """--pitch/--tempo are saved in config.json and given to the training DataGenerator only
    (stopped there, with stand-ins for Keras and DataGenerator, so nothing trains)."""
    calls = []

    class Stop(Exception):
        pass

    def generator(tiny_cache, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(data_generator, "DataGenerator", generator, raising=False)
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(
        utils=types.SimpleNamespace(set_random_seed=lambda seed: None)))
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train.main(tiny_args(tiny_cache, run, 1, 1, "--pitch", "2", "--tempo", "0.25", "--remix"))
    assert calls[0]["mode"] == "train" and calls[0]["augmentation"] == Augmentation(pitch=2.0, tempo=0.25, remix=True)
    config = json.loads((run / "config.json").read_text())
    assert (config["pitch"], config["tempo"]) == (2.0, 0.25)
    with pytest.raises(UserError, match="another configuration .*pitch: 2.0 -> 1.0"):
        train.main(tiny_args(tiny_cache, run, 1, 1, "--pitch", "1", "--tempo", "0.25", "--remix"))


#: Settings added by issues 18 and 25 (off: None), absent from the config.json of older runs.
MIXING_KEYS = ("instrumental_share", "vocal_level", "vocal_fx", "accompaniment_from", "init_from", "voice_share",
               "vocal_fx_on")
#: A config.json as train.py wrote it before the settings became a dataclass and before
#: --pitch/--tempo existed (a run of the shipped model's kind).
OLD_CONFIG = {
    "cache": "/data/cache/mir1k", "split": "train", "train_tracks": ["abjones_1", "amy_2"],
    "validation_tracks": ["annar_1"], "validation_split": 0.1, "validation_from": "validation",
    "filters": [16, 32, 64, 128, 256, 512], "kernel_size": 5, "dropout": 0.5, "loss": "mse", "learning_rate": 0.0001,
    "batch_size": 16, "steps_per_epoch": 40, "validation_steps": None, "patience": 10, "lr_patience": 4,
    "remix": True, "gain": True, "input_dropout": 0.0, "seed": 0, "epochs": 100, "max_minutes": 52.0,
    "jit_compile": None, "distribute": "none", "workers": 2, "verbose": 2,
}


def test_a_run_made_before_the_config_dataclass_and_pitch_tempo_resumes(tmp_path):
    """An old-style config.json (no pitch/tempo keys: trained without them) resumes with the same
    options, also with other runtime settings (epochs, cache path, workers); turning an
    augmentation on is refused like any other change, and nothing is overwritten."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(OLD_CONFIG))
    TINY_PARAMS.save(run / "audio_params.json")
    old = train.TrainConfig.load(run / "config.json")
    assert (old.pitch, old.tempo, old.filters, old.train_tracks) == (0.0, 0.0, (16, 32, 64, 128, 256, 512),
                                                                    ("abjones_1", "amy_2"))
    with pytest.raises(UserError, match=r"another configuration \(tempo: 0.0 -> 0.1\)"):
        runs.prepare_run_dir(run, dataclasses.replace(old, tempo=0.1), TINY_PARAMS)
    assert json.loads((run / "config.json").read_text()) == OLD_CONFIG
    resumed = dataclasses.replace(old, epochs=200, cache="/elsewhere/cache", workers=1)
    assert runs.prepare_run_dir(run, resumed, TINY_PARAMS) is None
    assert json.loads((run / "config.json").read_text()) == dict(OLD_CONFIG, epochs=200, cache="/elsewhere/cache",
                                                                 workers=1, pitch=0.0, tempo=0.0, short_tracks="pad", precision="float32",
                                                                 precision_used="float32",
                                                                 **dict.fromkeys(MIXING_KEYS))


def test_every_config_field_but_the_track_lists_is_an_option():
    """One declaration per setting: the parser is made from TrainConfig's fields."""
    options = {a.dest for a in train.get_parser()._actions} - {"help", "run_dir"}
    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    assert options == fields - {"train_tracks", "validation_tracks", "precision_used"}
    args = train.get_parser().parse_args(["--cache", "c", "--run-dir", "r", "--filters", "8,16", "--remix"])
    config = train.TrainConfig.from_args(args)
    assert config.filters == (8, 16) and config.remix and config.epochs == 100 and Path(config.cache).is_absolute()


def test_cli_prints_one_line_errors(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--cache", str(tmp_path / "no"),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --cache") and proc.stderr.count("\n") == 1


def test_validation_split_holds_out_whole_tracks(tiny_cache):
    c = Cache(tiny_cache)
    tr, va = train.split_tracks(c, "train", 0.5, seed=0)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == c.names("train")
    assert train.split_tracks(c, "train", 0.5, seed=0) == (tr, va)
    assert {tuple(train.split_tracks(c, "train", 0.5, seed=s)[1]) for s in range(8)} != {tuple(va)}
    assert train.split_tracks(c, "train", 0.01, seed=0)[1]  # at least one validation track
    assert train.split_tracks(c, "train", 0.0, seed=0) == (c.names("train"), [])
    with pytest.raises(UserError, match="--validation-from validation: the cache has no such tracks"):
        train.split_tracks(c, "train", 0.1, seed=0, validation_from="validation")


def test_validation_from_another_split(tmp_path):
    """A cache holding two splits (as MIR-1K's train and validation): --validation-from uses the second."""
    write_songs(tmp_path / "stems", n_tracks=2, seconds=3.0)
    write_songs(tmp_path / "stems", n_tracks=1, seconds=3.0, seed=1, split="validation", prefix="other")
    path = tmp_path / "cache"
    for split in ("train", "validation"):
        prepare("stems", tmp_path / "stems", path, split=split, params=TINY_PARAMS, progress=False)
    c = Cache(path)
    assert train.split_tracks(c, "train", 0.5, 0, validation_from="validation") == (["song0", "song1"], ["other0"])
    with pytest.raises(UserError, match="the same split as --split"):
        train.split_tracks(c, "train", 0.5, 0, validation_from="train")


def test_damaged_resume_point_is_refused(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    assert runs.read_state(backup) is None
    (backup / "state.json").write_text(json.dumps({"epoch": 3, "weights": "epoch-0003.weights.h5"}))
    with pytest.raises(UserError, match="damaged resume point .*epoch-0003.weights.h5 is missing"):
        runs.read_state(backup)
    (backup / "state.json").write_text("{")
    with pytest.raises(UserError, match="damaged resume point"):
        runs.read_state(backup)


def write_weights(path, value: float) -> None:
    """A stand-in for a Keras weights file: an HDF5 file with one array."""
    import h5py

    with h5py.File(path, "w") as f:
        f["layers/w"] = np.full((64, 64), value, "float32")


def test_a_damaged_resume_checkpoint_falls_back_to_the_previous_one_or_is_named(tmp_path, capsys):
    backup = tmp_path / "backup"
    backup.mkdir()
    previous = {"epoch": 4, "weights": "epoch-0004.weights.h5", "callbacks": {}, "finished": None}
    (backup / "state.json").write_text(json.dumps(dict(previous, epoch=5, weights="epoch-0005.weights.h5",
                                                       previous=previous)))
    write_weights(backup / "epoch-0004.weights.h5", 4)
    write_weights(backup / "epoch-0005.weights.h5", 5)
    assert runs.read_state(backup)["epoch"] == 5
    latest = backup / "epoch-0005.weights.h5"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated by a failing copy
    state = runs.read_state(backup)
    assert (state["epoch"], state["weights"], state["previous"]) == (4, "epoch-0004.weights.h5", None)
    assert "epoch-0005.weights.h5 is damaged" in capsys.readouterr().out
    for damaged in (b"", b"\x89HDF\r\n"):  # both damaged: refused, naming the file and how to restart
        (backup / "epoch-0004.weights.h5").write_bytes(damaged)
        with pytest.raises(UserError, match=rf"{backup / 'state.json'}: damaged resume point \(epoch-0005.weights.h5 "
                                            rf"is damaged .*\); delete {backup} to train this run again"):
            runs.read_state(backup)


@pytest.mark.slow
def test_a_damaged_last_resume_checkpoint_resumes_from_the_one_before(trained_run, tiny_cache, tmp_path, capsys):
    run = copy_of(trained_run.run, tmp_path / "run")
    backup = run / "backup"
    latest = backup / "epoch-0003.weights.h5"
    latest.write_bytes(latest.read_bytes()[:4096])
    capsys.readouterr()
    assert train.main(tiny_args(tiny_cache, run, 4, 10)) == 0
    out = capsys.readouterr().out
    assert "epoch-0003.weights.h5 is damaged" in out and "resuming after epoch 2 of 4" in out
    assert history(run)["epoch"] == [0, 1, 2, 3]
    assert sorted(p.name for p in backup.glob("*.h5")) == ["epoch-0003.weights.h5", "epoch-0004.weights.h5"]
    assert all(np.isfinite(w).all() for w in weights_of(run / "last.keras"))


def test_only_the_chief_writes_the_run_dir(tmp_path):
    class Resolver:  # what MultiWorkerMirroredStrategy.cluster_resolver reports from TF_CONFIG
        def __init__(self, task_type, task_id, cluster):
            self.task_type, self.task_id, self.cluster = task_type, task_id, cluster

        def cluster_spec(self):
            return type("Spec", (), {"as_dict": lambda _: self.cluster})()

    def strategy(*args):
        return type("Strategy", (), {"cluster_resolver": Resolver(*args)})()

    run = tmp_path / "run"
    workers = {"worker": ["a:1", "b:1"]}
    assert distributed.worker_run_dir(run, None) == run
    assert distributed.worker_run_dir(run, strategy("worker", 0, workers)) == run
    assert distributed.worker_run_dir(run, strategy("worker", 1, workers)) == tmp_path / "run.worker1"
    with_chief = dict(workers, chief=["c:1"])
    assert distributed.worker_run_dir(run, strategy("chief", 0, with_chief)) == run
    assert distributed.worker_run_dir(run, strategy("worker", 0, with_chief)) == tmp_path / "run.worker0"


# ---------------------------------------------------------------------------------------------
# Mixing options and --init-from (fine-tuning)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def stand_in_production(monkeypatch):
    """A stand-in production.py: one effect, "double", that doubles the voice."""
    module = types.SimpleNamespace(EFFECTS=("double",), produce=lambda vocals, sr, rng, effects: 2 * vocals)
    monkeypatch.setitem(sys.modules, "separation.production", module)
    monkeypatch.setattr(separation, "production", module, raising=False)
    return module


@pytest.mark.slow
def test_mixing_options_train_and_reach_the_config(tiny_cache, tmp_path, stand_in_production, capsys):
    run = tmp_path / "run"
    options = ["--instrumental-share", "0.25", "--vocal-level", "-4", "6", "--vocal-fx", "all", "--accompaniment-from", "stems"]
    assert train.main(tiny_args(tiny_cache, run, 1, 2, *options)) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["instrumental_share"], config["vocal_level"], config["vocal_fx"]) == (0.25, [-4.0, 6.0], ["double"])
    assert config["accompaniment_from"] == "stems"
    assert np.isfinite(history(run)["loss"]).all()
    with pytest.raises(UserError, match=r"another configuration \(vocal_level: \[-4.0, 6.0\] -> \[0.0, 6.0\]\)"):
        train.main(tiny_args(tiny_cache, run, 2, 2, *options[:3], "0", "6", *options[5:]))


@pytest.mark.parametrize("extra, message", [
    (["--instrumental-share", "1.5"], r"--instrumental-share: 1.5 is out of range: must be in \[0, 1\]"),
    (["--instrumental-share", "-0.1"], r"--instrumental-share: -0.1 is out of range"),
    (["--vocal-level", "0", "nan"], "--vocal-level: 'nan' is not a finite number"),
    (["--vocal-fx", "double,reverb"], r"--vocal-fx: 'double,reverb': unknown effect\(s\) reverb; choose from double or 'all'"),
    (["--vocal-fx", ","], r"unknown effect\(s\) \(none given\)"),
])
def test_mixing_options_out_of_range_are_refused_by_argparse(tiny_cache, tmp_path, stand_in_production, capsys, extra,
                                                              message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, *extra))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--vocal-level", "6", "-4"], "--vocal-level 6 -4: give LO HI in dB with LO <= HI"),
    (["--vocal-level", "0", "6", "--gain"], "--vocal-level sets the vocal-to-accompaniment level; drop --gain"),
    (["--vocal-fx", "double", "--pitch", "2"], "--pitch/--tempo act on magnitudes"),
    (["--accompaniment-from", "instrumental"], "--accompaniment-from instrumental: no training track of that dataset "
                                               r"\(the training tracks are stems\)"),
])
def test_bad_mixing_options_are_refused(tiny_cache, tmp_path, stand_in_production, extra, message):
    with pytest.raises(UserError, match=message):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, *extra))
    assert not (tmp_path / "run").exists()


#: The config.json that train.py wrote on branch i18-data, before the restructure (issue 14), for a
#: fine-tuning run with every mixing option (the options of runs/ft-r2-fx; track lists shortened).
MIXING_CONFIG = dict(
    OLD_CONFIG, cache="/work/main/cache/ft-produced", loss="l1", batch_size=16, steps_per_epoch=100, patience=20,
    lr_patience=8, remix=False, gain=False, pitch=0.0, tempo=0.0, instrumental_share=0.1, vocal_level=[-4.0, 6.0],
    vocal_fx=["highpass", "eq", "compressor", "reverb", "doubling", "saturation"], accompaniment_from=None,
    init_from="/work/main/pretrained/unet_mir1k.keras", epochs=12, max_minutes=None, workers=1,
)
MIXING_ARGS = ["--cache", "/work/main/cache/ft-produced", "--validation-from", "validation", "--init-from",
               "/work/main/pretrained/unet_mir1k.keras", "--batch-size", "16", "--steps-per-epoch", "100",
               "--epochs", "12", "--loss", "l1", "--learning-rate", "1e-4", "--lr-patience", "8", "--patience", "20",
               "--seed", "0", "--verbose", "2", "--instrumental-share", "0.1", "--vocal-level", "-4", "6",
               "--vocal-fx", "highpass,eq,compressor,reverb,doubling,saturation"]


def test_a_run_made_before_the_restructure_with_the_mixing_options_resumes(tmp_path):
    """A config.json with the mixing keys as train.py wrote them before TrainConfig (lists for
    vocal_level and vocal_fx, None for options off) is what the same command line makes now: the
    run resumes; changing an option is refused and leaves the file as it was."""
    from separation import production

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(MIXING_CONFIG))
    TINY_PARAMS.save(run / "audio_params.json")
    args = train.get_parser().parse_args(["--run-dir", str(run), *MIXING_ARGS])
    assert set(args.vocal_fx) <= set(production.EFFECTS)
    config = dataclasses.replace(train.TrainConfig.from_args(args), train_tracks=tuple(OLD_CONFIG["train_tracks"]),
                                 validation_tracks=tuple(OLD_CONFIG["validation_tracks"]))
    old = train.TrainConfig.load(run / "config.json")
    assert (old.vocal_level, old.vocal_fx[:2], old.init_from) == ((-4.0, 6.0), ("highpass", "eq"), MIXING_CONFIG["init_from"])
    assert config.differences(old) == []
    with pytest.raises(UserError, match=r"another configuration \(vocal_level: \[-4.0, 6.0\] -> \[0.0, 6.0\]\)"):
        runs.prepare_run_dir(run, dataclasses.replace(config, vocal_level=(0.0, 6.0)), TINY_PARAMS)
    assert json.loads((run / "config.json").read_text()) == MIXING_CONFIG
    assert runs.prepare_run_dir(run, config, TINY_PARAMS) is None
    assert json.loads((run / "config.json").read_text()) == dict(MIXING_CONFIG, short_tracks="pad", precision="float32",
                                                                         precision_used="float32", voice_share=None,
                                                                         vocal_fx_on=None)

    # a run made before the mixing options existed had them off
    (run / "config.json").write_text(json.dumps(OLD_CONFIG))
    older = train.TrainConfig.load(run / "config.json")
    assert [getattr(older, key) for key in MIXING_KEYS] == [None] * len(MIXING_KEYS)
    with pytest.raises(UserError, match=r"another configuration \(init_from: None -> 'm.keras'\)"):
        runs.prepare_run_dir(run, dataclasses.replace(older, init_from="m.keras"), TINY_PARAMS)


@pytest.mark.slow
def test_init_from_starts_from_the_model_and_resume_keeps_the_checkpoint(trained_run, tiny_cache, tmp_path, capsys):
    trained = copy_of(trained_run.run, tmp_path / "trained")  # its best.keras moves away below
    run = tmp_path / "tuned"
    capsys.readouterr()
    # a learning rate so small that the first epoch leaves the starting weights as they were
    assert train.main(tiny_args(tiny_cache, run, 1, 2, "--init-from", str(trained), "--learning-rate", "1e-12")) == 0
    assert f"starting from the weights of {trained}" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["init_from"] == str(trained)
    source, tuned = unet_model.load_model(trained / "best.keras")[0], unet_model.load_model(run / "last.keras")[0]
    for layer in source.layers:
        if layer.name.endswith(("_conv", "_deconv")):
            np.testing.assert_allclose(tuned.get_layer(layer.name).get_weights()[0], layer.get_weights()[0], atol=1e-6)
    scratch = tmp_path / "scratch"  # the same run without --init-from starts elsewhere
    assert train.main(tiny_args(tiny_cache, scratch, 1, 2, "--learning-rate", "1e-12")) == 0
    assert not np.allclose(weights_of(scratch / "last.keras")[0], source.get_layer("encoder1_conv").get_weights()[0], atol=1e-6)
    # resuming: the checkpoint wins, the model is not even read again
    (trained / "best.keras").rename(trained / "moved.keras")
    assert train.main(tiny_args(tiny_cache, run, 2, 2, "--init-from", str(trained), "--learning-rate", "1e-12")) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 1 of 2" in out and "starting from the weights" not in out


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory) -> Path:
    """A two-level U-Net (--filters 4,8 --kernel-size 5) for TINY_PARAMS patches, saved with them: a model
    to start from."""
    model = unet_model.build_unet((TINY_PARAMS.n_bins, TINY_PARAMS.patch_frames, 1), (4, 8))
    path = tmp_path_factory.mktemp("init") / "model.keras"
    unet_model.save_model(model, path, TINY_PARAMS)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--filters", "4,16"], r"another architecture \(--filters 4,8 --kernel-size 5; here "
                            r"--filters 4,16 --kernel-size 5\): train with those"),
    (["--kernel-size", "3"], r"another architecture \(--filters 4,8 --kernel-size 5; here .* --kernel-size 3\)"),
])
def test_init_from_another_architecture_is_refused(tiny_cache, tiny_unet, tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, "--init-from", str(tiny_unet), *extra))
    assert not (tmp_path / "run").exists()


def test_init_from_other_audio_parameters_or_no_model_is_refused(tiny_cache, tiny_model_dir, tmp_path):
    """A run folder holding a model for the default 512 x 128 patches, and a missing file."""
    with pytest.raises(UserError, match=r"--init-from .*best.keras was made with other audio parameters "
                                        r"\(patch_frames: 128 vs 64, n_bins: 512 vs 64\)"):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, "--init-from", str(tiny_model_dir)))
    with pytest.raises(UserError, match="no such model file or folder"):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, "--init-from", str(tmp_path / "nothing.keras")))
    assert not (tmp_path / "run").exists()


def test_vocal_fx_names_come_from_production_py(tiny_cache, tmp_path, capsys):
    from separation import production

    with pytest.raises(SystemExit):
        train.main(tiny_args(tiny_cache, tmp_path / "run", 1, 1, "--vocal-fx", "reverb,nosuch"))
    assert f"unknown effect(s) nosuch; choose from {', '.join(production.EFFECTS)} or 'all'" in capsys.readouterr().err
    args = train.get_parser().parse_args(tiny_args(tiny_cache, tmp_path / "run", 1, 1, "--vocal-fx", "all"))
    assert args.vocal_fx == tuple(production.EFFECTS)

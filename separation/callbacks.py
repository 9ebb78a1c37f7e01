"""The training callbacks of train.py: checkpoints and a resume point that survive a kill.

Plain ``keras.callbacks.Callback`` subclasses using Keras' public hooks only. Every file is
written to a temporary file and renamed into place (``files.atomic_output``), so a run killed at
any moment keeps the previous version of each file; an epoch whose loss is NaN or infinite is
never saved. This module defines Keras classes, so it imports Keras at the top; train.py
imports it inside the function that builds its callbacks. The run folder's files and reading the
resume point back are separation/runs.py's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras

from separation.cli import first_line
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model to ``path`` after each epoch, or with ``best_only`` only when ``monitor``
    (a loss: lower is better) beats :attr:`best`; through a temporary file and a rename.

    ``save(model, path)`` writes the file (default ``model.save``); train.py passes
    ``unet_model.save_model`` with the audio parameters, so that the file carries them too.
    """

    def __init__(self, path, monitor: str = "val_loss", best_only: bool = False, save=None):
        super().__init__()
        self.path, self.monitor, self.best_only = Path(path), monitor, best_only
        self.save = save
        self.best = math.inf  # the best value saved so far (restored on resume by AtomicBackup)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not finite_logs(logs):
            return
        if self.best_only:
            current = logs.get(self.monitor)
            if current is None or not float(current) < self.best:
                return
            self.best = float(current)
        try:
            with atomic_output(self.path) as tmp:
                if self.save is None:
                    self.model.save(tmp)
                else:
                    self.save(self.model, tmp)
        except OSError as err:
            raise UserError(f"{self.path}: cannot save the checkpoint ({err}); the previous one is intact") from None


class LossPlot(keras.callbacks.Callback):
    """Call ``plot()`` after each epoch: train.py redraws loss.png from history.csv (after the
    CSVLogger, earlier in the list, wrote the epoch's row)."""

    def __init__(self, plot):
        super().__init__()
        self.plot = plot

    def on_epoch_end(self, epoch, logs=None):
        self.plot()


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that ends ``seconds`` after training began."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self.start > self.seconds:
            self.model.stop_training = True


class AtomicBackup(keras.callbacks.Callback):
    """The resume point of a run: weights, optimizer and callback state after each epoch.

    After epoch N the weights and optimizer state go to a new file ``epoch-000N.weights.h5``
    beside ``state_path`` (through a temporary file), then ``state_path`` (the run folder's
    ``backup/state.json``) is renamed into place naming that file, the epoch and the state of
    the stateful callbacks (``stateful``: name -> (callback, attribute names), e.g. the best
    values and patience counters of EarlyStopping and ReduceLROnPlateau), and only then the
    weights files older than the previous epoch's are deleted: a kill at any moment leaves a complete resume point, and the previous one is kept
    under ``"previous"`` for when the last weights file is damaged later (runs.read_state
    falls back to it). ``state`` is the resume point read before training
    (runs.read_state), restored when training begins (its weights from ``state["folder"]``
    when given: the chief's, for the other workers of a multi-worker run);
    ``model.fit(initial_epoch=...)`` starts after its epoch. Put this callback last, so that it
    saves the others' state after their end-of-epoch updates and restores it after their
    start-of-training resets. An epoch with a non-finite loss is not saved and stops training
    (:attr:`diverged`).
    """

    def __init__(self, state_path, stateful: dict, state: dict | None = None):
        super().__init__()
        self.state_path = Path(state_path)
        self.folder = self.state_path.parent
        self.stateful = stateful
        self.state = state
        self.epoch = state["epoch"] if state else 0  # completed epochs saved in the backup
        self.diverged = None  # the epoch whose loss became NaN or infinite, if any
        # the resume points written to state.json: the latest and the one before it
        self.latest = resume_point(state)
        self.previous = resume_point(state.get("previous")) if state else None

    def on_train_begin(self, logs=None):
        if self.state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # so that its state can load
        weights = Path(self.state.get("folder", self.folder)) / self.state["weights"]
        try:
            self.model.load_weights(weights)
        except Exception as err:  # h5py and Keras raise several types for a damaged or foreign file
            raise UserError(f"{weights}: damaged resume checkpoint ({type(err).__name__}: {first_line(err)}); "
                            f"delete {weights.parent} to train this run again from epoch 0, or give a new "
                            "--run-dir") from None
        for name, (callback, _) in self.stateful.items():
            for attr, value in self.state["callbacks"].get(name, {}).items():
                setattr(callback, attr, value)

    def on_epoch_end(self, epoch, logs=None):
        if not finite_logs(logs):
            self.diverged = epoch
            self.model.stop_training = True
            return
        self.epoch = epoch + 1
        self._write_state(save_weights=True)

    def mark_finished(self, reason: str):
        """Record why training ended, so that a rerun of the same command does nothing."""
        if self.epoch:
            self._write_state(save_weights=False, finished=reason)

    def _write_state(self, save_weights: bool, finished: str | None = None):
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{self.epoch:04d}.weights.h5"
        if save_weights:
            with atomic_output(self.folder / weights, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
            if self.latest is not None and self.latest["weights"] != weights:
                self.previous = self.latest
        callbacks = {name: {attr: _jsonable(getattr(callback, attr)) for attr in attrs}
                     for name, (callback, attrs) in self.stateful.items()}
        self.latest = {"epoch": self.epoch, "weights": weights, "callbacks": callbacks, "finished": finished}
        atomic_write_text(self.state_path, json.dumps(dict(self.latest, previous=self.previous), indent=2) + "\n")
        kept = {weights, self.previous["weights"] if self.previous else None}
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name not in kept:
                old.unlink(missing_ok=True)


def resume_point(state: dict | None) -> dict | None:
    """One resume point of state.json (its epoch, weights file, callback state and why it
    finished), without the one before it, nor where runs.read_state found it."""
    if state is None:
        return None
    return {key: state.get(key) for key in ("epoch", "weights", "callbacks", "finished")}


def finite_logs(logs) -> bool:
    """False when any number in the epoch's logs (loss, val_loss) is NaN or infinite."""
    return all(math.isfinite(float(v)) for v in (logs or {}).values()
               if isinstance(v, (int, float)) or getattr(v, "shape", None) == ())


def _jsonable(value):
    """A callback attribute as JSON: None, ints, or floats (inf survives as Infinity)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)

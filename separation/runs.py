"""The run folder of a training run: its files, the check that a rerun is the same run, the
history and its plot, and the resume point.

train.py and pytorch_twin/train_torch.py write their runs here. Every file is written to a
temporary file and renamed into place (``files.atomic_output``), so a run killed at any moment
keeps the previous version of each file; running the same command again resumes after the last
completed epoch (train.py's module docstring lists the files).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from separation.audio import PARAMS_FILE, AudioParams
from separation.cli import first_line
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text, lock_folder

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"


def prepare_run_dir(run_dir: Path, config, params: AudioParams, config_file: str = CONFIG_FILE,
                    script: str = "train.py") -> dict | None:
    """Create the run folder, or check that an existing one was made by the same configuration.

    ``config`` is the run's settings object (train.py's ``TrainConfig``: ``to_dict``, the class
    method ``load`` and ``differences``); it is written to ``config_file``. Returns the saved
    training state (``backup/state.json``, :func:`read_state`) of an earlier run, or None when
    training starts from scratch. Refuses (UserError) a folder of another configuration, other
    audio parameters or not made by ``script``, so nothing is ever overwritten.
    pytorch_twin/train_torch.py passes its own ``config_file`` and ``script`` name, so neither
    script takes the other's folder.
    """
    config_path = run_dir / config_file
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: is a file; give a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not config_path.is_file():
        raise UserError(f"--run-dir {run_dir}: not empty and has no {config_file}, so it is not a run of "
                        f"{script}; give a new folder")
    if config_path.is_file():
        diffs = config.differences(type(config).load(config_path))
        if diffs:
            shown = "; ".join(d if len(d) < 160 else d[:157] + "..." for d in diffs)
            raise UserError(f"--run-dir {run_dir}: made by another configuration ({shown}); "
                            "give a new --run-dir or the original options")
        AudioParams.load(run_dir / PARAMS_FILE).check_same(
            params, f"--run-dir {run_dir}", "use the cache this run was trained on or a new --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--run-dir {run_dir}: cannot create ({err.strerror})") from None
    lock_folder(run_dir, "two runs in one folder would mix their history.csv and checkpoints; wait for it "
                         "to finish or give another --run-dir")
    _remove_partial_files(run_dir)
    params.save(run_dir / PARAMS_FILE)
    atomic_write_text(config_path, json.dumps(config.to_dict(), indent=2) + "\n")
    return read_state(run_dir / BACKUP_DIR)


def resume_epoch(run_dir: Path, state: dict | None, epochs: int, best_file: str = BEST_FILE) -> int | None:
    """The number of epochs already trained, from which training continues; None (with a line
    saying why) when there is nothing left to do: the run stopped early, or it has ``epochs``.

    ``state`` is the resume point (:func:`read_state`, or pytorch_twin/train_torch.py's
    checkpoint: ``epoch`` and ``finished``), None for a new run. History rows after the resume
    point are dropped (:func:`truncate_history`).
    """
    if state is not None and state.get("finished") == "early stopping":
        print(f"{run_dir}: stopped early after epoch {state['epoch']}; nothing to do (best model: "
              f"{run_dir / best_file})")
        return None
    if state is not None and state["epoch"] >= epochs:
        print(f"{run_dir}: already trained for {state['epoch']} epochs; raise --epochs to train further")
        return None
    done = state["epoch"] if state else 0
    truncate_history(run_dir / HISTORY_FILE, done)
    if done:
        print(f"{run_dir}: resuming after epoch {done} of {epochs}")
    return done


def _remove_partial_files(run_dir: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (files.atomic_output's names)."""
    for folder in (run_dir, run_dir / BACKUP_DIR):
        for path in folder.glob(".*.part*"):
            path.unlink(missing_ok=True)


def truncate_history(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs of history.csv at ``path``.

    Rows written after the resume point (a kill between the CSV row and the backup) are
    trained again, so they go; a file with no row left is deleted.
    """
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        path.unlink()
        return
    col = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[col].isdigit() and int(r[col]) < epochs]
    if len(kept) == 1:
        path.unlink()
        return
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def read_history(path) -> dict[str, list[float]]:
    """The columns of a run's history.csv as lists of floats (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [_float(r[key]) for r in rows] for key in (rows[0] if rows else {})}


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):  # CSVLogger writes "NA" for a value missing from an epoch's logs
        return math.nan


def plot_history(history_path, png_path) -> None:
    """Draw the loss curves (and the learning rate) of ``history.csv`` into a PNG (Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = read_history(history_path)
    if not history.get("epoch"):
        return
    epochs = [e + 1 for e in history["epoch"]]
    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if any(math.isfinite(v) for v in history.get(key, [])):
            ax.plot(epochs, history[key], marker=".", label=label)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    if "learning_rate" in history:
        ax_lr.plot(epochs, history["learning_rate"], color="tab:gray")
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def read_state(backup_dir) -> dict | None:
    """The resume point saved in ``backup_dir/state.json`` (see callbacks.AtomicBackup), or None.

    Its weights file is read through first; when it is damaged (a truncated copy), the resume
    point of the epoch before, kept beside it, is taken instead with a note; when that one is
    missing or damaged too, a UserError names the file and how to start again. The state has
    ``folder`` added: where its weights are.
    """
    folder = Path(backup_dir)
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        problem = _weights_problem(folder / state["weights"])
        previous = state.get("previous")
        if problem is None:
            return dict(state, folder=str(folder))
        if previous and _weights_problem(folder / previous["weights"]) is None:
            print(f"note: {folder / state['weights']}: {problem}; resuming from epoch {previous['epoch']}, "
                  "the checkpoint before it")
            return dict(previous, previous=None, folder=str(folder))
        raise ValueError(problem)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: damaged resume point ({err}); delete {folder} to train this run again from "
                        "epoch 0, or give a new --run-dir") from None


def _weights_problem(path: Path) -> str | None:
    """Why the weights file ``path`` cannot be resumed from ("... is missing", "... is damaged
    (...)"), or None when every array in it reads back."""
    import h5py

    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except Exception as err:  # h5py raises OSError, KeyError or RuntimeError for damaged files
        return f"{path.name} is damaged ({type(err).__name__}: {first_line(err)})"
    return None

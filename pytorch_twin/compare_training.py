"""The same training three ways: Keras on TensorFlow, Keras on PyTorch, and the PyTorch twin.

    python pytorch_twin/compare_frameworks.py train --cache cache/builtin --run-dir runs/compare-builtin \\
        --epochs 10 --steps-per-epoch 40 --batch-size 16 --learning-rate 1e-3 --test test

(``pytorch_twin/compare_frameworks.py train`` runs :func:`main`.) Every option of ``train.py`` is accepted and
given to all three trainings, which run one after the other, each in its own process:

* ``train.py`` with ``KERAS_BACKEND=tensorflow`` into ``RUN_DIR/keras-tensorflow``;
* ``train.py`` with ``KERAS_BACKEND=torch`` into ``RUN_DIR/keras-torch`` (the same script);
* ``pytorch_twin/train_torch.py``, the plain PyTorch loop of the twin, into ``RUN_DIR/pytorch``.

All three start from the same weights: ``RUN_DIR/init.keras`` (a U-Net built with ``--seed``
as train.py builds it, or a copy of ``--init-from``) given to the Keras runs as ``--init-from``,
and its exact conversion ``RUN_DIR/init.pt`` to the twin. They draw the same training batches
(``data_generator.PatchSampler``, a function of seed, epoch and index) and validate on the same
patches. What remains different is the frameworks': Adam's epsilon, batch norm's running
variance, dropout's random numbers, float arithmetic (see pytorch_twin/train_torch.py).

Killed at any moment, the same command resumes: finished trainings are not run again, the
interrupted one resumes after its last completed epoch (each trainer's own resume).

Printed at the end, and written to ``RUN_DIR/comparison.csv``: per training the final and the
best validation loss, the epochs trained, the wall time and training patches per second of
wall time (timed by this command from each process's start to each epoch's history row, so
start-up, validation and checkpoints count; ``RUN_DIR/timing.json``); with ``--test SPLIT``
the vocal GNSDR and GSDR (BSS Eval v3, length-weighted means) of each best model on that split
of the dataset the cache's training split was prepared from (the twin's model converted to
``best.keras`` by pytorch_twin/convert_weights.py). ``RUN_DIR/loss_curves.png`` shows the three trainings'
loss curves.

Several seeds, each comparison in its own folder, are gathered into one table by::

    python pytorch_twin/compare_frameworks.py seeds runs/frameworks-mir1k-seed0 runs/frameworks-mir1k-seed1 runs/frameworks-mir1k-seed2

(:func:`seeds_main`): each framework's best validation loss and vocal GNSDR per seed, their mean
and spread between seeds, and the difference of each pair of frameworks, paired by seed.

``--align FACTOR[,FACTOR...]`` (issue 26; ``pytorch_twin/alignment.py``) makes one or more of the
differences above Keras' in the twin (``adam``, ``batchnorm``, ``order``) or removes it from all
three (``dropout``: ``--dropout 0``); ``all`` does all four. The aligned trainings get folders of
their own in the same ``RUN_DIR`` (``pytorch-align-adam``, ``keras-torch-align-dropout``...) and
their table ``comparison-align-adam.csv``, so the comparisons of one seed share its initial
weights and its Keras trainings: those are trained once, and again only without dropout.
``seeds --align FACTORS`` gathers those tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from separation import metrics, runs
from separation.audio import PARAMS_FILE
from separation.cli import ArgumentParser, bounded
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent  # the repository: train.py there, the twin's script here


@dataclasses.dataclass(frozen=True)
class Training:
    """One of the three trainings: its sub-folder, label, script and Keras backend (None: no Keras)."""

    folder: str
    label: str
    script: str
    backend: str | None

    @property
    def model_file(self) -> str:
        """The best model's file in its folder (the twin's is a PyTorch state_dict)."""
        return "best.pt" if self.backend is None else "best.keras"




def trainings(factors=()) -> tuple[Training, ...]:
    """The three trainings, their folders named after the aligned ``factors`` that change them
    (``pytorch_twin/alignment.py``): the twin's after all of them, Keras' after ``dropout`` only."""
    from pytorch_twin.alignment import folder_suffix

    keras_suffix = folder_suffix([f for f in factors if f == "dropout"])
    return (
        Training("keras-tensorflow" + keras_suffix, "Keras/TensorFlow", "train.py", "tensorflow"),
        Training("keras-torch" + keras_suffix, "Keras/PyTorch", "train.py", "torch"),
        Training("pytorch" + folder_suffix(factors), "PyTorch twin", "pytorch_twin/train_torch.py", None),
    )


TRAININGS = trainings()  # the comparison without alignment
INIT_FILE = "init.keras"
INIT_TORCH_FILE = "init.pt"
TIMING_FILE = "timing.json"
TABLE_FILE = "comparison.csv"  # comparison-align-adam.csv with --align adam: see table_file
CURVES_FILE = "loss_curves.png"
COLUMNS = ("training", "final val loss", "best val loss", "epochs", "wall s", "patches/s", "voc GNSDR", "voc GSDR",
           "separation")
POLL_SECONDS = 0.5
#: ``python -c DIE_WITH_PARENT PARENT_PID SCRIPT ARGS...`` (Linux): asks the kernel to kill this process when
#: its parent dies, even by SIGKILL, then becomes ``python SCRIPT ARGS...``; so a killed comparison never
#: leaves a training running into the folder that its rerun resumes.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, kept across exec
if os.getppid() != int(sys.argv[1]):
    sys.exit("the comparison ended before its training started")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def get_parser():
    import train

    parser = train.get_parser()  # the recipe options, declared once in train.TrainConfig
    parser.prog = "pytorch_twin/compare_frameworks.py train"
    parser.description = ("Train the same recipe with Keras on TensorFlow, Keras on PyTorch and the PyTorch twin "
                          "from the same initial weights, and compare them (see pytorch_twin/compare_training.py). "
                          "Running the same command again resumes.")
    group = parser.add_argument_group("comparison")
    group.add_argument("--test", metavar="SPLIT",
                       help="separate and score this split of the dataset the cache's training split came from")
    group.add_argument("--limit", type=bounded(int, 1), help="with --test: only the first N tracks")
    group.add_argument("--no-refine", action="store_true",
                       help="with --test: separate with the first mask only (inference.py --no-refine), the "
                            "yardstick of docs/pytorch.md's three-seed table (made before the second mask); the "
                            "table's 'separation' column says which scored it")
    group.add_argument("--threads", type=bounded(int, 1),
                       help="CPU threads of each training (default: each framework's own choice)")
    group.add_argument("--align", metavar="FACTORS", type=factor_list, default=(),
                       help="issue 26's ablation: align these differences between the twin and Keras, comma-separated "
                            "(default none: the twin is the coursework's PyTorch): adam (the twin uses Keras' Adam "
                            "update, epsilon 1e-7 before v's bias correction), batchnorm (the twin's running variance "
                            "from the biased batch variance, as Keras'), order (the twin visits each epoch's batches in "
                            "the order Keras' fit on the PyTorch backend does), dropout (--dropout 0 in all three: "
                            "masks cannot be shared), or all. The aligned trainings get folders of their own in "
                            "RUN_DIR (Keras' are shared unless dropout is aligned); quick check first: "
                            "'pytorch_twin/compare_frameworks.py check'")
    return parser


def factor_list(text: str) -> tuple[str, ...]:
    from pytorch_twin.alignment import factor_list

    return factor_list(text)


def table_file(factors=()) -> str:
    """``comparison.csv``, or ``comparison-align-adam.csv`` for the comparison with ``factors`` aligned."""
    from pytorch_twin.alignment import folder_suffix

    return TABLE_FILE.replace(".csv", folder_suffix(factors) + ".csv")


def curves_file(factors=()) -> str:
    """``loss_curves.png``, or ``loss_curves-align-adam.png``: as :func:`table_file`."""
    from pytorch_twin.alignment import folder_suffix

    return CURVES_FILE.replace(".png", folder_suffix(factors) + ".png")


def main(argv=None) -> int:
    import train
    from separation.cache import open_cache

    args = get_parser().parse_args(argv)
    config = train.TrainConfig.from_args(args)
    if config.distribute != "none" or config.jit_compile:
        raise UserError("--distribute and --jit-compile are Keras-only; the comparison trains on one device, "
                        "without XLA")
    if args.no_refine and not args.test:
        raise UserError("--no-refine changes how --test separates the test songs; give --test SPLIT too")
    if "dropout" in args.align and config.dropout not in (0.0, train.TrainConfig.dropout):
        raise UserError(f"--align dropout trains without dropout; it cannot go with --dropout {config.dropout}")
    if "dropout" in args.align:
        config = dataclasses.replace(config, dropout=0.0)
    cache = open_cache(args.cache)
    train_tracks, _ = train.split_tracks(cache, config.split, config.validation_split, config.seed,
                                         config.validation_from)
    test = find_test_tracks(cache, config.split, args.test, args.limit) if args.test else None
    run_dir = Path(args.run_dir)
    prepare_folder(run_dir)
    make_initial_weights(run_dir, config, cache.params)
    align = twin_alignment(run_dir, config, cache, train_tracks, args.align)
    three = trainings(args.align)
    for training in three:
        argv = recipe_argv(config, run_dir / training.folder,
                           run_dir / (INIT_TORCH_FILE if training.backend is None else INIT_FILE))
        run_training(run_dir, training, argv + (align if training.backend is None else []), args.threads)

    scores = score_trainings(run_dir, test, args.test, three, refine=not args.no_refine) if test else {}
    rows = summarize(run_dir, patches_per_epoch(cache, train_tracks, config), scores, three)
    aligned = f"; aligned: {', '.join(args.align)}" if args.align else ""
    print(f"\nThe same recipe in three frameworks ({run_dir}; {len(train_tracks)} training tracks{aligned})")
    print_table(rows)
    table, curves = run_dir / table_file(args.align), run_dir / curves_file(args.align)
    write_table(table, rows)
    plot_curves(run_dir, curves, three)
    print(f"wrote {table} and {curves}")
    return 0


# --------------------------------------------------------------------------------------------
# The three trainings
# --------------------------------------------------------------------------------------------


def prepare_folder(run_dir: Path) -> None:
    """Create ``run_dir``, or check that it is a comparison's folder (UserError if not)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: is a file; give a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / INIT_FILE).is_file():
        raise UserError(f"--run-dir {run_dir}: not empty and has no {INIT_FILE}, so it is not a comparison's "
                        "folder; give a new one")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--run-dir {run_dir}: cannot create ({err.strerror})") from None


def make_initial_weights(run_dir: Path, config, params) -> None:
    """Write ``init.keras`` (with audio_params.json) and its PyTorch twin ``init.pt``, once.

    The weights are those of ``--init-from`` when given, else of a U-Net built as train.py
    builds it (``keras.utils.set_random_seed(seed)`` then ``build_unet``).
    """
    import keras
    import torch

    from pytorch_twin import convert_weights
    import train
    from unet_model import build_unet

    if not (run_dir / INIT_FILE).is_file():
        keras.utils.set_random_seed(config.seed)
        model = build_unet(input_shape=(params.n_bins, params.patch_frames, 1), filters=config.filters,
                           kernel_size=config.kernel_size, dropout=config.dropout)
        if config.init_from is not None:
            model.set_weights(train.load_init_weights(config.init_from, params, config.filters, config.kernel_size))
        params.save(run_dir / PARAMS_FILE)
        with atomic_output(run_dir / INIT_FILE) as tmp:
            model.save(tmp)
    if not (run_dir / INIT_TORCH_FILE).is_file():
        model = keras.saving.load_model(run_dir / INIT_FILE, compile=False)
        state = {k: torch.from_numpy(v) for k, v in convert_weights.keras_to_state_dict(model).items()}
        with atomic_output(run_dir / INIT_TORCH_FILE) as tmp:
            torch.save(state, tmp)


def twin_alignment(run_dir: Path, config, cache, train_tracks: list[str], factors) -> list[str]:
    """The twin's options for the aligned ``factors``; with ``order``, Keras' batch order (that of
    Keras on PyTorch) is written to ``RUN_DIR/keras_batch_order-....json`` for it to read."""
    from pytorch_twin import alignment

    order_file = None
    if "order" in factors:
        from unet_model import build_unet

        batches = patches_per_epoch(cache, train_tracks, config) // config.batch_size
        params = cache.params
        orders = alignment.keras_batch_orders(  # the model train.py builds: its layers draw seeds first
            config.seed, batches, config.epochs,
            lambda: build_unet(input_shape=(params.n_bins, params.patch_frames, 1), filters=config.filters,
                               kernel_size=config.kernel_size, dropout=config.dropout))
        order_file = run_dir / alignment.ORDER_FILE.replace(".json", alignment.folder_suffix(factors) + ".json")
        alignment.write_batch_order(order_file, orders, f"the order of each epoch's batches in train.py with "
                                    f"KERAS_BACKEND={alignment.ORDER_BACKEND}, seed {config.seed}")
    return alignment.twin_options(factors, order_file)


def recipe_argv(config, run_dir: Path, init_from: Path) -> list[str]:
    """The command line of train.py (and pytorch_twin/train_torch.py) for ``config``, into ``run_dir`` from ``init_from``."""
    import train

    argv = ["--run-dir", str(run_dir)]
    for field in dataclasses.fields(train.TrainConfig):
        if "argparse" not in field.metadata:  # filled in by train.py
            continue
        value = str(init_from) if field.name == "init_from" else getattr(config, field.name)
        flag = "--" + field.name.replace("_", "-")
        if value is None or (value == field.default and field.name != "cache"):  # train.py's default
            continue
        if isinstance(value, bool):  # store_true, or BooleanOptionalAction (--jit-compile / --no-jit-compile)
            argv.append(flag if value else "--no-" + flag[2:])
        elif field.name in ("filters", "vocal_fx"):
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def run_training(run_dir: Path, training: Training, argv: list[str], threads: int | None = None) -> None:
    """Run one training to its end in a process of its own; time its epochs into timing.json.

    The process's output goes to this one's. Each epoch's time runs from the process's start,
    or the previous epoch's row, to the moment its row appears in history.csv. A training
    that fails raises UserError (its own message is above); the same command resumes it.
    """
    env = dict(os.environ)
    if training.backend is not None:
        env["KERAS_BACKEND"] = training.backend
    if threads:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                                    "TF_NUM_INTEROP_THREADS")})
    command = [sys.executable, str(ROOT / training.script), *argv]
    if sys.platform.startswith("linux"):
        command = [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *command[1:]]
    print(f"\n== {training.label}: {'KERAS_BACKEND=' + training.backend + ' ' if training.backend else ''}"
          f"{shlex.join(['python', training.script, *argv])}", flush=True)
    history = run_dir / training.folder / runs.HISTORY_FILE
    timing = read_timing(run_dir)
    mine = timing.setdefault(training.folder, {})
    seen = set(_epochs(history))
    last = time.monotonic()
    process = subprocess.Popen(command, env=env)
    try:
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            now, current = time.monotonic(), set(_epochs(history))
            new = sorted(current - seen)
            for epoch in new:  # rows that appeared since the last look share the time
                mine[str(epoch)] = (now - last) / len(new)
            if new:
                last = now
                atomic_write_text(run_dir / TIMING_FILE, json.dumps(timing, indent=1) + "\n")
            seen = current
            if finished:
                break
    finally:
        if process.poll() is None:  # interrupted here (Ctrl-C): stop the training too
            process.kill()
            process.wait()
    if process.returncode:
        raise UserError(f"{training.label}: {training.script} stopped with exit status {process.returncode} "
                        "(its message is above); fix that and run the same command again: what is done is kept")


def _epochs(history: Path) -> list[int]:
    return [int(e) for e in runs.read_history(history).get("epoch", []) if math.isfinite(e)]


def read_timing(run_dir: Path) -> dict:
    """``{training folder: {epoch: seconds}}`` from timing.json (empty when absent or unreadable)."""
    try:
        timing = json.loads((run_dir / TIMING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return timing if isinstance(timing, dict) else {}


def patches_per_epoch(cache, train_tracks: list[str], config) -> int:
    """How many patches one training epoch draws (train.py's default steps when none are given)."""
    from data_generator import PatchSampler

    sampler = PatchSampler(cache, train_tracks, batch_size=config.batch_size, steps_per_epoch=config.steps_per_epoch)
    return len(sampler) * config.batch_size


# --------------------------------------------------------------------------------------------
# Test scores
# --------------------------------------------------------------------------------------------


def find_test_tracks(cache, train_split: str, split: str, limit: int | None = None) -> list:
    """The tracks of ``split`` of the dataset the cache's ``train_split`` was prepared from
    (datasets.Track objects); UserError when the cache does not say which one, or it has none."""
    from separation import datasets
    from separation.cache import INDEX_FILE

    runs = json.loads((cache.path / INDEX_FILE).read_text()).get("runs", [])
    sources = {(r["dataset"], r["root"], r.get("unit", "track")) for r in runs
               if r.get("split") in (train_split, None) and r["dataset"] != "instrumental"}
    if len(sources) != 1:
        found = ", ".join(f"{d} at {root}" for d, root, _ in sorted(sources)) or "none recorded"
        raise UserError(f"--test {split}: the cache's {train_split!r} split must come from one dataset (found: "
                        f"{found}); evaluate each model with inference.py and evaluate.py instead")
    dataset, root, unit = sources.pop()
    tracks = datasets.find_tracks(dataset, root, split, unit)[:limit]
    if not tracks:
        raise UserError(f"--test {split}: no tracks in that split of {dataset} at {root}")
    return tracks


def separation_name(refine: bool = True) -> str:
    """How the test songs are separated: "refined 4096" (inference.py's default, the second mask's
    window) or "first mask" (``--no-refine``)."""
    import inference

    return f"refined {inference.DEFAULT_REFINE}" if refine else "first mask"


def score_trainings(run_dir: Path, tracks: list, split: str, three=TRAININGS,
                    refine: bool = True) -> dict[str, dict[str, float]]:
    """``{training folder: {"voc GNSDR", "voc GSDR", "separation"}}``: each best model separates
    (with inference.py's second mask, or without it: ``refine``) and BSS Eval v3 scores ``tracks``;
    per-track rows are kept in ``<folder>/test-<split>.json`` (``test-<split>-first-mask.json``)
    and reused while the model, the tracks and the separation are unchanged."""

    separation = separation_name(refine)
    scores = {}
    for training in three:
        folder = run_dir / training.folder
        model_path = folder / training.model_file
        if not model_path.is_file():
            raise UserError(f"{model_path}: missing; run the same command again to train it")
        key = {"model_mtime": model_path.stat().st_mtime, "tracks": [t.name for t in tracks],
               "separation": separation}
        saved = folder / (f"test-{split}.json" if refine else f"test-{split}-first-mask.json")
        try:
            stored = json.loads(saved.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("key") == key:
            rows = stored["rows"]
        else:
            print(f"separating and scoring {len(tracks)} {split} track(s) with the {training.label} model", flush=True)
            rows = score_model(keras_model(folder, training), tracks, training.folder, refine)
            atomic_write_text(saved, json.dumps({"key": key, "rows": rows}, indent=1) + "\n")
        summary = {s["metric"]: s["weighted"] for s in metrics.summarize(rows, ["v3_vocals_NSDR", "v3_vocals_SDR"])}
        scores[training.folder] = {"voc GNSDR": summary["v3_vocals_NSDR"], "voc GSDR": summary["v3_vocals_SDR"],
                                   "separation": separation}
    return scores


def keras_model(folder: Path, training: Training) -> Path:
    """The ``.keras`` file of a training's best model; the twin's best.pt is converted (exactly)."""
    if training.backend is not None:
        return folder / training.model_file
    from pytorch_twin import convert_weights

    source, target = folder / training.model_file, folder / "best.keras"
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        from separation.audio import AudioParams

        params = AudioParams.load(folder / PARAMS_FILE)
        model = convert_weights.torch_to_keras(convert_weights.load_torch_checkpoint(source),
                                               (params.n_bins, params.patch_frames, 1), name=str(source))
        with atomic_output(target) as tmp:
            model.save(tmp)
    return target


def score_model(model_path: Path, tracks: list, method: str, refine: bool = True) -> list[dict]:
    """evaluate.py's per-track rows (BSS Eval v3) of one model on ``tracks``, separated by
    inference.py's defaults (``refine`` False: without the second mask)."""
    import inference

    separator = inference.Separator(model_path, refine=inference.DEFAULT_REFINE if refine else None)
    settings = metrics.Settings(families=("v3",))
    rows = []
    for track in tracks:
        references, sr = track.load()
        estimates = separator.separate(references["mixture"], sr)
        scores = metrics.score_methods(references, {method: estimates}, sr, settings)[method]
        rows.append({"track": track.name, "method": method, **scores})
    return rows


# --------------------------------------------------------------------------------------------
# Table and curves
# --------------------------------------------------------------------------------------------


def summarize(run_dir: Path, patches: int, scores: dict | None = None, three=TRAININGS) -> list[dict]:
    """One row per training (the keys of :data:`COLUMNS`), from its history.csv and timing.json."""
    timing, rows = read_timing(run_dir), []
    for training in three:
        history = runs.read_history(run_dir / training.folder / runs.HISTORY_FILE)
        epochs = [int(e) for e in history.get("epoch", [])]
        val = [v for v in history.get("val_loss", []) if math.isfinite(v)]
        seconds = [timing.get(training.folder, {}).get(str(e)) for e in epochs]
        timed = [s for s in seconds if s is not None]
        rows.append({
            "training": training.label,
            "final val loss": history["val_loss"][-1] if val else math.nan,
            "best val loss": min(val) if val else math.nan,
            "epochs": len(epochs),
            "wall s": sum(timed) if timed else math.nan,
            "patches/s": len(timed) * patches / sum(timed) if timed and sum(timed) > 0 else math.nan,
            **(scores or {}).get(training.folder, {"voc GNSDR": math.nan, "voc GSDR": math.nan, "separation": ""}),
        })
    return rows


def print_table(rows: list[dict]) -> None:

    def shown(column, value):
        if column in ("final val loss", "best val loss"):
            return f"{value:.4g}"
        if column in ("wall s", "patches/s") and math.isfinite(value):
            return f"{value:.1f}"
        return value

    print(metrics.format_table(list(COLUMNS), [[shown(c, row[c]) for c in COLUMNS] for row in rows]))


def write_table(path: Path, rows: list[dict]) -> None:
    """The table as CSV, atomically (:func:`write_csv`)."""
    write_csv(path, COLUMNS, [[row.get(c, "") for c in COLUMNS] for row in rows])


def write_csv(path, header, rows) -> None:
    """``rows`` under ``header`` as CSV, atomically; floats to 6 significant digits (losses differ
    in the fourth)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([f"{v:.6g}" if isinstance(v, float) else v for v in row] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def draw_curves(ax, run_dir: Path, three=TRAININGS) -> None:
    """The three trainings' validation (solid) and training (dashed) losses on one matplotlib axes."""
    for i, training in enumerate(three):
        history = runs.read_history(Path(run_dir) / training.folder / runs.HISTORY_FILE)
        epochs = [e + 1 for e in history.get("epoch", [])]
        color = f"C{i}"
        if any(math.isfinite(v) for v in history.get("val_loss", [])):
            ax.plot(epochs, history["val_loss"], color=color, marker=".", label=f"{training.label} validation")
        if history.get("loss"):
            ax.plot(epochs, history["loss"], color=color, linestyle="--", label=f"{training.label} training")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def plot_curves(run_dir: Path, png_path: Path, three=TRAININGS) -> None:
    """:func:`draw_curves` into a PNG (Agg, written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    draw_curves(fig.subplots(), run_dir, three)
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# --------------------------------------------------------------------------------------------
# Several seeds: is the difference between frameworks larger than the spread between seeds?
# --------------------------------------------------------------------------------------------

SEED_METRICS = ("best val loss", "voc GNSDR")


def seeds_parser():
    parser = ArgumentParser(
        prog="pytorch_twin/compare_frameworks.py seeds",
        description="Gather several seeds' comparisons (each made by 'pytorch_twin/compare_frameworks.py train --seed N') into "
                    "one table: each framework's result per seed, the spread between seeds, and the difference "
                    "between each pair of frameworks, paired by seed (same initial weights, same batches).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="comparison folders, one per seed")
    parser.add_argument("--out", type=Path, help="also write the tables as CSV to this file")
    parser.add_argument("--align", metavar="FACTORS", type=factor_list, default=(),
                        help="gather the comparisons made with this --align (issue 26), e.g. adam or all")
    return parser


def read_comparison(run_dir: Path, factors=()) -> dict[str, dict[str, float]]:
    """``{training label: {column: value}}`` from ``run_dir/comparison.csv`` (that of the comparison
    with ``factors`` aligned); UserError if it is missing, unreadable or lacks a framework."""
    import csv

    path = Path(run_dir) / table_file(factors)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        aligned = f" --align {','.join(factors)}" if factors else ""
        raise UserError(f"{path}: cannot read ({err.strerror}); run 'pytorch_twin/compare_frameworks.py train{aligned}' "
                        f"into {run_dir} first") from None
    table = {}
    for row in rows:
        try:
            table[row["training"]] = {c: float(row[c]) for c in SEED_METRICS}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: not a comparison table (columns {', '.join(COLUMNS)})") from None
        table[row["training"]]["separation"] = row.get("separation") or ""  # absent before --no-refine existed
    missing = [t.label for t in TRAININGS if t.label not in table]
    if missing:
        raise UserError(f"{path}: no row for {', '.join(missing)}; run the same 'pytorch_twin/compare_frameworks.py train' "
                        "command again to finish it")
    return table


def same_separation(tables: list[dict], names: list) -> str:
    """The separation that scored every table's test songs ("" when none was scored); UserError
    when tables scored with and without the second mask would be compared."""
    found = {}
    for table, name in zip(tables, names):
        for row in table.values():
            if row["separation"]:
                found.setdefault(row["separation"], str(name))
    if len(found) > 1:
        raise UserError("the tables' test scores come from different separations ("
                        + "; ".join(f"{s} in {name}" for s, name in found.items())
                        + "): score them alike, with or without 'train ... --no-refine'")
    return next(iter(found), "")


def run_label(run_dir: Path, index: int, factors=()) -> str:
    """"seed N" from the comparison's Keras/TensorFlow config.json, else "run <index + 1>"."""
    try:
        return f"seed {json.loads((run_dir / trainings(factors)[0].folder / 'config.json').read_text())['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"run {index + 1}"


def seed_tables(tables: list[dict]) -> list[dict]:
    """Rows for :func:`seeds_main`, from one :func:`read_comparison` result per seed.

    Per metric: one row per framework (its value per seed, mean, and standard deviation over
    seeds, ``ddof=1``), then one row per pair of frameworks: their difference seed by seed, its
    mean and its standard deviation. The seeds pair the runs: the same seed gives the three
    frameworks the same initial weights and the same batches, so a difference that keeps its
    sign and size from seed to seed (a small sd of the difference) is the frameworks', even where
    each framework's own spread between seeds is larger.
    """
    def row(metric, what, values):
        values = np.array(values)
        return {"metric": metric, "what": what, "values": values, "mean": values.mean(),
                "sd": values.std(ddof=1) if len(values) > 1 else math.nan}

    rows = []
    for metric in SEED_METRICS:
        rows += [row(metric, t.label, [table[t.label][metric] for table in tables]) for t in TRAININGS]
        for i, first in enumerate(TRAININGS):
            for second in TRAININGS[i + 1:]:
                rows.append(row(metric, f"{second.label} - {first.label}",
                                [table[second.label][metric] - table[first.label][metric] for table in tables]))
    return rows


def seeds_main(argv=None) -> int:

    args = seeds_parser().parse_args(argv)
    tables = [read_comparison(Path(d), args.align) for d in args.run_dirs]
    separation = same_separation(tables, args.run_dirs)
    rows = seed_tables(tables)
    n = len(tables)
    header = ["", *(run_label(Path(d), i, args.align) for i, d in enumerate(args.run_dirs)), "mean", "sd"]

    def shown(metric, value):  # losses in thousandths: their differences are in the fourth digit
        return f"{value * 1e3:.4f}" if metric == "best val loss" else f"{value:.2f}"

    print(f"{n} runs: " + ", ".join(map(str, args.run_dirs))
          + (f"; test songs' separation: {separation}" if separation else ""))
    for metric in SEED_METRICS:
        name = metric + (" (x1e-3)" if metric == "best val loss" else "")
        print(f"\n{name}: each framework, then the difference of each pair run by run")
        print(metrics.format_table([name, *header[1:]], [
            [r["what"], *(shown(metric, v) for v in r["values"]), shown(metric, r["mean"]),
             shown(metric, r["sd"]) if math.isfinite(r["sd"]) else "-"]
            for r in rows if r["metric"] == metric]))
    if args.out:
        write_csv(args.out, ["metric", "what", *(str(d) for d in args.run_dirs), "mean", "sd"],
                  [[r["metric"], r["what"], *map(float, r["values"]), float(r["mean"]), float(r["sd"])] for r in rows])
        print(f"wrote {args.out}")
    return 0

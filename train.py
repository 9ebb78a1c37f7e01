"""Train the U-Net on a prepared cache; the same command resumes a run that was interrupted.

Usage (MIR-1K, with its singer-disjoint validation split prepared into the same cache)::

    python data_generator.py prepare --dataset mir1k --root ../shared/data/mir1k --split train --cache cache/mir1k
    python data_generator.py prepare --dataset mir1k --root ../shared/data/mir1k --split validation --cache cache/mir1k
    python train.py --cache cache/mir1k --run-dir runs/mir1k --validation-from validation  # train, or resume
    python train.py --cache cache/mir1k --run-dir runs/mir1k --validation-from validation --epochs 200  # further

Fine-tuning a trained model on produced-sounding mixtures (vocals processed by production.py's
effects at -4 to +6 dB over instrumental music prepared into the same cache)::

    python data_generator.py prepare --dataset instrumental --root data/instrumental --split train --cache cache/mir1k
    python train.py --cache cache/mir1k --run-dir runs/produced --validation-from validation \
        --init-from pretrained/unet_mir1k.keras --instrumental-share 0.1 --vocal-level -4 6 --vocal-fx all

``--init-from`` starts from that model's weights (the same audio parameters and architecture, or
a one-line refusal naming what differs); when the run resumes, its checkpoint wins.

Without ``--validation-from``, a seeded 10% of the training tracks is held out
(``--validation-split``). ``--max-minutes`` ends a session after the epoch that crosses the
limit; the same command continues it later.

Run folder (``--run-dir``)::

    config.json         the training configuration; a rerun with another one is refused
    audio_params.json   the cache's audio parameters (read back by unet_model.load_model)
    best.keras          the model with the lowest validation loss (training loss without validation)
    last.keras          the model after the last completed epoch
    history.csv         one row per completed epoch: loss, val_loss, learning_rate
    loss.png            the loss curves, redrawn after each epoch
    logs/               TensorBoard logs (tensorboard --logdir runs)
    backup/             the resume point: state.json and the weights + optimizer of the last epoch

Every file is written to a temporary file and renamed into place, so a run killed at any moment
(SIGKILL, power loss) leaves the previous version of each file intact, and running the same
command again resumes after the last completed epoch. An epoch with a NaN or infinite loss stops
the run without writing any checkpoint, so the files keep the last good epoch.

``--distribute mirrored`` trains on all GPUs of the machine (all CPU devices when there is no
GPU) with ``tf.distribute.MirroredStrategy``; ``--distribute multiworker`` trains across the
machines described by the ``TF_CONFIG`` environment variable
(``tf.distribute.MultiWorkerMirroredStrategy``), the chief (or worker 0) writing the run folder
and every other worker writing to ``<run-dir>.<task><index>`` beside it. ``--batch-size`` is the
global batch, split over the replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import importlib.util
import json
import math
import sys
import time
import types
from pathlib import Path

from audio import AudioParams, UserError, atomic_output, atomic_write_text, run_cli
from unet_model import FILTERS, PARAMS_FILE

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"
LOSSES = {"mse": "mean_squared_error", "l1": "mean_absolute_error"}
#: Settings that may change when a run is resumed: how long and on what hardware it trains,
#: and where the cache lies; everything else must match the run folder's config.json.
RUNTIME_KEYS = ("epochs", "max_minutes", "jit_compile", "distribute", "workers", "cache", "verbose")
#: Settings added after runs were already made, with the value that a config.json without them
#: was trained with: such a run resumes, and refuses another value like any other setting.
ADDED_KEYS = {"pitch": 0.0, "tempo": 0.0, "instrumental_share": None, "vocal_level": None, "vocal_fx": None,
              "accompaniment_from": None, "init_from": None}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the singing-voice U-Net on a cache made by data_generator.py prepare. "
        "Running the same command again resumes an interrupted run.",
    )
    parser.add_argument("--cache", required=True, help="cache folder written by data_generator.py prepare")
    parser.add_argument("--run-dir", required=True, help="run folder (created); e.g. runs/NAME")
    parser.add_argument("--epochs", type=int, default=100, help="total number of epochs (default 100)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="batches per epoch (default: as many as the cache's patches fill)")
    parser.add_argument("--validation-steps", type=int, default=None,
                        help="validation batches per epoch (default: the whole validation set)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="global batch size (default 64, as the PyTorch original; the Keras coursework used 16)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="mse",
                        help="loss on mask x mixture against the vocals: mse (default) or l1 (the paper's)")
    parser.add_argument("--split", default="train", help="cache split to train on (default train)")
    parser.add_argument("--validation-split", type=float, default=0.1,
                        help="fraction of the training tracks held out for validation (default 0.1; 0 for none)")
    parser.add_argument("--validation-from", metavar="SPLIT", default=None,
                        help="validate on this cache split instead of holding out tracks (e.g. MIR-1K's "
                        "singer-disjoint 'validation' split, prepared into the same cache)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order and initial weights (default 0)")
    parser.add_argument("--filters", default=",".join(map(str, FILTERS)),
                        help="encoder filters, comma-separated (default %(default)s)")
    parser.add_argument("--kernel-size", type=int, default=5, help="convolution kernel size (default 5)")
    parser.add_argument("--dropout", type=float, default=0.5,
                        help="dropout of the first three decoder layers (default 0.5)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after the first epoch that ends past this many minutes; the same command "
                        "continues the run later")
    parser.add_argument("--patience", type=int, default=10,
                        help="epochs without improvement before early stopping (default 10)")
    parser.add_argument("--lr-patience", type=int, default=4,
                        help="epochs without improvement before halving the learning rate (default 4)")
    parser.add_argument("--remix", action="store_true",
                        help="augment by remixing vocals with other tracks' accompaniment")
    parser.add_argument("--gain", action="store_true", help="augment with random vocals/accompaniment gains")
    parser.add_argument("--pitch", type=float, default=0.0, metavar="SEMITONES",
                        help="augment by shifting each patch's vocals in pitch by a random amount within "
                        "+-SEMITONES (at most 12; formants move too), remixed with the accompaniment (default 0: off; "
                        "it hurt on MIR-1K, see pretrained/README.md)")
    parser.add_argument("--tempo", type=float, default=0.0, metavar="FRACTION",
                        help="augment by time-stretching each patch's vocals by a random factor within "
                        "1 +- FRACTION (below 1), remixed with the accompaniment (default 0: off)")
    parser.add_argument("--instrumental-share", type=float, default=None, metavar="P",
                        help="mixing mode: vocals only from tracks that have them, accompaniment from any track "
                        "(instrumental ones included), and this fraction of patches with silent vocals (default: off)")
    parser.add_argument("--vocal-level", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="mixing mode, from waveforms: vocals RMS LO..HI dB against the accompaniment's, drawn "
                        "uniformly per patch (e.g. -4 6; needs a cache prepared by this version)")
    parser.add_argument("--vocal-fx", default=None, metavar="NAMES",
                        help="mixing mode, from waveforms: process the vocals with these production.py effects, "
                        "comma-separated, or 'all' (e.g. highpass,compressor,eq,reverb)")
    parser.add_argument("--accompaniment-from", metavar="DATASET", default=None,
                        help="mixing mode: draw the accompaniment only from the training tracks of this dataset "
                        "(e.g. instrumental; default: from all training tracks)")
    parser.add_argument("--init-from", metavar="MODEL", default=None,
                        help="start from this model's weights (a .keras file, or a folder holding best.keras); same "
                        "audio parameters and architecture required. A resumed run continues from its checkpoint")
    parser.add_argument("--input-dropout", type=float, default=0.0,
                        help="zero this fraction of input cells, as the Keras coursework (default 0)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile train steps with XLA (default: Keras' choice, on for GPUs only)")
    parser.add_argument("--distribute", choices=("none", "mirrored", "multiworker"), default="none",
                        help="tf.distribute strategy: mirrored (GPUs of this machine) or multiworker (TF_CONFIG)")
    parser.add_argument("--workers", type=int, default=1, help="data loading threads (default 1)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras progress output: 0 none, 1 progress bar, 2 one line per epoch (default)")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    filters = _check_args(args)
    cache = _open_cache(args.cache)
    train_tracks, val_tracks = split_tracks(cache, args.split, args.validation_split, args.seed, args.validation_from)
    accompaniment_tracks = None
    if args.accompaniment_from is not None:
        accompaniment_tracks = [n for n in train_tracks if cache.track(n)["dataset"] == args.accompaniment_from]
        if not accompaniment_tracks:
            datasets = sorted({cache.track(n)["dataset"] for n in train_tracks})
            raise UserError(f"--accompaniment-from {args.accompaniment_from}: no training track of that dataset "
                            f"(the training tracks are {', '.join(datasets)}); prepare it into the cache or choose another")

    config = {
        "cache": str(Path(args.cache).resolve()),
        "split": args.split,
        "train_tracks": train_tracks,
        "validation_tracks": val_tracks,
        "validation_split": args.validation_split,
        "validation_from": args.validation_from,
        "filters": list(filters),
        "kernel_size": args.kernel_size,
        "dropout": args.dropout,
        "loss": args.loss,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch,
        "validation_steps": args.validation_steps,
        "patience": args.patience,
        "lr_patience": args.lr_patience,
        "remix": args.remix,
        "gain": args.gain,
        "pitch": args.pitch,
        "tempo": args.tempo,
        "input_dropout": args.input_dropout,
        "instrumental_share": args.instrumental_share,
        "vocal_level": args.vocal_level,
        "vocal_fx": list(args.vocal_fx) or None,
        "accompaniment_from": args.accompaniment_from,
        "init_from": None if args.init_from is None else str(args.init_from),
        "seed": args.seed,
        "epochs": args.epochs,
        "max_minutes": args.max_minutes,
        "jit_compile": args.jit_compile,
        "distribute": args.distribute,
        "workers": args.workers,
        "verbose": args.verbose,
    }

    depth = 2 ** len(filters)
    if cache.params.n_bins % depth or cache.params.patch_frames % depth:
        raise UserError(f"--filters {args.filters}: {len(filters)} layers need patches divisible by {depth}, the "
                        f"cache's are {cache.params.n_bins} x {cache.params.patch_frames}; use fewer filters")

    strategy = make_strategy(args.distribute)  # before any other TensorFlow call (multiworker needs it)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if args.batch_size % replicas:
        raise UserError(f"--batch-size {args.batch_size} does not divide over {replicas} replicas; "
                        f"use a multiple of {replicas}")
    run_dir = _worker_run_dir(Path(args.run_dir), strategy)
    init_weights = None
    if args.init_from is not None and not (run_dir / BACKUP_DIR / STATE_FILE).is_file():
        # checked before the run folder is written; a run that resumes takes its checkpoint instead
        init_weights = load_init_weights(args.init_from, cache.params, filters, args.kernel_size)
    state = prepare_run_dir(run_dir, config, cache.params)
    if state is not None and state.get("finished") == "early stopping":
        print(f"{run_dir}: stopped early after epoch {state['epoch']}; nothing to do (best model: "
              f"{run_dir / BEST_FILE})")
        return 0
    if state is not None and state["epoch"] >= args.epochs:
        print(f"{run_dir}: already trained for {state['epoch']} epochs; raise --epochs to train further")
        return 0
    done = state["epoch"] if state else 0
    _truncate_history(run_dir / HISTORY_FILE, done)
    if done:
        print(f"{run_dir}: resuming after epoch {done} of {args.epochs}")

    import keras

    from data_generator import DataGenerator
    from unet_model import build_unet

    keras.utils.set_random_seed(args.seed)  # initial weights and dropout
    loader = dict(batch_size=args.batch_size, seed=args.seed, workers=args.workers)
    train_data = DataGenerator(cache, tracks=train_tracks, mode="train", steps_per_epoch=args.steps_per_epoch,
                               remix=args.remix, gain=args.gain, input_dropout=args.input_dropout,
                               pitch=args.pitch, tempo=args.tempo, instrumental_share=args.instrumental_share,
                               vocal_level=args.vocal_level, effects=args.vocal_fx,
                               accompaniment_tracks=accompaniment_tracks, **loader)
    val_data = None
    if val_tracks:
        val_data = DataGenerator(cache, tracks=val_tracks, mode="validation",
                                 steps_per_epoch=args.validation_steps, **loader)

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_unet(input_shape=(cache.params.n_bins, cache.params.patch_frames, 1), filters=filters,
                           kernel_size=args.kernel_size, dropout=args.dropout)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=LOSSES[args.loss],
                      jit_compile="auto" if args.jit_compile is None else args.jit_compile)
        if init_weights is not None and not done:  # on resume the checkpoint's weights win
            model.set_weights(init_weights)
            print(f"starting from the weights of {args.init_from}")
    print(f"training {model.count_params():,} parameters on {len(train_tracks)} tracks "
          f"({len(val_tracks)} for validation), {replicas} replica{'s' * (replicas > 1)}")

    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = make_callbacks(run_dir, monitor, args)
    backup = callbacks[-1]
    model.fit(train_data, validation_data=val_data, epochs=args.epochs, callbacks=callbacks, verbose=args.verbose)

    if backup.diverged is not None:
        raise UserError(
            f"{run_dir}: the loss became NaN or infinite in epoch {backup.diverged + 1}; the checkpoints keep "
            f"epoch {backup.epoch}. Check the cache for damaged data, or lower --learning-rate in a new --run-dir"
        )
    early = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)).stopped_epoch
    if not early and backup.epoch < args.epochs:
        print(f"{run_dir}: stopped at the time limit after epoch {backup.epoch}; run the same command to continue")
        return 0
    backup.mark_finished("early stopping" if early else "completed")
    print(f"{run_dir}: {'stopped early' if early else 'finished'} after epoch {backup.epoch}; "
          f"best model {run_dir / BEST_FILE}")
    return 0


def _check_args(args) -> tuple[int, ...]:
    """Check the numeric options against each other; return the filter list."""
    try:
        filters = tuple(int(f) for f in args.filters.split(","))
    except ValueError:
        raise UserError(f"--filters {args.filters!r}: give comma-separated integers, e.g. 16,32,64") from None
    if not filters or min(filters) < 1:
        raise UserError(f"--filters {args.filters!r}: give one or more positive integers")
    for name in ("epochs", "batch_size", "kernel_size", "patience", "lr_patience", "workers"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("steps_per_epoch", "validation_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.learning_rate > 0 and math.isfinite(args.learning_rate)):
        raise UserError(f"--learning-rate must be a positive number, got {args.learning_rate}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be positive, got {args.max_minutes}")
    if not 0 <= args.validation_split < 1:
        raise UserError(f"--validation-split must be in [0, 1), got {args.validation_split}")
    if not 0 <= args.input_dropout < 1:
        raise UserError(f"--input-dropout must be in [0, 1), got {args.input_dropout}")
    from data_generator import MAX_PITCH  # numpy only

    if not 0 <= args.pitch <= MAX_PITCH:
        raise UserError(f"--pitch must be in [0, {MAX_PITCH:g}] semitones, got {args.pitch}")
    if not 0 <= args.tempo < 1:
        raise UserError(f"--tempo must be in [0, 1) (a fraction of the tempo), got {args.tempo}")
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.instrumental_share is not None and not 0 <= args.instrumental_share <= 1:
        raise UserError(f"--instrumental-share must be in [0, 1], got {args.instrumental_share}")
    if args.vocal_level is not None:
        low, high = args.vocal_level
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise UserError(f"--vocal-level {low:g} {high:g}: give LO HI in dB with LO <= HI, e.g. -4 6")
        if args.gain:
            raise UserError("--vocal-level sets the vocal-to-accompaniment level; drop --gain")
    args.vocal_fx = _effects(args.vocal_fx)
    if (args.vocal_level is not None or args.vocal_fx) and (args.pitch or args.tempo):
        raise UserError("--pitch/--tempo act on magnitudes and cannot be combined with --vocal-level/--vocal-fx; "
                        "use --vocal-fx pitch (a time-domain pitch shift) instead")
    return filters


def _effects(text: str | None) -> tuple[str, ...]:
    """The effect names of ``--vocal-fx`` (``all``: every effect of production.py), checked."""
    if text is None:
        return ()
    from data_generator import production_effects  # numpy only

    known = production_effects()
    names = known if text.strip() == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"--vocal-fx {text!r}: unknown effect(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(known)} or 'all'")
    return names


def load_init_weights(path, params: AudioParams, filters, kernel_size: int) -> list:
    """The weights of the model at ``path`` (``--init-from``), refused unless it matches this run.

    The model's audio parameters must equal the cache's, and its architecture the one that
    ``filters`` and ``kernel_size`` build: the same layers (by name) with the same weight shapes.
    """
    from inference import resolve_model
    from unet_model import build_unet, load_model

    path = resolve_model(str(path))
    source, source_params = load_model(path)
    source_params.check_same(params, f"--init-from {path}", "fine-tune on a cache prepared with its parameters")
    target = build_unet(input_shape=(params.n_bins, params.patch_frames, 1), filters=filters, kernel_size=kernel_size)

    def shapes(model) -> dict:
        return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}

    have, want = shapes(source), shapes(target)
    if have != want:
        convs = [shape[0] for name, shape in have.items() if name.startswith("encoder") and name.endswith("_conv")]
        theirs = (f"--filters {','.join(str(s[-1]) for s in convs)} --kernel-size {convs[0][0]}" if convs
                  else "another layer list")
        name = next(n for n in [*want, *have] if have.get(n) != want.get(n))
        raise UserError(f"--init-from {path}: another architecture (layer {name}: {have.get(name)} vs {want.get(name)} "
                        f"here); it was built with {theirs}: train with those")
    return source.get_weights()


def _open_cache(path):
    """Open the cache folder, or explain how to make one."""
    from data_generator import Cache

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--cache {path}: no such folder; make one with: python data_generator.py prepare ...")
    return Cache(path)


def split_tracks(cache, split: str, validation_split: float, seed: int,
                 validation_from: str | None = None) -> tuple[list[str], list[str]]:
    """Names of the training and validation tracks.

    With ``validation_from``, validation uses all tracks of that cache split. Otherwise a seeded
    random fraction ``validation_split`` of the ``split`` tracks is held out (whole tracks, so
    no song is in both; at least one when the fraction is positive).
    """
    import numpy as np

    def names_of(which: str, option: str) -> list[str]:
        names = sorted(t["name"] for t in cache.tracks if t["split"] == which)
        if not names:
            splits = sorted({t["split"] for t in cache.tracks})
            raise UserError(f"{option} {which}: the cache has no such tracks (its splits: {', '.join(splits) or 'none'}); "
                            "prepare that split into the cache or choose another")
        return names

    names = names_of(split, "--split")
    if validation_from is not None:
        if validation_from == split:
            raise UserError(f"--validation-from {validation_from}: the same split as --split; choose another")
        return names, names_of(validation_from, "--validation-from")
    if validation_split == 0:
        return names, []
    if len(names) < 2:
        raise UserError(f"--validation-split {validation_split}: the cache's {split} split has only one track; "
                        "use --validation-split 0, --validation-from SPLIT or a larger cache")
    n_val = min(len(names) - 1, max(1, round(validation_split * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    val = {names[i] for i in order[:n_val]}
    return [n for n in names if n not in val], sorted(val)


def prepare_run_dir(run_dir: Path, config: dict, params: AudioParams) -> dict | None:
    """Create the run folder, or check that an existing one was made by the same configuration.

    Returns the saved training state (``backup/state.json``) of an earlier run, or None when
    training starts from scratch. Refuses (UserError) a folder of another configuration, other
    audio parameters or not made by train.py, so nothing is ever overwritten.
    """
    config_path = run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: is a file; give a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not config_path.is_file():
        raise UserError(f"--run-dir {run_dir}: not empty and has no {CONFIG_FILE}, so it is not a run of "
                        "train.py; give a new folder")
    if config_path.is_file():
        try:
            old = json.loads(config_path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{config_path}: unreadable ({err}); give a new --run-dir") from None
        old = {**ADDED_KEYS, **old}
        diffs = [f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(old) | set(config))
                 if k not in RUNTIME_KEYS and old.get(k) != config.get(k)]
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
    _remove_partial_files(run_dir)
    params.save(run_dir / PARAMS_FILE)
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    return read_state(run_dir / BACKUP_DIR)


def _remove_partial_files(run_dir: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (audio.atomic_output's names)."""
    for folder in (run_dir, run_dir / BACKUP_DIR):
        for path in folder.glob(".*.part*"):
            path.unlink(missing_ok=True)


def _truncate_history(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs: rows written after the
    resume point (a kill between the CSV row and the backup) are trained again."""
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


def make_callbacks(run_dir: Path, monitor: str, args) -> list:
    """The training callbacks; the resume point (AtomicBackupAndRestore) comes last, so that it
    saves the other callbacks' state after their end-of-epoch updates and restores it after
    their start-of-training resets."""
    import keras

    classes = callback_classes()
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=args.lr_patience,
                                                  min_lr=1e-7, verbose=1)
    early_stopping = keras.callbacks.EarlyStopping(monitor=monitor, patience=args.patience, verbose=1)
    best = classes.AtomicModelCheckpoint(run_dir / BEST_FILE, monitor=monitor, save_best_only=True)
    if importlib.util.find_spec("tensorboard") is not None:
        tensorboard = [keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"))]
    else:  # TensorFlow does not depend on it; training does not need it
        print("note: TensorBoard logs are off (pip install tensorboard to write them)")
        tensorboard = []
    return [
        keras.callbacks.TerminateOnNaN(),
        reduce_lr,
        early_stopping,
        best,
        classes.AtomicModelCheckpoint(run_dir / LAST_FILE),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        classes.LossPlot(run_dir / HISTORY_FILE, run_dir / PLOT_FILE),
        *tensorboard,
        *([classes.TimeLimit(args.max_minutes * 60)] if args.max_minutes else []),
        classes.AtomicBackupAndRestore(run_dir / BACKUP_DIR, {
            "reduce_lr": (reduce_lr, ("best", "wait", "cooldown_counter")),
            "early_stopping": (early_stopping, ("best", "wait", "best_epoch")),
            "best_checkpoint": (best, ("best",)),
        }),
    ]


def read_state(backup_dir) -> dict | None:
    """The resume point saved in ``backup_dir/state.json`` (see AtomicBackupAndRestore), or None."""
    folder = Path(backup_dir)
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not (folder / state["weights"]).is_file():
            raise ValueError(f"{state['weights']} is missing")
        return state
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: damaged resume point ({err}); give a new --run-dir") from None


@functools.cache
def callback_classes() -> types.SimpleNamespace:
    """The Keras callback subclasses, defined on first use so that importing train.py (and
    ``--help``) does not import Keras."""
    import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint that writes a temporary file and renames it onto the checkpoint, so a
        failure or kill while saving keeps the previous checkpoint intact; it never saves an
        epoch whose loss is NaN or infinite."""

        def __init__(self, filepath, **kwargs):
            super().__init__(str(filepath), **kwargs)

        def _save_model(self, epoch, batch, logs):
            if not _finite_logs(logs):
                return
            path = Path(self._get_file_path(epoch, batch, logs))
            if self._should_save_model(epoch, batch, logs, str(path)):
                try:
                    with atomic_output(path) as tmp:
                        self.model.save(tmp)
                except OSError as err:
                    raise UserError(f"{path}: cannot save the checkpoint ({err}); the previous one is intact") from None

    class LossPlot(keras.callbacks.Callback):
        """Redraw loss.png from history.csv after each epoch (after the CSVLogger wrote it)."""

        def __init__(self, history_path, png_path):
            super().__init__()
            self.history_path, self.png_path = history_path, png_path

        def on_epoch_end(self, epoch, logs=None):
            plot_history(self.history_path, self.png_path)

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

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        """BackupAndRestore whose resume point survives a kill at any moment.

        Keras' version overwrites its weights file in place and writes the epoch number in a
        second file, so a kill while saving can leave a torn file or a wrong epoch. Here the
        weights (and optimizer state) of epoch N go to a new file ``epoch-000N.weights.h5``
        (written through a temporary file), then ``state.json`` is renamed into place naming
        that file, the epoch and the state of the stateful callbacks (``stateful``: name ->
        (callback, attribute names), e.g. the best values and patience counters of
        EarlyStopping and ReduceLROnPlateau), and only then the previous weights file is
        deleted. An epoch with a non-finite loss is not saved and stops training. The backup
        is kept when training ends, so that rerunning a finished run does nothing and a larger
        --epochs continues it.
        """

        def __init__(self, backup_dir, stateful: dict):
            super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
            self.folder = Path(backup_dir)
            self.stateful = stateful
            self.epoch = 0  # completed epochs saved in the backup
            self.diverged = None  # the epoch whose loss became NaN or infinite, if any

        def on_train_begin(self, logs=None):
            state = read_state(self.folder)
            if state is None:
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # so its state can load
            self.model.load_weights(self.folder / state["weights"])
            self.model._initial_epoch = self.epoch = state["epoch"]  # read by fit() after on_train_begin
            for name, (callback, _) in self.stateful.items():
                for attr, value in state["callbacks"].get(name, {}).items():
                    setattr(callback, attr, value)

        def on_epoch_end(self, epoch, logs=None):
            if not _finite_logs(logs):
                self.diverged = epoch
                self.model.stop_training = True
                return
            self.epoch = epoch + 1
            self._write_state(save_weights=True)

        def mark_finished(self, reason: str):
            """Record why training ended, so that a rerun of the same command does nothing."""
            if self.epoch:
                self._write_state(save_weights=False, finished=reason)

        def on_train_end(self, logs=None):
            pass  # keep the backup (see the class docstring)

        def _write_state(self, save_weights: bool, finished: str | None = None):
            self.folder.mkdir(parents=True, exist_ok=True)
            weights = f"epoch-{self.epoch:04d}.weights.h5"
            if save_weights:
                with atomic_output(self.folder / weights, suffix=".weights.h5") as tmp:
                    self.model.save_weights(tmp)
            callbacks = {name: {attr: _jsonable(getattr(callback, attr)) for attr in attrs}
                         for name, (callback, attrs) in self.stateful.items()}
            state = {"epoch": self.epoch, "weights": weights, "callbacks": callbacks, "finished": finished}
            atomic_write_text(self.folder / STATE_FILE, json.dumps(state, indent=2) + "\n")
            for old in self.folder.glob("epoch-*.weights.h5"):
                if old.name != weights:
                    old.unlink(missing_ok=True)

    return types.SimpleNamespace(AtomicModelCheckpoint=AtomicModelCheckpoint, LossPlot=LossPlot, TimeLimit=TimeLimit,
                                 AtomicBackupAndRestore=AtomicBackupAndRestore)


def _finite_logs(logs) -> bool:
    """False when any number in the epoch's logs (loss, val_loss) is NaN or infinite."""
    return all(math.isfinite(float(v)) for v in (logs or {}).values()
               if isinstance(v, (int, float)) or getattr(v, "shape", None) == ())


def _jsonable(value):
    """A callback attribute as JSON: None, ints, or floats (inf survives as Infinity)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


def make_strategy(name: str):
    """The tf.distribute strategy for ``--distribute`` (None for "none").

    MirroredStrategy replicates over the machine's GPUs, or over its CPU devices when it has no
    GPU (one, unless logical devices were configured); MultiWorkerMirroredStrategy reads the
    cluster from TF_CONFIG.
    """
    if name == "none":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"--distribute {name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])


def _worker_run_dir(run_dir: Path, strategy) -> Path:
    """The chief writes the run folder; other workers of a multi-worker run write beside it."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return run_dir if is_chief else run_dir.with_name(f"{run_dir.name}.{task_type}{task_id}")


if __name__ == "__main__":
    sys.exit(run_cli(main))

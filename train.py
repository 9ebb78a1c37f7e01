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

    config.json         the training configuration (:class:`TrainConfig`); a rerun with another one is refused
    audio_params.json   the cache's audio parameters (read back by unet_model.load_model)
    best.keras          the model with the lowest validation loss (training loss without validation), its
                        audio parameters inside too (unet_model.save_model)
    last.keras          the model after the last completed epoch
    history.csv         one row per completed epoch: loss, val_loss, learning_rate
    loss.png            the loss curves, redrawn after each epoch
    logs/               TensorBoard logs (tensorboard --logdir runs)
    backup/             the resume point: state.json and the weights + optimizer of the last two epochs
                        (a damaged last one is passed over for the one before, with a note)

Every file is written to a temporary file and renamed into place (separation/runs.py,
separation/callbacks.py), so a run killed at any moment (SIGKILL, power loss) leaves the previous
version of each file intact, and running the same command again resumes after the last completed
epoch. An epoch with a NaN or infinite loss stops the run without writing any checkpoint, so the
files keep the last good epoch.

``--distribute mirrored`` trains on all GPUs of the machine (all CPU devices when there is no
GPU) with ``tf.distribute.MirroredStrategy``; ``--distribute multiworker`` trains across the
machines described by the ``TF_CONFIG`` environment variable
(``tf.distribute.MultiWorkerMirroredStrategy``), the chief (or worker 0) writing the run folder
and every other worker writing to ``<run-dir>.<task><index>`` beside it; they resume from the
chief's ``backup/`` when they can read it (one machine, or a shared file system), else from their
own (separation/distributed.py). When a worker stops, the others stop with one line within
TensorFlow's heartbeat timeout; the same command on every worker resumes the run.
``--batch-size`` is the global batch, split over the replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import importlib.util
import json
import math
import sys
from pathlib import Path

from separation.audio import AudioParams
from separation.augment import MAX_PITCH, SHORT_TRACKS, Augmentation, make_augmentation, production_effects
from separation.cli import ArgumentParser, bounded, run_cli
from separation.errors import UserError
from separation.distributed import lost_worker_errors, lost_workers, make_strategy, worker_run_dir
from separation.runs import (BACKUP_DIR, BEST_FILE, CONFIG_FILE, HISTORY_FILE, LAST_FILE, PLOT_FILE, STATE_FILE, plot_history,
                             prepare_run_dir, read_state, resume_epoch)
from unet_model import FILTERS

LOSSES = {"mse": "mean_squared_error", "l1": "mean_absolute_error"}
PRECISION_CHOICES = ("float32", "bfloat16", "auto")


def option(default, help: str, *, resume: bool = False, **argparse_kwargs):
    """A :class:`TrainConfig` field that is also a command-line option ``--field-name``.

    ``help`` is its ``--help`` text; ``argparse_kwargs`` (``type``, ``choices``, ``action``...)
    go to ``add_argument``, so bounds are checked by argparse at the command line's edge.
    ``resume=True`` marks a setting that may change when a run is resumed (how long and on
    what hardware it trains); every other one must match the run folder's config.json.
    """
    return dataclasses.field(default=default, metadata={"help": help, "resume": resume, "argparse": argparse_kwargs})


def filter_list(text: str) -> tuple[int, ...]:
    """``--filters``: comma-separated positive integers."""
    try:
        filters = tuple(int(f) for f in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 16,32,64") from None
    if min(filters) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive integers")
    return filters


def effect_names(text: str) -> tuple[str, ...]:
    """``--vocal-fx``: comma-separated names of production.py's effects, or ``all`` (every one, in its order)."""
    known = production_effects()
    names = known if text.strip() == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown effect(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(known)} or 'all'")
    return names


def dataset_share(text: str) -> tuple[str, float]:
    """``--voice-share``: ``DATASET=P``, a dataset name and a probability in [0, 1]."""
    dataset, sep, share = text.partition("=")
    try:
        value = float(share)
    except ValueError:
        value = math.nan
    if not sep or not dataset.strip() or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give DATASET=P with P in [0, 1], e.g. stems=0.75")
    return dataset.strip(), value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run, saved as ``config.json`` in the run folder.

    Each field is declared once, here: its default, its ``--help`` and its bounds (argparse
    types) in :func:`option`; :func:`get_parser` makes the command line from the fields. To add
    an option, add a field whose default is what training did before the option existed: a
    config.json written without the field is read with that default (:meth:`load`), so older
    runs resume. ``train_tracks`` and ``validation_tracks`` are not options: train.py fills
    them in from the cache (:func:`split_tracks`).
    """

    cache: str = option(None, "cache folder written by data_generator.py prepare", resume=True, required=True)
    split: str = option("train", "cache split to train on")
    validation_split: float = option(0.1, "fraction of the training tracks held out for validation (0 for none)",
                                     type=bounded(float, 0, 1, high_open=True))
    validation_from: str | None = option(
        None, "validate on this cache split instead of holding out tracks (e.g. MIR-1K's singer-disjoint "
        "'validation' split, prepared into the same cache)", metavar="SPLIT")
    filters: tuple[int, ...] = option(FILTERS, "encoder filters, comma-separated", type=filter_list)
    kernel_size: int = option(5, "convolution kernel size (odd)", type=bounded(int, 3))
    dropout: float = option(0.5, "dropout of the first three decoder layers", type=bounded(float, 0, 1, high_open=True))
    loss: str = option("mse", "loss on mask x mixture against the vocals: mse or l1 (the paper's)", choices=sorted(LOSSES))
    learning_rate: float = option(1e-4, "Adam learning rate", type=bounded(float, 0, low_open=True))
    batch_size: int = option(64, "global batch size (64 as the PyTorch original; the Keras coursework used 16)",
                             type=bounded(int, 1))
    steps_per_epoch: int | None = option(None, "batches per epoch (default: as many as the cache's patches fill)",
                                         type=bounded(int, 1))
    validation_steps: int | None = option(None, "validation batches per epoch (default: the whole validation set)",
                                          type=bounded(int, 1))
    patience: int = option(10, "epochs without improvement before early stopping", type=bounded(int, 1))
    lr_patience: int = option(4, "epochs without improvement before halving the learning rate", type=bounded(int, 1))
    remix: bool = option(False, "augment by remixing vocals with other tracks' accompaniment", action="store_true")
    gain: bool = option(False, "augment with random vocals/accompaniment gains", action="store_true")
    pitch: float = option(
        0.0, f"augment by shifting each patch's vocals in pitch by a random amount within +-SEMITONES (at most "
        f"{MAX_PITCH:g}; formants move too), remixed with the accompaniment (0: off; it hurt on MIR-1K, see "
        "pretrained/README.md)", type=bounded(float, 0, MAX_PITCH), metavar="SEMITONES")
    tempo: float = option(0.0, "augment by time-stretching each patch's vocals by a random factor within "
                          "1 +- FRACTION (below 1), remixed with the accompaniment (0: off)",
                          type=bounded(float, 0, 1, high_open=True), metavar="FRACTION")
    input_dropout: float = option(0.0, "zero this fraction of input cells, as the Keras coursework",
                                  type=bounded(float, 0, 1, high_open=True))
    instrumental_share: float | None = option(
        None, "mixing mode: vocals only from tracks that have them, accompaniment from any track (instrumental ones "
        "included), and this fraction of patches with silent vocals (default: off)",
        type=bounded(float, 0, 1), metavar="P")
    vocal_level: tuple[float, float] | None = option(
        None, "mixing mode, from waveforms: vocals RMS LO..HI dB against the accompaniment's, drawn uniformly per "
        "patch (e.g. -4 6; needs a cache prepared with waveforms, format 2)",
        type=bounded(float), nargs=2, metavar=("LO", "HI"))
    vocal_fx: tuple[str, ...] | None = option(
        None, "mixing mode, from waveforms: process the vocals with these production.py effects, comma-separated, "
        "or 'all' (e.g. highpass,compressor,eq,reverb)", type=effect_names, metavar="NAMES")
    accompaniment_from: str | None = option(
        None, "mixing mode: draw the accompaniment only from the training tracks of this dataset (e.g. "
        "instrumental; default: from all training tracks)", metavar="DATASET")
    voice_share: tuple[str, float] | None = option(
        None, "mixing mode: draw each patch's vocals from this dataset's training tracks with probability P, from the "
        "other datasets' otherwise (e.g. stems=0.75 to weigh up a dataset with few voices; default: every track with "
        "vocals alike)", type=dataset_share, metavar="DATASET=P")
    vocal_fx_on: str | None = option(
        None, "apply --vocal-fx only to the vocals of this dataset's training tracks (e.g. mir1k, whose voices are "
        "dry; default: to all)", metavar="DATASET")
    short_tracks: str = option(
        SHORT_TRACKS[0], "where a track shorter than a patch lies in its patch: pad (at the start, zeros after), "
        "place (at a random offset, zeros around), fill (mixing from waveforms: placed, and a short accompaniment "
        "continued by other tracks' to the patch's end)", choices=SHORT_TRACKS)
    init_from: str | None = option(
        None, "start from this model's weights (a .keras file, or a folder holding one: a run folder, pretrained); "
        "same audio parameters and architecture required. A resumed run continues from its checkpoint",
        metavar="MODEL")
    seed: int = option(0, "seed of the data order and initial weights", type=int)
    epochs: int = option(100, "total number of epochs", resume=True, type=bounded(int, 1))
    max_minutes: float | None = option(
        None, "stop after the first epoch that ends past this many minutes; the same command continues the run later",
        resume=True, type=bounded(float, 0, low_open=True))
    jit_compile: bool | None = option(None, "compile train steps with XLA (default: Keras' choice, on for GPUs only)",
                                      resume=True, action=argparse.BooleanOptionalAction)
    distribute: str = option("none", "tf.distribute strategy: mirrored (GPUs of this machine) or multiworker "
                             "(TF_CONFIG)", resume=True, choices=("none", "mirrored", "multiworker"))
    workers: int = option(1, "data loading threads", resume=True, type=bounded(int, 1))
    verbose: int = option(2, "Keras progress output: 0 none, 1 progress bar, 2 one line per epoch", resume=True,
                          type=int, choices=(0, 1, 2))
    precision: str = option(
        "float32", "arithmetic of the training step: float32; bfloat16, i.e. mixed precision (float32 weights, "
        "optimizer and loss; bfloat16 convolutions); auto: bfloat16 where this machine computes it fast (a GPU with "
        "bfloat16 units, a CPU with AVX512-BF16 or AMX), else float32", choices=PRECISION_CHOICES)
    train_tracks: tuple[str, ...] = ()
    validation_tracks: tuple[str, ...] = ()
    precision_used: str = "float32"  # what trains: ``precision`` with auto decided (:func:`run_precision`)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        """The configuration of a command line (the cache as an absolute path)."""
        values = {f.name: _frozen(getattr(args, f.name)) for f in dataclasses.fields(cls) if f.name in vars(args)}
        return cls(**dict(values, cache=str(Path(args.cache).resolve())))

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def load(cls, path) -> "TrainConfig":
        """Read config.json; a setting it lacks (a run made before the option existed) takes its default."""
        try:
            data = json.loads(Path(path).read_text())
            fields = {f.name: f for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - set(fields))
            if unknown:
                raise ValueError(f"unknown settings {', '.join(unknown)}")
            return cls(**{key: _frozen(value) for key, value in data.items()})
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"{path}: unreadable ({err}); give a new --run-dir") from None

    def augmentation(self) -> Augmentation:
        """The augmentation settings of the run, checked (AugmentationError), the accompaniment drawn
        from every training track (``augment.make_augmentation`` narrows it to ``accompaniment_from``)."""
        return Augmentation(remix=self.remix, gain=self.gain, pitch=self.pitch, tempo=self.tempo,
                            input_dropout=self.input_dropout, instrumental_share=self.instrumental_share,
                            vocal_level=self.vocal_level, effects=self.vocal_fx or (), short_tracks=self.short_tracks)

    def differences(self, other: "TrainConfig") -> list[str]:
        """``"name: theirs -> ours"`` for each setting that must not change on resume but does."""
        return [f"{f.name}: {_shown(getattr(other, f.name))} -> {_shown(getattr(self, f.name))}"
                for f in dataclasses.fields(self)
                if not f.metadata.get("resume") and getattr(self, f.name) != getattr(other, f.name)]


def _frozen(value):
    """Lists (from JSON, or an option of two values) as tuples: the dataclass is frozen and compared."""
    return tuple(value) if isinstance(value, list) else value


def _shown(value):
    return repr(list(value) if isinstance(value, tuple) else value)


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Train the singing-voice U-Net on a cache made by data_generator.py prepare. "
        "Running the same command again resumes an interrupted run.",
    )
    parser.add_argument("--run-dir", required=True, help="run folder (created); e.g. runs/NAME")
    for field in dataclasses.fields(TrainConfig):
        if "help" not in field.metadata:  # filled in by train.py, not an option
            continue
        kwargs = dict(field.metadata["argparse"])
        help = field.metadata["help"]
        if field.default not in (None, False) and "default:" not in help:
            shown = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
            help += f" (default {shown})"
        if not kwargs.get("required"):
            kwargs["default"] = field.default
        parser.add_argument("--" + field.name.replace("_", "-"), help=help, **kwargs)
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    config = TrainConfig.from_args(args)
    from separation.cache import open_cache

    cache = open_cache(args.cache)
    train_tracks, val_tracks = split_tracks(cache, config.split, config.validation_split, config.seed,
                                            config.validation_from)
    config = dataclasses.replace(config, train_tracks=tuple(train_tracks), validation_tracks=tuple(val_tracks))
    augmentation = make_augmentation(config, cache, train_tracks)

    depth = 2 ** len(config.filters)
    if cache.params.n_bins % depth or cache.params.patch_frames % depth:
        raise UserError(f"--filters {','.join(map(str, config.filters))}: {len(config.filters)} layers need patches divisible by {depth}, "
                        f"the cache's are {cache.params.n_bins} x {cache.params.patch_frames}; use fewer filters")

    strategy = make_strategy(config.distribute)  # before any other TensorFlow call (multiworker needs it)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if config.batch_size % replicas:
        raise UserError(f"--batch-size {config.batch_size} does not divide over {replicas} replicas; "
                        f"use a multiple of {replicas}")
    run_dir = worker_run_dir(Path(args.run_dir), strategy)
    precision, why = run_precision(config.precision, run_dir / CONFIG_FILE)
    config = dataclasses.replace(config, precision_used=precision)
    init_weights = None
    if config.init_from is not None and not (run_dir / BACKUP_DIR / STATE_FILE).is_file():
        # checked before the run folder is written; a run that resumes takes its checkpoint instead
        init_weights = load_init_weights(config.init_from, cache.params, config.filters, config.kernel_size)
    state = prepare_run_dir(run_dir, config, cache.params)
    if run_dir != Path(args.run_dir) and Path(args.run_dir).is_dir():
        # another worker of a multi-worker run: resume where the chief does, from its folder when shared
        state = read_state(Path(args.run_dir) / BACKUP_DIR)
    done = resume_epoch(run_dir, state, config.epochs)  # epochs already trained
    if done is None:  # nothing left to do
        return 0

    import keras

    from data_generator import DataGenerator
    from unet_model import build_unet

    keras.utils.set_random_seed(config.seed)  # initial weights and dropout
    loader = dict(batch_size=config.batch_size, seed=config.seed, workers=config.workers)
    train_data = DataGenerator(cache, tracks=train_tracks, mode="train", steps_per_epoch=config.steps_per_epoch,
                               augmentation=augmentation, **loader)
    train_data.epoch = done  # a resumed run draws its next epochs' batches, not its first ones again
    val_data = None
    if val_tracks:
        val_data = DataGenerator(cache, tracks=val_tracks, mode="validation",
                                 steps_per_epoch=config.validation_steps, **loader)

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_unet(input_shape=(cache.params.n_bins, cache.params.patch_frames, 1), filters=config.filters,
                           kernel_size=config.kernel_size, dropout=config.dropout, precision=precision)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSSES[config.loss],
                      jit_compile="auto" if config.jit_compile is None else config.jit_compile)
        if init_weights is not None and not done:  # on resume the checkpoint's weights win
            model.set_weights(init_weights)
            print(f"starting from the weights of {config.init_from}")
    print(f"training {model.count_params():,} parameters on {len(train_tracks)} tracks "
          f"({len(val_tracks)} for validation), {replicas} replica{'s' * (replicas > 1)}, in {precision}{why}")

    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = make_callbacks(run_dir, monitor, config, state, cache.params)
    backup = callbacks[-1]
    lost = None
    try:
        model.fit(train_data, validation_data=val_data, epochs=config.epochs, initial_epoch=done, callbacks=callbacks,
                  verbose=config.verbose)
    except lost_worker_errors(strategy) as err:
        lost = lost_workers(err, strategy)
    if lost is not None:
        # The interrupted all-reduce leaves TensorFlow's thread pool open, held by the error's traceback; collected
        # now, while its pipes are open, instead of at interpreter exit (where it prints "Exception ignored ...").
        gc.collect()
        raise UserError(f"--distribute multiworker: {lost} of the cluster stopped during epoch {backup.epoch + 1}; "
                        f"start the same command again on every worker to resume after epoch {backup.epoch}")

    if backup.diverged is not None:
        raise UserError(
            f"{run_dir}: the loss became NaN or infinite in epoch {backup.diverged + 1}; the checkpoints keep "
            f"epoch {backup.epoch}. Check the cache for damaged data, or lower --learning-rate in a new --run-dir"
        )
    early = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)).stopped_epoch
    if not early and backup.epoch < config.epochs:
        print(f"{run_dir}: stopped at the time limit after epoch {backup.epoch}; run the same command to continue")
        return 0
    backup.mark_finished("early stopping" if early else "completed")
    print(f"{run_dir}: {'stopped early' if early else 'finished'} after epoch {backup.epoch}; "
          f"best model {run_dir / BEST_FILE}")
    return 0


def run_precision(requested: str, config_path: Path, decide=None) -> tuple[str, str]:
    """The precision the run trains in, and why when ``--precision auto`` chose it (for the first lines).

    A run keeps its precision when resumed: ``auto`` is decided once by ``decide()`` (``(precision,
    reason)``; by default the speed layer's ``unet_fast.auto_precision``, whether this machine
    computes bfloat16 fast), when the run starts, and read back from the run's config file
    (``config_path``) afterwards, since another machine may decide otherwise.
    """
    if requested != "auto":
        return requested, ""
    if config_path.is_file():
        saved = TrainConfig.load(config_path)
        if saved.precision == "auto":
            return saved.precision_used, " (auto, as the run started)"
    if decide is None:
        from separation.unet_fast import auto_precision as decide
    precision, reason = decide()
    return precision, f" (auto: {reason})"


def make_callbacks(run_dir: Path, monitor: str, config: TrainConfig, state: dict | None,
                   params: AudioParams | None = None) -> list:
    """The training callbacks (separation/callbacks.py, and Keras' own); the resume point comes last, so that
    it saves the other callbacks' state after their end-of-epoch updates and restores it after
    their start-of-training resets. The models are saved with ``params`` inside."""
    import keras

    from separation.callbacks import AtomicBackup, AtomicCheckpoint, LossPlot, TimeLimit
    from unet_model import save_model

    save = None if params is None else functools.partial(save_model, params=params)

    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=config.lr_patience,
                                                  min_lr=1e-7, verbose=1)
    early_stopping = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, verbose=1)
    best = AtomicCheckpoint(run_dir / BEST_FILE, monitor=monitor, best_only=True, save=save)
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
        AtomicCheckpoint(run_dir / LAST_FILE, save=save),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        LossPlot(functools.partial(plot_history, run_dir / HISTORY_FILE, run_dir / PLOT_FILE)),
        *tensorboard,
        *([TimeLimit(config.max_minutes * 60)] if config.max_minutes else []),
        AtomicBackup(run_dir / BACKUP_DIR / STATE_FILE, {
            "reduce_lr": (reduce_lr, ("best", "wait", "cooldown_counter")),
            "early_stopping": (early_stopping, ("best", "wait", "best_epoch")),
            "best_checkpoint": (best, ("best",)),
        }, state),
    ]


def load_init_weights(path, params: AudioParams, filters: tuple[int, ...], kernel_size: int) -> list:
    """The weights of the model at ``path`` (``--init-from``: a .keras file or a folder holding
    one), refused with a UserError unless it fits this run: its audio parameters must equal the
    cache's, and its architecture the one ``filters`` and ``kernel_size`` build."""
    from unet_model import load_model, model_file, read_settings

    path = model_file(path)
    source, source_params = load_model(path)
    source_params.check_same(params, f"--init-from {path}", "fine-tune on a cache prepared with its parameters")
    try:
        settings = read_settings(source)
    except ValueError as err:
        raise UserError(f"--init-from {path}: {err}") from None
    theirs = (settings["filters"], settings["kernel_size"])
    if theirs != (tuple(filters), kernel_size):
        raise UserError(f"--init-from {path}: another architecture (--filters {','.join(map(str, theirs[0]))} "
                        f"--kernel-size {theirs[1]}; here --filters {','.join(map(str, filters))} --kernel-size "
                        f"{kernel_size}): train with those")
    return source.get_weights()


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


if __name__ == "__main__":
    sys.exit(run_cli(main))

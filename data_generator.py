"""Step 1 of the pipeline: datasets in, a magnitude cache out, 512x128 training patches from it.

Usage::

    python data_generator.py synthesize --out data/synth                # built-in dataset (synth.py)
    python data_generator.py prepare --dataset mir1k --root ../shared/data/mir1k --split train --cache cache/mir1k
    python data_generator.py prepare --dataset stems --root data/synth --cache cache/synth
    python data_generator.py prepare --dataset instrumental --root data/instrumental --split train --cache cache/mir1k
    python data_generator.py export --dataset mir1k --root ../shared/data/mir1k --split test --unit clip --out data/mir1k-test

``prepare`` reads each track of a dataset split, folds it to mono, resamples it to 8192 Hz and
stores the STFT magnitudes of the mixture, the vocals and the accompaniment over the model's 512
bins, and the waveforms of the vocals and the accompaniment (``separation/cache.py``: the
:class:`~separation.cache.Cache` and its layout). ``export`` writes a split as stems folders for
``inference.py`` and ``evaluate.py``; ``synthesize`` writes the built-in dataset
(``separation/synth.py``).

Training then reads batches of patches from the cache through :class:`PatchSampler` (NumPy only;
``pytorch_twin/train_torch.py`` uses it as it is), or through ``DataGenerator``, the same sampler as
a ``keras.utils.PyDataset`` for ``model.fit``::

    cache = Cache("cache/mir1k")
    train = DataGenerator(cache, tracks=cache.names(split="train"), batch_size=16,
                          augmentation=Augmentation(remix=True), workers=2)
    val = DataGenerator(cache, tracks=cache.names(split="validation"), batch_size=16, mode="validation")
    model.fit(train, validation_data=val, epochs=...)

The augmentations, and the two ways of mixing a batch that they choose between (from magnitudes
or from waveforms), are ``separation/augment.py``'s.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import numpy as np

from separation import datasets
from separation.audio import normalize_patches
from separation.augment import Augmentation, draw_starts, drop_cells, mix_magnitudes, mix_waveforms
from separation.cache import Cache, TrackSet, export, prepare
from separation.cli import ArgumentParser, bounded, run_cli
from separation.errors import UserError

#: Hop between validation patches, in frames: 32 of 128 is the 75% overlap of the original generator.
VALIDATION_HOP = 32


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class PatchSampler:
    """Batches of ``(mixture, vocals)`` magnitude patches from a :class:`~separation.cache.Cache`.

    Arguments: ``cache`` (a Cache or its path); ``tracks``, names of the tracks to draw from
    (default all); ``batch_size``; ``mode``, ``"train"`` or ``"validation"``; ``steps_per_epoch``
    (train default: as many patches as the tracks hold, non-overlapping; validation: caps the
    number of batches by taking evenly spread patches); ``seed``; ``augmentation``, an
    :class:`~separation.augment.Augmentation` (training only; default none); ``**kwargs`` go to
    the next class's ``__init__`` (``DataGenerator``: ``PyDataset``'s ``workers``,
    ``use_multiprocessing``, ``max_queue_size``). All but ``cache`` and ``tracks`` are
    keyword-only; a value out of its bounds raises ``ValueError``.

    Batch ``i`` is ``(mixture, vocals)``, each ``(B, n_bins, patch_frames, 1)`` float32 (the last
    validation batch may be shorter).

    Sampling. Training: each batch draws ``B`` tracks uniformly with replacement, then a uniform
    random offset of ``patch_frames`` frames within each, so every track counts the same whatever
    its length. Batch ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng((seed, e, i))``:
    it does not depend on which worker makes it or in which order; :meth:`on_epoch_end` advances
    ``e`` (Keras' ``fit`` also calls it once before the first epoch, which therefore draws with
    ``e = 1``). Validation: every track cut into patches at a hop of :data:`VALIDATION_HOP`
    frames (plus one ending at the track's last frame), in a fixed order: identical every epoch.

    Short tracks. A track shorter than a patch starts its patch, padded at its end with zeros
    (zero magnitude is silence in both input and target, so the padding asks nothing of the
    model). With ``augmentation.short_tracks`` ``"place"`` or ``"fill"`` it lies at a random offset
    inside the patch instead: the plan's offset is then negative, the track starting ``-offset``
    frames into the patch (:func:`~separation.augment.draw_starts`); ``"fill"`` also continues a
    short accompaniment to the patch's end (:func:`~separation.augment.fill_accompaniment`).

    Normalisation. Magnitudes stay linear, since the model's output is mask * input and input and
    target must share a domain: :func:`audio.normalize_patches` divides each mixture patch and its
    vocals patch by the mixture patch's peak, so the target is still ``ideal mask * input``.

    Mixing. Each batch is mixed by one of :mod:`separation.augment`'s strategies, chosen once
    here: :func:`~separation.augment.mix_waveforms` when the augmentation works on waveforms, else
    :func:`~separation.augment.mix_magnitudes` (which, without augmentation, reads the cached
    mixture and vocals). With a mixing setting the vocals come only from tracks whose vocals are
    not silent (drawn uniformly, or, with ``augmentation.voice_share``, from ``voice_tracks`` with
    that probability and from the others otherwise), and the accompaniment from
    ``augmentation.accompaniment_tracks`` (default: all).
    """

    def __init__(self, cache, tracks=None, *, batch_size: int = 64, mode: str = "train",
                 steps_per_epoch: int | None = None, seed: int = 0, augmentation: Augmentation | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        augmentation = Augmentation() if augmentation is None else augmentation
        if mode not in ("train", "validation"):
            raise ValueError(f"mode must be 'train' or 'validation', got {mode!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if mode == "validation" and augmentation.active:
            raise ValueError("augmentations (instrumental_share, vocal_level, effects, remix, gain, input_dropout, "
                             "short_tracks, pitch, tempo) are for training; validation mode takes none")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        names = self.cache.names() if tracks is None else [tracks] if isinstance(tracks, str) else list(tracks)
        if not names:
            raise UserError(f"{self.cache.path}: no tracks to draw patches from")
        self.tracks = TrackSet(self.cache, names)
        self.params = self.cache.params
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        self.augmentation = augmentation
        if augmentation.waveform and self.cache.format < 2:
            self.cache.wave(names[0], "accompaniment")  # raises the format message
        self._vocal_tracks = np.array([i for i, t in enumerate(self.tracks.entries) if not t.get("vocals_silent")],
                                      dtype=np.int64)
        if augmentation.mixing and not len(self._vocal_tracks):
            raise UserError(f"{self.cache.path}: none of the training tracks has vocals to mix "
                            "(all are silent, e.g. instrumental); add tracks with vocals")
        self._voice_groups = self._voices(augmentation)
        mix = mix_waveforms if augmentation.waveform else mix_magnitudes
        self._mix = functools.partial(mix, self.tracks, augmentation, self._accompaniment(augmentation))
        self.epoch = 0
        if mode == "train":
            patches = int(np.ceil(self.tracks.frames / self.params.patch_frames).sum())
            self._steps = steps_per_epoch or max(1, math.ceil(patches / self.batch_size))
            self._patches = None
        else:
            self._patches = self._validation_patches(steps_per_epoch)
            self._steps = math.ceil(len(self._patches) / self.batch_size)

    def _accompaniment(self, augmentation: Augmentation) -> np.ndarray:
        """Positions of the tracks the accompaniment is drawn from (``accompaniment_tracks``; default all)."""
        names = augmentation.accompaniment_tracks
        if names is None:
            return np.arange(len(self.tracks))
        position = {t["name"]: i for i, t in enumerate(self.tracks.entries)}
        missing = sorted(set(names) - set(position))
        if missing or not names:
            raise ValueError(f"accompaniment_tracks must be some of the training tracks; not among them: "
                             f"{', '.join(missing) or '(none given)'}")
        return np.array([position[n] for n in names])

    def _voices(self, augmentation: Augmentation) -> tuple[np.ndarray, np.ndarray] | None:
        """``voice_tracks``' vocal tracks and the other vocal tracks (positions), or None (no ``voice_share``)."""
        if augmentation.voice_tracks is None:
            return None
        chosen = set(augmentation.voice_tracks)
        inside = np.array([i for i in self._vocal_tracks if self.tracks.entries[i]["name"] in chosen], dtype=np.int64)
        outside = np.setdiff1d(self._vocal_tracks, inside)
        if not len(inside) and augmentation.voice_share > 0:
            raise UserError(f"{self.cache.path}: none of the chosen voice tracks ({', '.join(sorted(chosen)[:3])}...) "
                            "is a training track with vocals")
        if not len(outside) and augmentation.voice_share < 1:
            raise UserError(f"{self.cache.path}: every training track with vocals is one of the chosen voice tracks, "
                            "so a voice share below 1 has no other voices to draw")
        return inside, outside

    def _validation_patches(self, steps: int | None) -> np.ndarray:
        """``(n, 2)`` array of (track index, offset): a hop of VALIDATION_HOP frames plus the last patch."""
        rows = []
        for i, last in enumerate(self.tracks.max_offset):
            offsets = list(range(0, int(last) + 1, VALIDATION_HOP))
            if offsets[-1] != last:
                offsets.append(int(last))
            rows.extend((i, o) for o in offsets)
        patches = np.array(rows, dtype=np.int64)
        if steps is not None and steps * self.batch_size < len(patches):
            keep = np.unique(np.linspace(0, len(patches) - 1, steps * self.batch_size).round().astype(int))
            patches = patches[keep]
        return patches

    def __len__(self) -> int:
        return self._steps

    def on_epoch_end(self):
        """Advance the epoch, so the next training batches are new draws (validation stays fixed)."""
        self.epoch += 1

    def plan(self, index: int) -> dict:
        """What batch ``index`` of the current epoch holds, before reading any audio.

        ``{"track", "offset"}`` (arrays of length B: positions in ``self.tracks`` and frame
        offsets, negative where a short track is placed inside its patch), plus in training
        ``"rng"``, the generator the augmentations continue to draw from.
        """
        if not 0 <= index < self._steps:
            raise IndexError(f"batch {index} out of range (0..{self._steps - 1})")
        if self.mode == "validation":
            rows = self._patches[index * self.batch_size:(index + 1) * self.batch_size]
            return {"track": rows[:, 0], "offset": rows[:, 1]}
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self._voice_groups is not None:  # voice_share: from the chosen tracks with that probability
            inside, outside = self._voice_groups
            chosen = rng.random(self.batch_size) < self.augmentation.voice_share

            def pick(group):  # an empty group is never chosen (its share is 0 or 1)
                if not len(group):
                    return np.zeros(self.batch_size, np.int64)
                return group[rng.integers(len(group), size=self.batch_size)]

            track = np.where(chosen, pick(inside), pick(outside))
        elif self.augmentation.mixing:  # vocals only from tracks that have them
            track = self._vocal_tracks[rng.integers(len(self._vocal_tracks), size=self.batch_size)]
        else:
            track = rng.integers(len(self.tracks), size=self.batch_size)
        offset = draw_starts(self.tracks.frames[track], self.params.patch_frames, rng, self.augmentation.place)
        return {"track": track, "offset": offset, "rng": rng}

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        plan = self.plan(index)
        rng = plan.get("rng")  # None in validation, which takes no augmentation
        mixture, vocals = self._mix(plan["track"], plan["offset"], rng)
        mixture, vocals = normalize_patches(mixture, vocals)
        if self.augmentation.input_dropout:
            mixture, vocals = drop_cells(mixture, vocals, self.augmentation.input_dropout, rng)
        return mixture[..., None], vocals[..., None]


def __getattr__(name: str):
    """``DataGenerator``: :class:`PatchSampler` as a ``keras.utils.PyDataset``, made on first use.

    Keras is imported here, when ``data_generator.DataGenerator`` is first asked for, and not
    when the module is imported: the command line and the PyTorch twin never need it. The class
    is made once and kept in the module under its own name, so that Keras' worker processes can
    unpickle it by name.
    """
    if name != "DataGenerator":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import keras

    class DataGenerator(PatchSampler, keras.utils.PyDataset):
        """:class:`PatchSampler` as a ``keras.utils.PyDataset``, which ``model.fit`` takes.

        ``DataGenerator(cache, tracks=..., batch_size=16, augmentation=..., workers=2)``: every
        argument is PatchSampler's; ``workers``, ``use_multiprocessing`` and ``max_queue_size``
        go on to ``PyDataset.__init__``.
        """

    DataGenerator.__qualname__ = "DataGenerator"
    globals()["DataGenerator"] = DataGenerator
    return DataGenerator


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="data_generator.py",
        description="Step 1: make the built-in dataset, turn a dataset into a training cache, or export a split as stems.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    syn = sub.add_parser("synthesize", help="write the built-in synthetic dataset (stems layout, 44.1 kHz stereo)")
    syn.add_argument("--out", required=True, type=Path, help="output folder (gets train/ and test/)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--train", type=bounded(int, 1), default=24, help="number of training tracks (default 24)")
    syn.add_argument("--test", type=bounded(int, 0), default=6, help="number of test tracks (default 6)")
    syn.add_argument("--seconds", type=bounded(float, 0, low_open=True), default=30.0,
                     help="length of each track (default 30)")

    source = ArgumentParser(add_help=False)
    source.add_argument("--dataset", required=True, choices=datasets.DATASETS)
    source.add_argument("--root", required=True, type=Path, help="dataset folder")
    source.add_argument("--split", default=None, help="split to read (default all). stems: a split folder name; "
                        f"musdb/musdb-hq: {', '.join(datasets.MUSDB_SPLITS)}; mir1k: {', '.join(datasets.MIR1K_SPLITS)}; "
                        "instrumental: a split folder, or the split to call a folder without split folders (default train)")
    source.add_argument("--limit", type=bounded(int, 1), default=None, help="only the first N tracks (sorted by name)")
    source.add_argument("--strict", action="store_true", help="stop at an unreadable file instead of skipping it")
    source.add_argument("--quiet", action="store_true", help="no progress bar")

    prep = sub.add_parser("prepare", parents=[source], help="store mixture/vocals/accompaniment magnitudes in a cache")
    prep.add_argument("--cache", required=True, type=Path, help="cache folder (made if needed; resumed if it exists)")
    prep.add_argument("--unit", choices=datasets.UNITS, default="track",
                      help="mir1k: 'track' joins a song's clips (default), 'clip' keeps them apart")

    exp = sub.add_parser("export", parents=[source], help="write a split as a stems folder OUT/<track>/{mixture,vocals,accompaniment}.wav")
    exp.add_argument("--out", required=True, type=Path, help="output folder")
    exp.add_argument("--unit", choices=datasets.UNITS, default="track",
                     help="mir1k: 'clip' writes one folder per clip (Huang et al. evaluation), 'track' per song")
    return parser


def _synthesize(args) -> None:
    try:
        from separation import synth
    except ModuleNotFoundError as err:
        if err.name != "separation.synth":
            raise
        raise UserError("synth.py (the built-in dataset generator) is not in this checkout") from None
    synth.synthesize_dataset(args.out, seed=args.seed, n_train=args.train, n_test=args.test, seconds=args.seconds,
                             progress=True)
    print(f"wrote {args.train} train and {args.test} test tracks to {args.out}; next: "
          f"python data_generator.py prepare --dataset stems --root {args.out} --split train --cache cache/synth")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.command == "synthesize":
        _synthesize(args)
        return 0
    source = dict(split=args.split, unit=args.unit, limit=args.limit, strict=args.strict, progress=not args.quiet)
    if args.command == "prepare":
        s = prepare(args.dataset, args.root, args.cache, **source)
        cache = Cache(args.cache)
        hours = sum(t["seconds"] for t in cache.tracks) / 3600
        print(f"{args.cache}: added {len(s['added'])} track(s), {s['already']} already there; "
              f"cache holds {len(cache)} tracks ({hours:.2f} h)")
    else:
        s = export(args.dataset, args.root, args.out, **source)
        print(f"{args.out}: wrote {len(s['written'])} track(s), {s['already']} already there")
    if s["skipped"]:
        print(f"skipped {len(s['skipped'])} unreadable track(s): {', '.join(sorted(s['skipped']))}")
    if s.get("silent"):
        print(f"{len(s['silent'])} track(s) with silent vocals (kept): {', '.join(s['silent'])}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

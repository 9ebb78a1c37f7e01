"""Step 1 of the pipeline: datasets in, a magnitude cache out, 512x128 training patches from it.

Usage::

    python data_generator.py synthesize --out data/synth                # built-in dataset (synth.py)
    python data_generator.py prepare --dataset mir1k --root ../shared/data/mir1k --split train --cache cache/mir1k
    python data_generator.py prepare --dataset stems --root data/synth --cache cache/synth
    python data_generator.py prepare --dataset instrumental --root data/instrumental --split train --cache cache/mir1k
    python data_generator.py export --dataset mir1k --root ../shared/data/mir1k --split test --unit clip --out data/mir1k-test

``prepare`` reads each track (datasets.py), folds it to mono by averaging the channels
(:func:`audio.to_mono`), resamples it to 8192 Hz (soxr), and stores the STFT magnitudes of the
mixture, the vocals and the accompaniment over the model's 512 bins (:func:`audio.magnitude`),
and the mono 8192 Hz waveforms of the vocals and the accompaniment, which the waveform-domain
augmentations mix (:class:`PatchSampler`). Tracks of the ``instrumental`` dataset are streamed
(:func:`audio.stream_mono`): an hour-long file is never held whole, and only its accompaniment
is stored (its vocals are silent and its mixture is its accompaniment).
``train.py`` then reads batches through ``keras_data.DataGenerator`` (this module's
:class:`PatchSampler` as a ``keras.utils.PyDataset``)::

    cache = Cache("cache/mir1k")
    train = DataGenerator(cache, tracks=cache.names(split="train"), batch_size=16, remix=True, workers=2)
    val = DataGenerator(cache, tracks=cache.names(split="validation"), batch_size=16, mode="validation")
    model.fit(train, validation_data=val, epochs=...)

Run one prepare per cache folder at a time (two at once would overwrite each other's index).

Cache layout
------------
::

    <cache>/audio_params.json                   the AudioParams the cache was made with
    <cache>/index.json                          {"format", "params", "runs", "tracks", "skipped"}
    <cache>/tracks/<file>.mixture.npy           (n_bins, frames) float32 |STFT| of the mono mixture
    <cache>/tracks/<file>.vocals.npy            (n_bins, frames) float32, the target
    <cache>/tracks/<file>.accompaniment.npy     (n_bins, frames) float32, for the augmentations that remix
    <cache>/tracks/<file>.vocals.wave.npy       (samples,) float32 mono waveform at the cache's rate
    <cache>/tracks/<file>.accompaniment.wave.npy

Each ``tracks`` entry is ``{"name", "dataset", "split", "source", "file", "frames", "samples",
"seconds", "vocals_silent", "stored"}``; ``file`` is a filesystem-safe stem of the name and
``stored`` lists the arrays written (the parts above, the waveforms as ``vocals.wave`` and
``accompaniment.wave``). Vocals that are exactly zero (the ``instrumental`` dataset) are not
stored: :meth:`Cache.array` and :meth:`Cache.wave` read them as zeros, and a missing mixture as
the accompaniment. A track enters the index only once its arrays are written (each atomically),
and the index itself is rewritten atomically after every track, so an interrupted prepare
leaves a valid cache that the same command completes: tracks already in the index are skipped.
The arrays are opened with ``np.load(mmap_mode="r")`` only when a batch needs them.

Format 1 (before the waveforms; entries without ``stored``) is still read: it trains as before,
and the waveform options (``vocal_level``, ``effects``) refuse it with a one-line message to
prepare a new cache; ``prepare`` refuses to add tracks to it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import itertools
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from separation import datasets
from separation.audio import (
    DEFAULT_PARAMS,
    PARAMS_FILE,
    AudioError,
    AudioParams,
    magnitude,
    model_bins,
    n_frames,
    normalize_patches,
    resample,
    save_audio,
    stft,
    stream_mono,
    to_mono,
)
from separation.cli import ArgumentParser, UserError, atomic_output, atomic_write_text, bounded, run_cli

CACHE_FORMAT = 2
#: Formats :class:`Cache` reads; format 1 has magnitudes only (no waveforms).
READABLE_FORMATS = (1, 2)
INDEX_FILE = "index.json"
PARTS = ("mixture", "vocals", "accompaniment")
#: The waveforms stored beside the magnitudes (format 2), as ``<file>.<source>.wave.npy``.
WAVES = ("vocals", "accompaniment")
#: Frames per block when the magnitudes of a streamed track are computed from its waveform.
MAGNITUDE_BLOCK = 1024
#: Vocals whose peak (mono, 8192 Hz) stays below -60 dBFS are reported as silent (kept in the cache).
SILENT_VOCALS_PEAK = 1e-3
#: Hop between validation patches, in frames: 32 of 128 is the 75% overlap of the original generator.
VALIDATION_HOP = 32
#: Per-source gain range of the gain augmentation (Open-Unmix's choice).
GAIN_RANGE = (0.25, 1.25)
#: Largest ``pitch`` augmentation, in semitones: an octave either way (frequency ratio 1/2 to 2).
MAX_PITCH = 12.0
#: Memory maps kept open at once; each holds a file descriptor, and MIR-1K by clip has 3000 arrays.
MAX_OPEN_ARRAYS = 384
#: RMS below which a segment counts as silent for ``vocal_level`` (-80 dBFS): its level is left alone.
LEVEL_FLOOR = 1e-4


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


def _file_stem(name: str) -> str:
    """A filesystem-safe, collision-free file stem for a track name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "track"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the cache index ({err}); delete the cache folder and prepare again") from None
    if not isinstance(index, dict) or index.get("format") not in READABLE_FORMATS or not isinstance(index.get("tracks"), list):
        raise UserError(f"{path}: not a cache index of format {CACHE_FORMAT}; delete the cache folder and prepare again")
    return index


def _stored(entry: dict) -> list[str]:
    """The arrays a track entry has on disk (format 1 entries: the three magnitudes)."""
    return entry.get("stored", list(PARTS))


class Cache:
    """A prepared cache folder (see the module docstring for its layout).

    ``Cache(path)`` reads ``index.json`` and ``audio_params.json`` only; the magnitude arrays are
    memory-mapped on first use by :meth:`array`, at most :data:`MAX_OPEN_ARRAYS` at a time, so
    opening a cache of any size costs the index alone, and pages of the arrays live in the OS page
    cache (shared between worker processes, released under memory pressure), not in the heap.

    Attributes: ``path``; ``params`` (:class:`audio.AudioParams`); ``tracks``, a list of dicts
    with at least ``name``, ``split``, ``dataset``, ``frames`` (see the module docstring);
    ``skipped``, ``{name: reason}`` for tracks a prepare could not read.
    """

    def __init__(self, path):
        self.path = Path(path)
        index_path = self.path / INDEX_FILE
        if not index_path.is_file():
            raise UserError(
                f"{self.path}: not a prepared cache (no {INDEX_FILE}); make one with: "
                f"python data_generator.py prepare --dataset ... --root ... --cache {self.path}"
            )
        index = _read_index(index_path)
        self.format = index["format"]
        self.params = AudioParams.load(self.path / PARAMS_FILE)
        self.tracks: list[dict] = index["tracks"]
        self.skipped: dict[str, str] = index.get("skipped", {})
        self._by_name = {t["name"]: t for t in self.tracks}
        self._open: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.tracks)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, {len(self.tracks)} tracks)"

    def names(self, split: str | None = None, dataset: str | None = None) -> list[str]:
        """Names of the cached tracks, optionally only those of one split and/or dataset."""
        return [
            t["name"] for t in self.tracks
            if (split is None or t["split"] == split) and (dataset is None or t["dataset"] == dataset)
        ]

    def track(self, name: str) -> dict:
        """The index entry of one track."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UserError(f"{self.path}: no track named {name!r} in the cache") from None

    def array(self, name: str, part: str) -> np.ndarray:
        """The ``(n_bins, frames)`` float32 magnitude of ``part`` (mixture/vocals/accompaniment), memory-mapped.

        Vocals that were not stored (silent) read as zeros, a mixture not stored as the accompaniment.
        """
        entry = self.track(name)
        if part not in _stored(entry):
            if part == "mixture":
                return self.array(name, "accompaniment")
            return np.broadcast_to(np.zeros((1, 1), dtype=np.float32), (self.params.n_bins, entry["frames"]))
        return self._load(name, part)

    def wave(self, name: str, source: str) -> np.ndarray:
        """The ``(samples,)`` float32 mono waveform of ``source`` (vocals/accompaniment), memory-mapped.

        Silent vocals that were not stored read as zeros. A format-1 cache has no waveforms: UserError.
        """
        entry = self.track(name)
        if self.format < 2:
            raise UserError(f"{self.path}: a cache of format {self.format} holds no waveforms (the waveform "
                            "augmentations need them); re-run prepare into a new --cache folder")
        part = f"{source}.wave"
        if part not in _stored(entry):
            return np.broadcast_to(np.zeros(1, dtype=np.float32), (entry["samples"],))
        return self._load(name, part)

    def _load(self, name: str, part: str) -> np.ndarray:
        key = (name, part)
        arr = self._open.get(key)
        if arr is not None:
            self._open.move_to_end(key)
            return arr
        path = self.path / "tracks" / f"{self.track(name)['file']}.{part}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot open ({err}); run prepare again to rebuild it") from None
        self._open[key] = arr
        if len(self._open) > MAX_OPEN_ARRAYS:
            self._open.popitem(last=False)
        return arr

    def __getstate__(self):
        # worker processes re-open the memory maps themselves instead of receiving copies
        state = self.__dict__.copy()
        state["_open"] = collections.OrderedDict()
        return state


# --------------------------------------------------------------------------------------------
# prepare / export
# --------------------------------------------------------------------------------------------


def _loaded_tracks(tracks, strict: bool, progress: bool, desc: str, skipped: dict):
    """Yield ``(track, audio, sr)`` for each track, skipping unreadable ones with a warning.

    A file that cannot be read is named on stderr and recorded in ``skipped``; with ``strict``
    it stops the run with a :class:`UserError` instead.
    """
    for track in _progress(tracks, desc, progress):
        try:
            audio, sr = track.load()
        except AudioError as err:
            _skip(track, err, strict, skipped)
            continue
        yield track, audio, sr


def _progress(tracks, desc: str, progress: bool):
    """The tracks, with a progress bar on stderr naming the current one (none without ``progress``)."""
    from tqdm import tqdm

    bar = tqdm(tracks, desc=desc, unit="track", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for track in bar:
        bar.set_postfix_str(track.name[:40], refresh=False)
        yield track


def _skip(track, err: AudioError, strict: bool, skipped: dict) -> None:
    """An unreadable track: a UserError with ``strict``, else a warning and an entry in ``skipped``."""
    from tqdm import tqdm

    if strict:
        raise UserError(f"{err} (refused because of --strict; drop --strict to skip it)") from None
    tqdm.write(f"warning: skipping track {track.name}: {err}", file=sys.stderr)
    skipped[track.name] = str(err)


def _check_cache_folder(cache: Path, params: AudioParams) -> dict:
    """Open or start the cache at ``cache``; refuse one made with other audio parameters or an older format."""
    index_path = cache / INDEX_FILE
    if index_path.is_file():
        AudioParams.load(cache / PARAMS_FILE).check_same(
            params, f"cache {cache}", "prepare into a new --cache folder, or delete this one"
        )
        index = _read_index(index_path)
        if index["format"] != CACHE_FORMAT:
            raise UserError(f"{cache}: a cache of format {index['format']} (no waveforms); this version writes "
                            f"format {CACHE_FORMAT}: prepare into a new --cache folder")
        return index
    if cache.exists() and (not cache.is_dir() or any(cache.iterdir())):
        raise UserError(f"{cache}: exists and is not a cache; choose a new or empty --cache folder")
    try:
        (cache / "tracks").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{cache}: cannot create the cache folder ({err.strerror})") from None
    params.save(cache / PARAMS_FILE)
    # an index from the start: a run stopped before its first track still leaves a (empty) cache
    index = {"format": CACHE_FORMAT, "params": params.to_dict(), "runs": [], "tracks": [], "skipped": {}}
    atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    return index


def _select(tracks: list, limit: int | None) -> list:
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        tracks = tracks[:limit]
    return tracks


def prepare(dataset: str, root, cache, *, split: str | None = None, unit: str = "track", limit: int | None = None,
            strict: bool = False, progress: bool = True, params: AudioParams = DEFAULT_PARAMS) -> dict:
    """Add the magnitudes of a dataset split to the cache folder ``cache`` (made if needed).

    Tracks already in the cache are skipped, so re-running resumes an interrupted prepare.
    ``limit`` keeps the first N tracks (sorted by name). Returns a summary:
    ``{"added": [names], "already": int, "skipped": {name: reason}, "silent": [names]}``.
    """
    cache = Path(cache).expanduser()
    tracks = _select(datasets.find_tracks(dataset, root, split, unit), limit)
    index = _check_cache_folder(cache, params)
    index_path = cache / INDEX_FILE
    for stale in (cache / "tracks").glob(".*.part*"):  # temporary files of a killed run
        stale.unlink(missing_ok=True)

    run = {"dataset": dataset, "root": str(Path(root).resolve()), "split": split, "unit": unit}
    if run not in index["runs"]:
        index["runs"].append(run)
    entries = {t["name"]: t for t in index["tracks"]}
    todo, already = [], 0
    for track in tracks:
        entry = entries.get(track.name)
        if entry is not None and (entry["dataset"], entry["split"]) != (track.dataset, track.split):
            raise UserError(
                f"{cache}: already holds a track named {track.name!r} from {entry['dataset']}/{entry['split']}; "
                "prepare this split into another --cache folder"
            )
        files_ok = entry is not None and all(
            (cache / "tracks" / f"{entry['file']}.{part}.npy").is_file() for part in _stored(entry)
        )
        if files_ok:
            already += 1
        else:
            todo.append(track)

    summary = {"added": [], "already": already, "skipped": {}, "silent": []}
    streamed = [t for t in todo if t.vocals_silent]
    loaded = _loaded_tracks([t for t in todo if not t.vocals_silent], strict, progress, "prepare", summary["skipped"])
    for track, written in itertools.chain(_streamed_tracks(streamed, cache, params, strict, progress, summary["skipped"]),
                                          ((t, _write_loaded(t, a, sr, cache, params)) for t, a, sr in loaded)):
        entries[track.name] = {
            "name": track.name, "dataset": track.dataset, "split": track.split, "source": track.source,
            "file": _file_stem(track.name), **written,
            "seconds": round(written["samples"] / params.sample_rate, 3),
        }
        index["skipped"].pop(track.name, None)
        index["tracks"] = sorted(entries.values(), key=lambda t: t["name"])
        atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
        summary["added"].append(track.name)
    index["skipped"].update(summary["skipped"])
    index["tracks"] = sorted(entries.values(), key=lambda t: t["name"])
    atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    # silent vocals are news for a dataset that has vocals, not for instrumental music
    summary["silent"] = [t["name"] for t in index["tracks"] if t["vocals_silent"] and t["dataset"] != "instrumental"]
    return summary


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _write_loaded(track, audio: dict, sr: int, cache: Path, params: AudioParams) -> dict:
    """Store the magnitudes and waveforms of a track read whole; return its entry's sizes and flags."""
    mono = {part: resample(to_mono(audio[part]), sr, params.sample_rate)[:, 0] for part in PARTS}
    stem = _file_stem(track.name)
    stored = [p for p in PARTS if p != "vocals" or mono["vocals"].any()]  # all-zero vocals are not stored
    for part in stored:
        _save_array(cache / "tracks" / f"{stem}.{part}.npy", magnitude(mono[part], params))
    for source in WAVES:
        if source in stored:
            _save_array(cache / "tracks" / f"{stem}.{source}.wave.npy", mono[source])
    samples = len(mono["mixture"])
    return {"frames": n_frames(samples, params), "samples": samples,
            "vocals_silent": bool(np.abs(mono["vocals"]).max() < SILENT_VOCALS_PEAK),
            "stored": stored + [f"{s}.wave" for s in WAVES if s in stored]}


def _streamed_tracks(tracks, cache: Path, params: AudioParams, strict: bool, progress: bool, skipped: dict):
    """Yield ``(track, entry fields)`` for tracks with silent vocals, each read in pieces.

    The file is streamed (:func:`audio.stream_mono`) into ``<file>.accompaniment.wave.npy``, then
    its magnitudes are computed from that memory-mapped waveform :data:`MAGNITUDE_BLOCK` frames at
    a time: memory stays bounded whatever the file's length. Unreadable files are skipped with a
    warning (or stop the run with ``strict``), as in :func:`_loaded_tracks`.
    """
    for track in _progress(tracks, "prepare", progress):
        stem = _file_stem(track.name)
        wave_path = cache / "tracks" / f"{stem}.accompaniment.wave.npy"
        try:
            with atomic_output(wave_path) as tmp:
                samples = _write_stream(tmp, stream_mono(track.files[0][1], params.sample_rate))
        except AudioError as err:
            _skip(track, err, strict, skipped)
            continue
        wave = np.load(wave_path, mmap_mode="r")
        with atomic_output(cache / "tracks" / f"{stem}.accompaniment.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(params.n_bins, n_frames(samples, params)))
            magnitude_blocks(wave, params, out)
            out.flush()
            del out
        yield track, {"frames": n_frames(samples, params), "samples": samples, "vocals_silent": True,
                      "stored": ["accompaniment", "accompaniment.wave"]}


def _write_stream(path: Path, blocks) -> int:
    """Write 1-D float32 blocks as one ``.npy`` of unknown length; return the number of samples.

    The header is written for length 0, and rewritten with the true length at the end: numpy
    pads a header so that its shape can grow in place (the assert checks it did).
    """
    def header(n: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
        return buf.getvalue()

    total = 0
    with open(path, "wb") as f:
        f.write(header(0))
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            total += len(block)
        final = header(total)
        assert len(final) == len(header(0))
        f.seek(0)
        f.write(final)
    return total


def magnitude_blocks(wave: np.ndarray, params: AudioParams, out: np.ndarray, block: int = MAGNITUDE_BLOCK) -> None:
    """Fill ``out`` ``(n_bins, n_frames(len(wave)))`` with :func:`audio.magnitude` of ``wave``, ``block`` frames at a time.

    Each block's STFT is taken on the samples that its frames' windows cover, starting a whole
    number of hops before its first frame, so its frames are the full signal's frames (same
    samples, same window, same FFT: equal to the one-shot magnitude, tested).
    """
    hop, half = params.hop_length, params.n_fft // 2
    lead = -(-half // hop)  # frames of context before a block: its first window starts >= half earlier
    total = out.shape[1]
    for first in range(0, total, block):
        last = min(first + block, total)
        before = min(lead, first)
        piece = wave[(first - before) * hop:(last - 1) * hop + half]
        out[:, first:last] = magnitude(np.asarray(piece), params)[:, before:before + last - first]


def export(dataset: str, root, out, *, split: str | None = None, unit: str = "track", limit: int | None = None,
           strict: bool = False, progress: bool = True) -> dict:
    """Write a dataset split as a stems folder ``out/<track>/{mixture,vocals,accompaniment}.wav``.

    Audio is written as read (the file's rate and channels), 16-bit PCM, or 32-bit float where a
    signal exceeds full scale (a MIR-1K mixture = left + right can). Complete track folders are
    skipped, so an interrupted export resumes. Returns ``{"written", "already", "skipped"}``.
    """
    out = Path(out).expanduser()
    tracks = _select(datasets.find_tracks(dataset, root, split, unit), limit)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the output folder ({err.strerror})") from None
    summary = {"written": [], "already": 0, "skipped": {}}
    todo = []
    for track in tracks:
        if all((out / track.name / f"{part}.wav").is_file() for part in PARTS):
            summary["already"] += 1
        else:
            todo.append(track)
    for track, audio, sr in _loaded_tracks(todo, strict, progress, "export", summary["skipped"]):
        folder = out / track.name
        folder.mkdir(exist_ok=True)
        for part in PARTS:
            loud = np.abs(audio[part]).max() > 1.0
            save_audio(folder / f"{part}.wav", audio[part], sr, subtype="FLOAT" if loud else None)
        summary["written"].append(track.name)
    return summary


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def _sample(x: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """``x`` (B, n_bins, frames) read at fractional positions ``pos`` (B, N) along ``axis`` (1 or 2).

    Linear interpolation between neighbours; zero where a position lies beyond the last index
    (as past a track's end). Returns (B, N, frames) for axis 1, (B, n_bins, N) for axis 2, float32.
    """
    size = x.shape[axis]
    lower = np.minimum(np.floor(pos), size - 1).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    shape = (len(x), -1, 1) if axis == 1 else (len(x), 1, -1)
    weight = (pos - lower).astype(np.float32).reshape(shape)
    inside = (pos <= size - 1).reshape(shape)
    below = np.take_along_axis(x, lower.reshape(shape), axis)
    above = np.take_along_axis(x, upper.reshape(shape), axis)
    return ((below + weight * (above - below)) * inside).astype(np.float32, copy=False)


def pitch_shift(patches: np.ndarray, ratios) -> np.ndarray:
    """Magnitude patches (B, n_bins, frames) shifted in pitch by the frequency ratios ``ratios`` (B,).

    The frequency axis is stretched: ``new[k] = old[k / r]``, linearly interpolated between bins
    and zero where ``k / r`` lies beyond the last bin. ``r = 2 ** (semitones / 12)``; ``r > 1``
    raises the pitch. Returns a new (B, n_bins, frames) float32 array.
    """
    pos = np.arange(patches.shape[1])[None, :] / np.asarray(ratios, dtype=np.float64)[:, None]
    return _sample(patches, pos, axis=1)


def stretch_frames(frames: int, ratios) -> int:
    """How many source frames :func:`time_stretch` reads to make ``frames`` frames at the ``ratios`` (B,)."""
    return int(np.floor((frames - 1) * np.max(ratios))) + 2


def time_stretch(source: np.ndarray, ratios, frames: int) -> np.ndarray:
    """``frames`` frames of each patch of ``source`` (B, n_bins, L) played at the tempo ratios ``ratios`` (B,).

    ``new[:, t] = old[:, t * r]``, linearly interpolated between frames, so ``r > 1`` is faster
    (``frames`` output frames cover about ``frames * r`` source frames) and ``r < 1`` slower; the
    pitch is kept. Zero where ``t * r`` lies beyond the last source frame; :func:`stretch_frames`
    gives the ``L`` that covers every position. Returns (B, n_bins, frames) float32.
    """
    pos = np.arange(frames)[None, :] * np.asarray(ratios, dtype=np.float64)[:, None]
    return _sample(source, pos, axis=2)


class PatchSampler:
    """Batches of ``(mixture, vocals)`` magnitude patches from a :class:`Cache`; the logic of ``DataGenerator``.

    ``keras_data.DataGenerator`` is this class mixed into ``keras.utils.PyDataset`` (in a module
    of its own, so that importing this one does not import Keras); ``PatchSampler`` itself needs
    only numpy.

    Arguments: ``cache`` (a :class:`Cache` or its path); ``tracks``, names of the tracks to draw
    from (default all); ``batch_size``; ``mode``, ``"train"`` or ``"validation"``;
    ``steps_per_epoch`` (train default: as many patches as the tracks hold, non-overlapping;
    validation: caps the number of batches by taking evenly spread patches); ``seed``;
    ``remix``, ``gain``, ``pitch``, ``tempo`` and ``input_dropout``, training augmentations
    (below); ``instrumental_share``, ``vocal_level``, ``effects`` and ``accompaniment_tracks``,
    the mixing options (further below); ``**kwargs`` go to ``PyDataset.__init__`` (``workers``,
    ``use_multiprocessing``, ``max_queue_size``). All but ``cache`` and ``tracks`` are keyword-only; a value out of its
    bounds, or options that contradict each other, raise ``ValueError``.

    Batches are ``(mixture, vocals)``, each ``(B, n_bins, patch_frames, 1)`` float32.

    Sampling. Training: each batch draws ``B`` tracks uniformly with replacement, then a uniform
    random offset of ``patch_frames`` frames within each, so every track counts the same whatever
    its length (stratified per track, as in the original PyTorch work). Batch ``i`` of epoch
    ``e`` is drawn from ``numpy.random.default_rng((seed, e, i))``: it does not depend on which
    worker makes it or in which order; :meth:`on_epoch_end` advances ``e`` (Keras' ``fit`` also
    calls it once before the first epoch, which therefore draws with ``e = 1``). Validation: every
    track cut into patches at a hop of :data:`VALIDATION_HOP` frames (plus one ending at the
    track's last frame), in a fixed order: identical every epoch.

    Padding. A track shorter than a patch (a short clip) is padded at its end with zeros (zero
    magnitude is silence in both input and target, so the padding asks nothing of the model).

    Normalisation. Magnitudes stay linear (the model's output is mask * input, so input and target
    must share a domain). :func:`audio.normalize_patches` divides each mixture patch and its vocals
    patch by the mixture patch's peak: the input peaks at 1 whatever the song's loudness, and the
    target is the same linear magnitude on the same scale, i.e. still ``ideal mask * input``.

    Augmentations (training only; validation refuses them so it stays comparable across runs).
    The cache holds magnitudes, not the complex STFT, so a new mixture of a vocals patch ``V`` and
    an accompaniment patch ``A`` is approximated by ``sqrt(V**2 + A**2)``: the expected magnitude
    (in power) of the sum of two sources with independent phases. It is exact where one source
    dominates a bin (most bins) and misses the interference where both are comparable, where the
    true ``|V + A|`` fluctuates around it; the plain sum ``V + A`` would overestimate every such
    bin. It also keeps ``V <= mixture``, so the ideal mask stays in [0, 1]. Storing the complex
    STFT would make the remix exact at 5/3 of the disk space; the magnitudes were preferred.

    - ``remix``: every patch's vocals are mixed with the accompaniment of a random track (any,
      itself included) at a random offset.
    - ``gain``: vocals and accompaniment each scaled by a gain uniform in :data:`GAIN_RANGE`
      before mixing (a common gain would be undone by the normalisation).
    - ``pitch`` (semitones, at most :data:`MAX_PITCH`): every patch's vocals are shifted in pitch
      by a random amount uniform in [-pitch, +pitch] semitones, approximated on the magnitudes by
      stretching the frequency axis by ``r = 2 ** (u / 12)`` (:func:`pitch_shift`: ``new[k] =
      V[k / r]``, linear between bins; a shift down leaves the top bins at zero, a shift up drops
      what moves past the last bin). Everything moves with the pitch: the partials, but also the
      formants (the spectral envelope), and each partial's peak is widened or narrowed by ``r``;
      this is not a formant-preserving shift, so large values make unnatural, "chipmunk" or
      "giant" voices. With ``tempo`` it hurt on MIR-1K in this project's ablation (figures in
      ``pretrained/README.md``).
    - ``tempo`` (a fraction below 1): every patch's vocals are time-stretched by a random factor
      ``r`` uniform in [1 - tempo, 1 + tempo] (:func:`time_stretch`): the frames from the
      patch's offset on are read, about ``patch_frames * r`` of them (zero past the track's end,
      as padding), and linearly interpolated onto ``patch_frames`` frames; ``r > 1`` is faster.
      Interpolating magnitudes between frames smears onsets a little; the pitch is kept.
    - ``input_dropout`` (probability p): dropout on the model's input, the coursework's
      regulariser, here at the finest grain: each time-frequency cell of the normalised input is
      zeroed with probability p, without the usual 1/(1-p) rescaling, which would break the
      shared domain. The target is zeroed at the same cells: the model's output there is
      mask * 0 = 0 whatever it does, so this only keeps the loss from counting an error nobody
      can fix; the model learns to fill in from the neighbouring cells.

    ``pitch`` and ``tempo`` change the vocals alone, so the mixture is rebuilt from them and the
    accompaniment as in ``remix``; the order is: read the vocals (``tempo``), ``pitch``, then
    ``remix``'s accompaniment, ``gain``, and the mix. Every draw comes from the batch's generator
    (``plan(index)["rng"]``), so batches stay a function of (seed, epoch, index), and each
    option draws only when on: a run without them gets the batches it always had.

    Mixing options (training only; any of them turns on the mixing mode, in which the vocals
    come only from tracks whose vocals are not silent and the accompaniment from a random track
    of all of them, instrumental ones included, at a random offset, as ``remix``):

    - ``instrumental_share`` (a fraction in [0, 1]): each patch has silent vocals with this
      probability: its mixture is the accompaniment alone and its target is zero (the model
      learns to let nothing through from music without a voice).
    - ``vocal_level`` ``(lo, hi)`` in dB: each patch's vocals are scaled so that their RMS over
      the segment is ``L`` dB above the accompaniment's, ``L`` uniform in [lo, hi] (the RMS is
      taken over the samples inside the track, not its zero padding; where either is below
      :data:`LEVEL_FLOOR` the vocals keep their level). Replaces ``gain``.
    - ``accompaniment_tracks``: names of training tracks to draw the accompaniment from (default:
      all of them), e.g. only the instrumental music.
    - ``effects``: names from ``production.EFFECTS`` (reverb, compressor, ...) applied to each
      patch's vocal waveform by ``production.produce`` with settings drawn from the batch's
      generator. The target is the processed vocals.

    ``vocal_level`` and ``effects`` work on waveforms (a format-2 cache): each patch reads the
    vocals' segment of ``patch_frames * hop_length`` samples from its frame offset and the
    accompaniment's from a random sample offset (zero past a track's end), processes the
    vocals, mixes, and takes :func:`audio.stft` of mixture and vocals (first ``patch_frames``
    frames, ``n_bins`` bins); this is exact, where the magnitude remix above approximates. The
    effects see the segment alone (a reverb starts at its first sample). ``pitch`` and
    ``tempo`` (magnitude approximations) are refused in this mode; use the ``pitch`` effect.
    The draws, in order: the patches' tracks and offsets, the silent patches, the
    accompaniment's tracks and offsets, the levels (or gains), then each patch's effects.
    """

    def __init__(self, cache, tracks=None, *, batch_size: int = 64, mode: str = "train",
                 steps_per_epoch: int | None = None, seed: int = 0, remix: bool = False, gain: bool = False, input_dropout: float = 0.0,
                 pitch: float = 0.0, tempo: float = 0.0, instrumental_share: float | None = None,
                 vocal_level: tuple[float, float] | None = None, effects=(), accompaniment_tracks=None, **kwargs):
        super().__init__(**kwargs)
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        if mode not in ("train", "validation"):
            raise ValueError(f"mode must be 'train' or 'validation', got {mode!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        if not 0.0 <= pitch <= MAX_PITCH:  # also refuses NaN
            raise ValueError(f"pitch must be in [0, {MAX_PITCH:g}] semitones, got {pitch}")
        if not 0.0 <= tempo < 1.0:
            raise ValueError(f"tempo must be in [0, 1) (a fraction of the tempo), got {tempo}")
        effects = tuple(effects or ())
        mixing = (instrumental_share is not None or vocal_level is not None or bool(effects)
                  or accompaniment_tracks is not None)
        if mode == "validation" and (remix or gain or input_dropout or pitch or tempo or mixing):
            raise ValueError("augmentations (instrumental_share, vocal_level, effects, remix, gain, input_dropout, "
                            "pitch, tempo) are for training; validation mode takes none")
        self._check_mixing(instrumental_share, vocal_level, effects, gain, pitch, tempo)
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        names = self.cache.names() if tracks is None else [tracks] if isinstance(tracks, str) else list(tracks)
        if not names:
            raise UserError(f"{self.cache.path}: no tracks to draw patches from")
        self.entries = [self.cache.track(n) for n in names]  # raises for unknown names
        self.params = self.cache.params
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        self.remix = bool(remix)
        self.gain = bool(gain)
        self.input_dropout = float(input_dropout)
        self.pitch = float(pitch)
        self.tempo = float(tempo)
        self.instrumental_share = instrumental_share
        self.vocal_level = None if vocal_level is None else tuple(map(float, vocal_level))
        self.effects = effects
        self.mixing = mixing
        self.waveform = vocal_level is not None or bool(effects)
        if self.waveform and self.cache.format < 2:
            self.cache.wave(self.entries[0]["name"], "accompaniment")  # raises the format message
        self._vocal_tracks = np.array([i for i, t in enumerate(self.entries) if not t.get("vocals_silent")], dtype=np.int64)
        self._accompaniment_tracks = np.arange(len(self.entries))
        if accompaniment_tracks is not None:
            position = {t["name"]: i for i, t in enumerate(self.entries)}
            missing = sorted(set(accompaniment_tracks) - set(position))
            if missing or not accompaniment_tracks:
                raise ValueError(f"accompaniment_tracks must be some of the training tracks; not among them: "
                                f"{', '.join(missing) or '(none given)'}")
            self._accompaniment_tracks = np.array([position[n] for n in accompaniment_tracks])
        if mixing and not len(self._vocal_tracks):
            raise UserError(f"{self.cache.path}: none of the training tracks has vocals to mix "
                            "(all are silent, e.g. instrumental); add tracks with vocals")
        self._samples = np.array([t.get("samples", 0) for t in self.entries])
        self.epoch = 0
        frames = np.array([t["frames"] for t in self.entries])
        self._max_offset = np.maximum(frames - self.params.patch_frames, 0)
        if mode == "train":
            patches = int(np.ceil(frames / self.params.patch_frames).sum())
            self._steps = steps_per_epoch or max(1, math.ceil(patches / self.batch_size))
            self._patches = None
        else:
            self._patches = self._validation_patches(steps_per_epoch)
            self._steps = math.ceil(len(self._patches) / self.batch_size)

    @staticmethod
    def _check_mixing(share, level, effects, gain, pitch, tempo) -> None:
        """Refuse bad or conflicting mixing options (see the class docstring)."""
        if share is not None and not 0.0 <= share <= 1.0:  # also refuses NaN
            raise ValueError(f"instrumental_share must be in [0, 1], got {share}")
        if level is not None:
            if len(level) != 2 or not all(math.isfinite(v) for v in level) or level[0] > level[1]:
                raise ValueError(f"vocal_level must be (low, high) dB with low <= high, got {tuple(level)}")
            if gain:
                raise ValueError("vocal_level sets the vocal-to-accompaniment level; drop gain")
        if effects:
            known = production_effects()
            unknown = [e for e in effects if e not in known]
            if unknown:
                raise ValueError(f"unknown effect(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
        if (level is not None or effects) and (pitch or tempo):
            raise ValueError("pitch and tempo act on magnitudes and cannot follow the waveform options "
                            "(vocal_level, effects); use the 'pitch' effect instead")

    def _validation_patches(self, steps: int | None) -> np.ndarray:
        """``(n, 2)`` array of (track index, offset): a hop of VALIDATION_HOP frames plus the last patch."""
        rows = []
        for i, last in enumerate(self._max_offset):
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

        ``{"track", "offset"}`` (arrays of length B: indexes into ``self.entries`` and frame
        offsets), plus in training ``"rng"``, the generator the augmentations continue to draw from.
        """
        if not 0 <= index < self._steps:
            raise IndexError(f"batch {index} out of range (0..{self._steps - 1})")
        if self.mode == "validation":
            rows = self._patches[index * self.batch_size:(index + 1) * self.batch_size]
            return {"track": rows[:, 0], "offset": rows[:, 1]}
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self.mixing:  # vocals only from tracks that have them
            track = self._vocal_tracks[rng.integers(len(self._vocal_tracks), size=self.batch_size)]
        else:
            track = rng.integers(len(self.entries), size=self.batch_size)
        offset = rng.integers(0, self._max_offset[track] + 1)
        return {"track": track, "offset": offset, "rng": rng}

    def _read(self, part: str, tracks, offsets, frames: int | None = None) -> np.ndarray:
        """``(B, n_bins, frames)`` float32 patches of ``part`` (default ``patch_frames`` long), zero-padded past a track's end."""
        p = self.params
        frames = p.patch_frames if frames is None else frames
        out = np.zeros((len(tracks), p.n_bins, frames), dtype=np.float32)
        for b, (t, o) in enumerate(zip(tracks, offsets)):
            piece = self.cache.array(self.entries[t]["name"], part)[:, o:o + frames]
            out[b, :, :piece.shape[1]] = piece
        return out

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        plan = self.plan(index)
        track, offset = plan["track"], plan["offset"]
        rng = plan.get("rng")  # None in validation, which takes no augmentation
        if self.waveform:
            mixture, vocals = self._mix_waveforms(track, offset, rng)
        else:
            mixture, vocals = self._mix_magnitudes(track, offset, rng)
        mixture, vocals = normalize_patches(mixture, vocals)
        if self.input_dropout:
            keep = plan["rng"].random(mixture.shape, dtype=np.float32) >= self.input_dropout
            mixture *= keep
            vocals *= keep
        return mixture[..., None], vocals[..., None]

    def _silent(self, rng, size: int) -> np.ndarray:
        """Which patches get silent vocals (``instrumental_share``); draws only when the share is positive."""
        if not self.instrumental_share:
            return np.zeros(size, dtype=bool)
        return rng.random(size) < self.instrumental_share

    def _mix_magnitudes(self, track, offset, rng) -> tuple[np.ndarray, np.ndarray]:
        """``(mixture, vocals)`` magnitude patches from the cached magnitudes (the augmentations above)."""
        if self.tempo:
            rates = rng.uniform(1 - self.tempo, 1 + self.tempo, size=len(track))
            source = self._read("vocals", track, offset, stretch_frames(self.params.patch_frames, rates))
            vocals = time_stretch(source, rates, self.params.patch_frames)
        else:
            vocals = self._read("vocals", track, offset)
        if self.pitch:
            vocals = pitch_shift(vocals, 2.0 ** (rng.uniform(-self.pitch, self.pitch, size=len(track)) / 12))
        if self.remix or self.gain or self.pitch or self.tempo or self.mixing:
            vocals[self._silent(rng, len(track))] = 0.0
            if self.remix or self.mixing:
                track = self._accompaniment_tracks[rng.integers(len(self._accompaniment_tracks), size=len(track))]
                offset = rng.integers(0, self._max_offset[track] + 1)
            accompaniment = self._read("accompaniment", track, offset)
            if self.gain:
                gains = rng.uniform(*GAIN_RANGE, size=(2, len(track), 1, 1)).astype(np.float32)
                vocals *= gains[0]
                accompaniment *= gains[1]
            mixture = np.sqrt(vocals**2 + accompaniment**2)
        else:
            mixture = self._read("mixture", track, offset)
        return mixture, vocals

    def _segment(self, track: int, source: str, start: int, length: int) -> tuple[np.ndarray, int]:
        """``length`` samples of a track's waveform from ``start`` (zero past its end), and how many lie inside it."""
        piece = self.cache.wave(self.entries[track]["name"], source)[start:start + length]
        out = np.zeros(length, dtype=np.float32)
        out[:len(piece)] = piece
        return out, len(piece)

    def _mix_waveforms(self, track, offset, rng) -> tuple[np.ndarray, np.ndarray]:
        """``(mixture, vocals)`` magnitude patches mixed from waveforms (``vocal_level``, ``effects``)."""
        p = self.params
        size, length = len(track), p.patch_frames * p.hop_length
        silent = self._silent(rng, size)
        other = self._accompaniment_tracks[rng.integers(len(self._accompaniment_tracks), size=size)]
        start = rng.integers(0, np.maximum(self._samples[other] - length, 0) + 1)
        if self.vocal_level is not None:
            levels, gains = rng.uniform(*self.vocal_level, size=size), None
        elif self.gain:
            levels, gains = None, rng.uniform(*GAIN_RANGE, size=(2, size)).astype(np.float32)
        else:
            levels = gains = None
        waves = np.zeros((length, 2 * size), dtype=np.float32)  # columns: B mixtures, then B vocals
        for b in range(size):
            accompaniment, inside = self._segment(other[b], "accompaniment", start[b], length)
            vocals = np.zeros(length, dtype=np.float32)
            if not silent[b]:
                vocals, voiced = self._segment(track[b], "vocals", offset[b] * p.hop_length, length)
                if self.effects:
                    from separation import production

                    vocals = production.produce(vocals, p.sample_rate, rng, self.effects)
                if levels is not None:
                    vocals *= level_gain(vocals[:voiced], accompaniment[:inside], levels[b])
            if gains is not None:
                vocals *= gains[0, b]
                accompaniment *= gains[1, b]
            waves[:, b] = vocals + accompaniment
            waves[:, size + b] = vocals
        spec = np.abs(model_bins(stft(waves, p), p))[:, :p.patch_frames]  # (n_bins, frames, 2B)
        spec = np.ascontiguousarray(spec.transpose(2, 0, 1))
        return spec[:size], spec[size:]


def level_gain(vocals: np.ndarray, accompaniment: np.ndarray, level_db: float) -> float:
    """The gain that puts ``vocals``' RMS ``level_db`` dB above ``accompaniment``'s (1 where either is silent)."""
    rms_v = float(np.sqrt(np.mean(np.square(vocals, dtype=np.float64)))) if len(vocals) else 0.0
    rms_a = float(np.sqrt(np.mean(np.square(accompaniment, dtype=np.float64)))) if len(accompaniment) else 0.0
    if rms_v < LEVEL_FLOOR or rms_a < LEVEL_FLOOR:
        return 1.0
    return 10 ** (level_db / 20) * rms_a / rms_v


def production_effects() -> tuple[str, ...]:
    """The effect names of production.py (``production.EFFECTS``), or a UserError when it is absent."""
    try:
        from separation import production
    except ModuleNotFoundError as err:
        if err.name != "separation.production":
            raise
        raise UserError("the vocal effects need production.py, which is not in this checkout") from None
    return tuple(production.EFFECTS)


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

"""The training cache: a dataset's tracks as memory-mapped magnitudes and waveforms.

:func:`prepare` reads each track (:mod:`separation.datasets`), folds it to mono by averaging the
channels (:func:`audio.to_mono`), resamples it to the cache's rate (soxr), and stores the STFT
magnitudes of the mixture, the vocals and the accompaniment over the model's bins
(:func:`audio.magnitude`), and the mono waveforms of the vocals and the accompaniment, which the
waveform mixing reads (:mod:`separation.augment`). Tracks of the ``instrumental`` dataset are
streamed (:func:`audio.stream_mono`): an hour-long file is never held whole, and only its
accompaniment is stored (its vocals are silent and its mixture is its accompaniment).
:class:`Cache` opens a prepared folder (:func:`open_cache`, that of a ``--cache`` option);
:class:`TrackSet` reads patches and segments of some of its tracks. :func:`export` writes a
dataset split as a stems folder instead.

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

import collections
import hashlib
import io
import itertools
import json
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
    n_frames,
    resample,
    save_audio,
    stream_mono,
    to_mono,
)
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text

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
#: Memory maps kept open at once; each holds a file descriptor, and MIR-1K by clip has 3000 arrays.
MAX_OPEN_ARRAYS = 384


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


def open_cache(path) -> Cache:
    """The cache folder of a training command's ``--cache`` (train.py, the PyTorch twin's), or a
    UserError that says how to make one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--cache {path}: no such folder; make one with: python data_generator.py prepare ...")
    return Cache(path)


class TrackSet:
    """Some tracks of a :class:`Cache`, numbered by their position in ``names``: what batches read.

    Attributes: ``cache``; ``params`` (the cache's); ``entries``, the tracks' index entries in the
    order of ``names``; ``frames`` and ``samples``, their lengths; ``max_offset``, the last frame
    a patch of ``params.patch_frames`` frames may start at in each (0 for a shorter track, whose
    patch is zero-padded). An unknown name is a UserError.

    :meth:`patches` and :meth:`segment` read zeros outside a track, so an offset may also be
    negative: the track then lies that many frames (samples) into the patch (segment).
    """

    def __init__(self, cache: Cache, names):
        self.cache = cache
        self.params = cache.params
        self.entries = [cache.track(n) for n in names]
        self.frames = np.array([t["frames"] for t in self.entries])
        self.samples = np.array([t.get("samples", 0) for t in self.entries])
        self.max_offset = np.maximum(self.frames - self.params.patch_frames, 0)

    def __len__(self) -> int:
        return len(self.entries)

    def patches(self, part: str, tracks, offsets, frames: int | None = None) -> np.ndarray:
        """``(B, n_bins, frames)`` float32 magnitudes of ``part`` of the tracks ``tracks`` (positions, B)
        from the frames ``offsets`` (B), ``patch_frames`` long by default, zero outside a track."""
        p = self.params
        frames = p.patch_frames if frames is None else frames
        out = np.zeros((len(tracks), p.n_bins, frames), dtype=np.float32)
        for b, (t, o) in enumerate(zip(tracks, offsets)):
            piece = self.cache.array(self.entries[t]["name"], part)[:, max(o, 0):max(o + frames, 0)]
            skip = max(-o, 0)
            out[b, :, skip:skip + piece.shape[1]] = piece
        return out

    def segment(self, track: int, source: str, start: int, length: int) -> tuple[np.ndarray, slice]:
        """``length`` samples of the waveform of ``source`` (vocals/accompaniment) of one track from
        sample ``start``, zero outside the track, and the slice of them that lies inside it."""
        piece = self.cache.wave(self.entries[track]["name"], source)[max(start, 0):max(start + length, 0)]
        skip = max(-start, 0)
        out = np.zeros(length, dtype=np.float32)
        out[skip:skip + len(piece)] = piece
        return out, slice(skip, skip + len(piece))


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

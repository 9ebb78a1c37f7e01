"""Writing separated stems: which songs, which files, whether a song fits in memory, and the writing.

What ``inference.py``'s command line and :meth:`inference.Separator.separate_file` do around the
method, kept apart from it (as Demucs keeps ``save_audio`` out of its ``Separator``):

* :func:`find_songs` expands the songs and folders given; :func:`song_name` names each song's stems;
* :class:`Outputs` holds what is written: which stems (:func:`parse_stems`), under which file names
  (a template, :func:`check_filename`) and in which format;
* before any work, :func:`prepare_songs` (:func:`check_output_apart`, :func:`plan_outputs`,
  :func:`check_start`, :func:`prepare_output`) refuses what would fail or replace a file, and
  :func:`check_memory`, from a song's header, a song that would not fit in memory
  (:func:`memory_needed`);
* :func:`write_stems` writes a song's stems together or not at all;
* :func:`add_arguments` adds the command line's options for all this, :func:`outputs_from_args`
  makes its :class:`Outputs`, and :func:`separate_songs` separates its songs one after another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import string
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from separation import audio
from separation.cli import bounded, checked, progress_bar
from separation.errors import UserError
from separation.files import disk_full, lock_folder, no_space, remove_partial, temp_prefix

STEMS = ("vocals", "accompaniment")
#: The names ``--stems`` takes for each stem: the accompaniment is also Spleeter's and Demucs'
#: "instrumental" and "no_vocals". A stem's file is named as it was asked for.
STEM_ALIASES = {"vocals": "vocals", "accompaniment": "accompaniment", "instrumental": "accompaniment",
                "no_vocals": "accompaniment"}
#: Output file names under the output folder, in Demucs' template convention: {track} the song's
#: name (:func:`song_name`), {stem}, {ext} the output format's extension, {trackext} the song's.
DEFAULT_FILENAME = "{track}/{stem}.{ext}"
FILENAME_KEYS = ("track", "stem", "ext", "trackext")
#: --max-memory's default, GiB.
DEFAULT_MAX_MEMORY = 8.0
#: :func:`memory_needed`'s terms: the process with the model loaded; the song and its vocals,
#: float32 (4 + 4 bytes per sample and channel); and, fitted to peaks measured with
#: ``benchmarks/bench_memory.py --lengths`` and rounded up, bytes per sample at the model's rate
#: (spectrogram, mask, resampled mono) and per value of a full-rate STFT chunk.
BASE_MEMORY = 0.9 * 2**30
BYTES_PER_SAMPLE = 8
BYTES_PER_MODEL_SAMPLE = 16
BYTES_PER_STFT_VALUE = 12
#: With the refinement (``inference.refine_vocals``), the first vocals are held beside the
#: refined ones (float32): counted from the arrays, not fitted.
REFINE_BYTES_PER_SAMPLE = 4


# --------------------------------------------------------------------------------------------
# What is written and under which names
# --------------------------------------------------------------------------------------------


def parse_stems(names) -> tuple[str, ...]:
    """The stems asked for, as ``"vocals,no_vocals"`` or a sequence of names: each a key of
    :data:`STEM_ALIASES` (case ignored), no stem twice. Raises ``ValueError`` saying which is wrong."""
    if isinstance(names, str):
        names = names.split(",")
    names = tuple(name.strip().lower() for name in names)
    if not names or "" in names:
        raise ValueError(f"{','.join(names)!r}: name stems separated by commas, e.g. vocals,accompaniment")
    for name in names:
        if name not in STEM_ALIASES:
            raise ValueError(f"{name!r} is not a stem; the stems are vocals and accompaniment (also called "
                             "instrumental or no_vocals)")
    stems = [STEM_ALIASES[name] for name in names]
    twice = next((stem for stem in stems if stems.count(stem) > 1), None)
    if twice:
        raise ValueError(f"{','.join(names)!r} names the {twice} twice")
    return names


def check_filename(template: str) -> str:
    """An output file-name template (:data:`DEFAULT_FILENAME`), checked: only the keys of
    :data:`FILENAME_KEYS`, {stem} among them (or every stem would be one file), and a relative
    path that stays inside the output folder. Raises ``ValueError`` saying what is wrong."""
    try:
        keys = [key for _, key, _, _ in string.Formatter().parse(template) if key is not None]
    except ValueError as err:
        raise ValueError(f"{template!r}: {err}") from None
    known = ", ".join(f"{{{key}}}" for key in FILENAME_KEYS)
    unknown = [key for key in keys if key not in FILENAME_KEYS]
    if unknown:
        raise ValueError(f"{template!r}: unknown key {{{unknown[0]}}}; the keys are {known}")
    if "stem" not in keys:
        raise ValueError(f"{template!r} has no {{stem}}: every stem would go to the same file; add it, "
                         f"e.g. {DEFAULT_FILENAME!r}")
    if Path(template).is_absolute() or ".." in Path(template).parts:
        raise ValueError(f"{template!r}: must be a file name inside the output folder; choose the folder with -o")
    return template


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What the command line and ``inference.Separator.separate_file`` write: which ``stems``
    (names of :data:`STEM_ALIASES`; each file is named as its stem was asked for), under which
    names (``filename``, a template of :data:`FILENAME_KEYS` under the output folder) and in which
    ``format``: wav, flac, mp3 or ogg, with ``bits`` "16", "24" or "32f" (float, wav only) for wav
    and flac (None: 16, or float for a wav stem beyond full scale) and ``mp3_bitrate`` kbit/s for
    mp3 (:func:`audio.save_audio`). Values out of range raise ``ValueError``.
    """

    stems: tuple[str, ...] = STEMS
    filename: str = DEFAULT_FILENAME
    format: str = "wav"
    bits: str | None = None
    mp3_bitrate: int = audio.MP3_BITRATES[-1]

    def __post_init__(self):
        object.__setattr__(self, "stems", parse_stems(self.stems))
        check_filename(self.filename)
        if self.format not in audio.WRITE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(audio.WRITE_FORMATS)}, got {self.format!r}")
        if self.bits is not None:
            if self.bits not in audio.BIT_DEPTHS:
                raise ValueError(f"bits must be one of {', '.join(audio.BIT_DEPTHS)}, got {self.bits!r}")
            if self.format not in ("wav", "flac"):
                raise ValueError(f"bits {self.bits} is for wav and flac; {self.format} is lossy (mp3: choose a bitrate)")
            if self.bits == "32f" and self.format == "flac":
                raise ValueError("bits 32f (float) is for wav only: FLAC holds 16- or 24-bit integers")
        if self.mp3_bitrate not in audio.MP3_BITRATES:
            raise ValueError(f"mp3 bitrate must be one of {', '.join(map(str, audio.MP3_BITRATES))} kbit/s, "
                             f"got {self.mp3_bitrate}")

    def paths(self, song, out_dir, track: str | None = None) -> dict[str, Path]:
        """``{stem: file}`` of a song; ``track`` (the {track} key) defaults to :func:`song_name`."""
        song = Path(song)
        keys = {"track": track or song_name(song), "ext": self.format, "trackext": song.suffix.lstrip(".")}
        return {stem: Path(out_dir) / self.filename.format(stem=stem, **keys) for stem in self.stems}

    def save(self, path, x: np.ndarray, sr: int) -> None:
        """Write one stem (:func:`audio.save_audio`); a stem beyond full scale that the format's
        integers cannot hold is clipped, with a warning."""
        audio.save_audio(path, x, sr, audio.BIT_DEPTHS.get(self.bits), format=self.format, bitrate=self.mp3_bitrate,
                         clip=True)


def song_name(path) -> str:
    """Output folder name of a song: the file's stem, the parent folder's name for a stems-layout
    ``mixture.*``, and ``X`` for ``X.stem.mp4``."""
    return writable_name(_song_stem(path))


def _song_stem(path) -> str:
    """:func:`song_name` before :func:`writable_name`."""
    path = Path(path)
    stem = path.stem
    if stem.lower() == "mixture":
        return path.resolve().parent.name
    if stem.lower().endswith(".stem"):
        return stem[: -len(".stem")]
    return stem


def renamed_songs(files: list[Path]) -> list[Path]:
    """The songs whose stems are not named as the file is: its name is not valid UTF-8 or too long
    (:func:`writable_name`)."""
    return [f for f in files if song_name(f) != _song_stem(f)]


def writable_name(name: str) -> str:
    """``name`` as a folder name any file system and terminal take: bytes that are not UTF-8
    become U+FFFD, and a name over 255 bytes (U+FFFD takes 3) is cut with a short hash appended."""
    raw = os.fsencode(name)
    name = raw.decode("utf-8", errors="replace")
    if len(name.encode()) > 255:
        name = name.encode()[:240].decode("utf-8", errors="ignore") + "-" + hashlib.sha1(raw).hexdigest()[:8]
    return name


# --------------------------------------------------------------------------------------------
# The command line's options for all this (inference.py)
# --------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """Add ``inference.py``'s options for what this module does: ``--overwrite``, ``--max-memory``
    (:func:`check_memory`) and the group "what is written, where and how" (:class:`Outputs`,
    ``--start``, ``--duration``); :func:`outputs_from_args` reads the group back."""
    parser.add_argument("--overwrite", action="store_true", help="replace stems that already exist")
    parser.add_argument("--max-memory", type=bounded(float, 0, low_open=True), default=DEFAULT_MAX_MEMORY,
                        metavar="GiB",
                        help="refuse, before reading it, a song whose separation would need more memory than this "
                             "(estimated from its header: about 0.9 GiB plus 0.5 GiB per 10 minutes of 44.1 kHz "
                             "stereo; docs/errors.md) (default: %(default)s)")
    group = parser.add_argument_group("what is written, where and how")
    group.add_argument("--stems", type=checked(parse_stems), default=STEMS, metavar="NAMES",
                       help="stems to write, separated by commas: vocals, accompaniment (also called instrumental "
                            "or, as in Demucs, no_vocals); each file is named as asked (default: vocals,accompaniment)")
    group.add_argument("--filename", type=checked(check_filename), default=DEFAULT_FILENAME,
                       metavar="TEMPLATE",
                       help="file names under OUTPUT, Demucs' template: {track} the song's name, {stem}, {ext} the "
                            "format's extension, {trackext} the song's; {stem} is required (default: %(default)s)")
    group.add_argument("--format", choices=audio.WRITE_FORMATS, default="wav",
                       help="file format (default: %(default)s); mp3 and ogg through libsndfile, or ffmpeg where "
                            "libsndfile is older than 1.1; mp3 holds 32, 44.1 or 48 kHz, the next one up is taken")
    group.add_argument("--bits", choices=tuple(audio.BIT_DEPTHS),
                       help="samples of wav and flac: 16- or 24-bit integers, or 32f, 32-bit float (wav only); "
                            "default: 16, or float for a wav stem beyond full scale (integers clip it, with a note)")
    group.add_argument("--mp3-bitrate", type=int, choices=audio.MP3_BITRATES, metavar="KBPS",
                       help="constant bitrate of --format mp3 in kbit/s, 32 to 320 (default: 320)")
    group.add_argument("--start", type=bounded(float, 0), default=0.0, metavar="SECONDS",
                       help="separate from this time in each song (default: its beginning)")
    group.add_argument("--duration", type=bounded(float, 0, low_open=True), metavar="SECONDS",
                       help="separate this many seconds (default: up to the end)")


def outputs_from_args(parser, args) -> Outputs:
    """The :class:`Outputs` of a command line parsed with :func:`add_arguments`, or ``parser.error``
    for an option that does not go with ``--format``."""
    if args.mp3_bitrate is not None and args.format != "mp3":
        parser.error("argument --mp3-bitrate: only with --format mp3")
    try:
        return Outputs(args.stems, args.filename, args.format, args.bits, args.mp3_bitrate or audio.MP3_BITRATES[-1])
    except ValueError as err:
        parser.error(f"argument --bits: {err}")  # the one combination the options' own types cannot check


# --------------------------------------------------------------------------------------------
# Before any work: the songs, their outputs, the output folder
# --------------------------------------------------------------------------------------------


def prepare_songs(inputs: list[str], output: Path, outputs: Outputs, start: float = 0.0,
                  overwrite: bool = False) -> tuple[list[Path], list[str]]:
    """The command line's songs, checked before any work: ``(files, problems)`` as :func:`find_songs`.

    In order: :func:`check_output_apart`, :func:`find_songs` (each problem printed as an error
    line; no song at all raises :class:`UserError`), :func:`plan_outputs`, a note for each song
    whose stems are renamed (:func:`renamed_songs`), :func:`check_start` and
    :func:`prepare_output` (which locks the output folder).
    """
    check_output_apart(inputs, output)
    files, problems = find_songs(inputs, exclude=output)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        raise UserError("no songs to separate")
    planned = plan_outputs(files, output, outputs)
    for f in renamed_songs(files):
        print(f"note: {f}: its name is not valid UTF-8 or too long; its stems are named {song_name(f)}",
              file=sys.stderr)
    check_start(files, start)
    prepare_output(output, [path for paths in planned.values() for path in paths.values()], overwrite)
    return files, problems


def find_songs(inputs: list[str], exclude: Path | None = None) -> tuple[list[Path], list[str]]:
    """Expand the command line's songs and folders into files: ``(files, problems)``.

    A folder contributes its audio files, recursively and sorted, skipping hidden ones and any
    inside ``exclude`` (the output folder); in a folder that holds a ``mixture.*`` (the stems
    layout, ``<track>/{mixture,vocals,accompaniment}.wav``) only the mixture is a song, so a
    dataset split can be separated by naming its folder. A missing path or an empty folder is a problem
    (a one-line message); a file given by name is kept whatever its extension, so that an
    unreadable one is reported when it is read.
    """
    files, problems, seen = [], [], set()
    exclude = exclude.resolve() if exclude is not None else None
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and audio.is_audio_file(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not (exclude is not None and p.resolve().is_relative_to(exclude))
            )
            stems_folders = {p.parent for p in found if p.stem == "mixture"}
            found = [p for p in found if p.parent not in stems_folders or p.stem == "mixture"]
            if not found:
                problems.append(f"{path}: no audio files in this folder ({', '.join(sorted(audio.AUDIO_EXTENSIONS))})")
        elif path.exists():
            found = [path]
        else:
            problems.append(f"{path}: no such file or folder")
            found = []
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                files.append(p)
    return files, problems


def check_output_apart(inputs: list[str], output: Path) -> None:
    """Refuse an output folder that is an input folder or holds one: the stems would be mixed
    with the songs (and :func:`find_songs` skips the output folder's files)."""
    out = output.resolve()
    for arg in inputs:
        path = Path(arg)
        if path.is_dir() and path.resolve().is_relative_to(out):
            where = "is the input folder" if path.resolve() == out else "holds the input folder"
            raise UserError(f"-o {output} {where} {arg}: the stems would be mixed with the songs; "
                            "choose another output folder with -o")


def plan_outputs(files: list[Path], out_dir: Path, outputs: Outputs) -> dict[Path, dict[str, Path]]:
    """Every song's ``{stem: file}`` (:meth:`Outputs.paths`), refusing before any work two outputs
    that would be one file and an output that would replace one of the songs."""
    planned, owners = {}, {}
    songs = {f.resolve(): f for f in files}
    for song in files:
        planned[song] = outputs.paths(song, out_dir)
        for stem, path in planned[song].items():
            key = path.resolve()
            if key in songs:
                raise UserError(f"{path} would replace the song {songs[key]}; choose another folder with -o or --filename")
            if key in owners:
                other, other_stem = owners[key]
                raise UserError(f"{other} ({other_stem}) and {song} ({stem}) would both be written to {path}; change "
                                f"--filename ({', '.join(f'{{{k}}}' for k in FILENAME_KEYS)}) or separate them in two "
                                "runs with different -o folders")
            owners[key] = song, stem
    return planned


def check_start(files: list[Path], start: float) -> None:
    """Refuse, before any work, a ``--start`` at or past the end of a song (from the files' headers)."""
    if not start:
        return
    late = [(f, seconds) for f in files if (seconds := audio.duration_seconds(f)) is not None and start >= seconds]
    if late:
        more = f" (and {len(late) - 1} more)" if len(late) > 1 else ""
        raise UserError(f"{late[0][0]}: --start {start:g} s is past its end ({late[0][1]:.1f} s){more}; "
                        "choose an earlier --start")


def prepare_output(root: Path, targets: list[Path], overwrite: bool) -> None:
    """Create the output folder and refuse existing outputs (unless ``overwrite``), before any work.

    The folder is locked for this process (:func:`files.lock_folder`: a second run into it is
    refused), and the temporary folders of a killed run are removed.
    """
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder; choose another output folder with -o")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{root}: cannot create the output folder ({err.strerror}); choose another with -o") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{root}: output folder is not writable; choose another with -o")
    lock_folder(root, "two runs into one output folder would replace each other's stems; wait for it to "
                      "finish or choose another folder with -o")
    remove_partial(root)  # temporary folders of a run that was killed
    if overwrite:
        return
    existing = [path for path in targets if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]} already exists{more}; pass --overwrite to replace, or choose another folder with -o")


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def check_memory(path, limit_gib: float, separator, start: float = 0.0, duration: float | None = None) -> None:
    """Refuse a song whose separation by ``separator`` (an ``inference.Separator``) would need more
    than ``limit_gib`` GiB, from its header alone (:func:`memory_needed`), so that a huge file or an
    absurd sample rate is one line. With ``start``/``duration`` (seconds) only that part is read,
    so only it counts."""
    frames, channels, sr = audio.audio_info(path)
    if sr < 1:
        raise UserError(f"{path}: sample rate {sr} Hz; the file is damaged")
    frames = max(0, frames - int(start * sr))
    if duration is not None:
        frames = min(frames, int(math.ceil(duration * sr)))
    needed = memory_needed(frames, channels, sr, separator) / 2**30
    if needed > limit_gib:
        raise UserError(f"{path}: separating {frames / sr / 60:.1f} minutes at {sr} Hz, {channels} ch would need about "
                        f"{needed:.1f} GiB of memory, over the --max-memory of {limit_gib:g} GiB; raise --max-memory "
                        "if the machine has it, or cut or resample the file first")


def memory_needed(frames: int, channels: int, sr: int, separator) -> float:
    """Bytes of memory the command line needs to separate ``frames`` x ``channels`` samples at ``sr``.

    ``separator`` is the ``inference.Separator`` that will separate them (its ``params``,
    ``chunk_frames``, ``stft_grid`` and ``refine_grid``). Counted from what it holds: the song and
    its vocals (float32), the model-rate spectrogram and mask, and one chunk of the full-rate STFT
    (``audio.chunk_stft_frames`` frames of ``separator.stft_grid(sr)``'s window, which an absurd
    sample rate makes huge), on top of :data:`BASE_MEMORY`; the factors are
    :data:`BYTES_PER_SAMPLE` and the two after it. With the refinement (``separator.refine``),
    the first vocals beside the refined ones (:data:`REFINE_BYTES_PER_SAMPLE`), and its chunk:
    two STFTs (mixture and first vocals) of ``refine_grid(sr)``, if larger than the first's.
    """
    params = separator.params
    n_fft, hop = separator.stft_grid(sr)
    model_samples = frames * params.sample_rate / sr
    chunk_values = audio.chunk_stft_frames(frames, n_fft, hop, separator.chunk_frames) * n_fft
    song = frames * channels * BYTES_PER_SAMPLE + model_samples * BYTES_PER_MODEL_SAMPLE
    grid = separator.refine_grid(sr)
    if grid is not None:
        song += frames * channels * REFINE_BYTES_PER_SAMPLE
        chunk_values = max(chunk_values, 2 * audio.chunk_stft_frames(frames, *grid, separator.chunk_frames) * grid[0])
    return BASE_MEMORY + song + chunk_values * channels * BYTES_PER_STFT_VALUE


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_stems(files: dict[Path, np.ndarray], sr: int, outputs: Outputs | None = None) -> None:
    """Write each stem to its file (in ``outputs``' format, default WAV): all are written to a
    temporary folder first, in the deepest existing folder that holds them all, and moved into
    place (their folders created) only when every one is complete, so no partial output is left.
    A full disk is one line naming the stem's file (:func:`files.no_space`)."""
    outputs = outputs or Outputs()
    files = {Path(path): x for path, x in files.items()}
    common = Path(os.path.commonpath([path.parent for path in files]))
    parent = next(folder for folder in (common, *common.parents) if folder.is_dir())
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(common.name), suffix=".part", dir=parent))
    except OSError as err:
        raise UserError(no_space(common) if disk_full(err, parent)
                        else f"{parent}: cannot write there ({err.strerror}); choose another folder with -o") from None
    staged = {path: tmp / f"{i}-{path.name}" for i, path in enumerate(files)}  # two stems may share a name

    def real_names(message: str) -> str:  # name the stems' places, not the temporary files
        for path, temporary in staged.items():
            message = message.replace(str(temporary), str(path))
        return message.replace(str(tmp), str(common))

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for path, x in files.items():
                    outputs.save(staged[path], x, sr)
            except UserError as err:  # e.g. a full disk
                raise UserError(real_names(str(err))) from None
        for warning in caught:  # e.g. a stem louder than full scale, kept as float WAV
            print(f"note: {real_names(str(warning.message))}", file=sys.stderr)
        for path, temporary in staged.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, path)
            except OSError as err:
                raise UserError(no_space(path) if disk_full(err, parent)
                                else f"{path}: cannot write ({err.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The command line's songs, one after another
# --------------------------------------------------------------------------------------------


def separate_songs(separator, files: list[Path], problems: list[str], output: Path, outputs: Outputs,
                   max_memory: float, start: float = 0.0, duration: float | None = None) -> int:
    """Separate the command line's songs (``files``; the inputs of ``problems`` were refused and
    reported already) with ``separator`` (an ``inference.Separator``) into ``output`` as
    ``outputs`` says, with a progress bar on a terminal and one line per song. A song that fails
    is an error line and the others go on: one over ``max_memory`` GiB (:func:`check_memory`), one
    the separation refuses, one that runs out of memory. Returns the exit status: 1 if any input
    failed (with a last error line that counts them), else 0."""
    failed = list(problems)
    for path in files:
        began = time.perf_counter()
        try:
            check_memory(path, max_memory, separator, start, duration)
            bar = progress_bar(song_name(path)) if sys.stderr.isatty() else None
            paths = separator.separate_file(path, output, overwrite=True, outputs=outputs, start=start,
                                            duration=duration, progress=bar)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(str(err))
            continue
        except MemoryError:
            print(f"error: {path}: not enough memory to separate it", file=sys.stderr)
            failed.append(f"{path}: out of memory")
            continue
        import soundfile

        info = soundfile.info(str(next(iter(paths.values()))))
        print(f"{path} -> {', '.join(map(str, paths.values()))} ({info.frames / info.samplerate:.1f} s of audio at "
              f"{info.samplerate} Hz, {info.channels} ch, in {time.perf_counter() - began:.1f} s)")
    if failed:
        print(f"error: {len(failed)} of {len(files) + len(problems)} inputs failed (listed above); "
              f"the other {len(files) + len(problems) - len(failed)} were separated", file=sys.stderr)
        return 1
    return 0

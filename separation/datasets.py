"""Readers for the datasets the project trains and evaluates on, behind one small interface.

:func:`find_tracks` lists a dataset split as :class:`Track` objects; ``Track.load()`` reads one
track as ``{"mixture", "vocals", "accompaniment"}``, each ``(samples, channels)`` float32 at the
file's own rate. Nothing here resamples, folds channels or takes an STFT: that is the cache's
job (``separation/cache.py``, through audio.py), so evaluation can read the references untouched.

Datasets
--------
``stems``
    ``<root>/<split>/<track>/{mixture,vocals,accompaniment}.<ext>`` (the built-in synthetic set,
    a user's own stems, pseudo-labels). ``<root>`` may also be one split folder itself
    (``<root>/<track>/...``, what ``data_generator.py export`` writes). Where ``accompaniment`` is
    absent it is the sum of the track's other stems (``drums.wav``, ``bass.wav``, ...), or else
    mixture minus vocals; where ``mixture`` is absent it is vocals plus accompaniment.
``musdb`` / ``musdb-hq``
    MUSDB18 (``<root>/{train,test}/<name>.stem.mp4``) and MUSDB18-HQ
    (``<root>/{train,test}/<name>/{mixture,vocals,drums,bass,other}.wav``) with the official
    split of the ``musdb`` package: ``train`` (86 tracks), ``validation`` (the 14 tracks of its
    ``validation_tracks`` list, taken from the train subset) and ``test`` (50). Stem files are
    decoded by ``stempeg`` (musdb's reader) with musdb's stream ids. Accompaniment = drums +
    bass + other (musdb's own ``accompaniment`` target).
``mir1k``
    MIR-1K, ``<root>/Wavfile/<singer>_<song>_<clip>.{wav,flac}``, stereo with the
    accompaniment on the left and the singing voice on the right; mixture = left + right.
    ``unit="track"`` joins the clips of one song in clip order into one track named
    ``<singer>_<song>`` (most clips are shorter than a 12-second training patch);
    ``unit="clip"`` gives one track per clip, for evaluation per the Huang et al. protocol.
    Splits: see :data:`MIR1K_SPLITS`.
``instrumental``
    Music without singing (instrumental or karaoke versions, game soundtracks): every audio file
    under the folder, at any depth, is one track whose accompaniment is the file and whose vocals
    are silent (mixture = accompaniment). Split rule, as for ``stems``: where ``<root>`` holds
    split folders (any of :data:`INSTRUMENTAL_SPLITS`), the files under ``<root>/<split>/`` are
    that split (``--split`` picks one, none reads them all; files beside the split folders are
    not read); otherwise every file under ``<root>`` is one split, named by ``--split``, else by
    the folder itself when it is called ``train``, ``validation`` or ``test``, else ``train``.
    A track is named by its path below the split folder, without the extension, with ``/`` as
    ``__`` (``warzone2100-music/frontier.opus`` -> ``warzone2100-music__frontier``). Long files
    are meant to be read in pieces (``audio.stream_mono``, what ``data_generator.py prepare``
    does); ``Track.load()`` reads one whole.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np

from separation.audio import AudioError, is_audio_file, load_audio, resample
from separation.errors import UserError

DATASETS = ("stems", "musdb", "musdb-hq", "mir1k", "instrumental")
SOURCES = ("mixture", "vocals", "accompaniment")
UNITS = ("track", "clip")

STEMS_LAYOUT = (
    "expected <root>/<split>/<track>/{mixture,vocals,accompaniment}.wav (flac, mp3, ... also read; "
    "vocals required; mixture or accompaniment may be absent), or <root>/<track>/... for one split"
)
MUSDB_LAYOUT = "expected <root>/train/<name>.stem.mp4 and <root>/test/<name>.stem.mp4 (MUSDB18)"
MUSDB_HQ_LAYOUT = (
    "expected <root>/train/<name>/{mixture,vocals,drums,bass,other}.wav and <root>/test/... (MUSDB18-HQ)"
)
INSTRUMENTAL_LAYOUT = (
    "expected audio files (any depth) under <root>/train/, <root>/validation/, <root>/test/, or under <root> "
    "itself for one split"
)
#: Folder names that make ``<root>/<name>/`` a split folder of the ``instrumental`` dataset.
INSTRUMENTAL_SPLITS = ("train", "validation", "test")
MIR1K_LAYOUT = "expected <root>/Wavfile/<singer>_<song>_<clip>.wav (or .flac), stereo: left = accompaniment, right = voice"

#: MIR-1K singers of the Huang et al. (2014) training set (175 clips); the other 825 clips are its test set.
MIR1K_HUANG_TRAIN_SINGERS = ("abjones", "amy")
#: Singer-disjoint split (fixed here, not drawn at random): test = 4 singers (195 clips),
#: validation = 2 singers (92 clips), train = the other 13 singers (713 clips, including abjones
#: and amy, so a model trained on it must not be scored on ``huang-test``). Singers chosen so that
#: each held-out set has several singers with 38-65 clips each; any singer not listed (another
#: copy of the data) goes to train.
MIR1K_TEST_SINGERS = ("Ani", "davidson", "heycat", "yifen")
MIR1K_VALIDATION_SINGERS = ("annar", "bobon")
MIR1K_SPLITS = ("train", "validation", "test", "huang-train", "huang-test")

MUSDB_SPLITS = ("train", "validation", "test")
MUSDB_STEM_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}  # musdb's mus.yaml
MUSDB_ACCOMPANIMENT = ("drums", "bass", "other")

_MIR1K_CLIP = re.compile(r"^(?P<singer>[A-Za-z]+)_(?P<song>\d+)_(?P<clip>\d+)$")


@dataclasses.dataclass(frozen=True)
class Track:
    """One track of a dataset split: a unique ``name`` (the folder name of every output made from
    it), the ``dataset`` it comes from and its ``split``. ``files`` locates it: ``(role, path)``
    pairs, where role is a stem name (stems, musdb-hq), ``"stem"`` (a MUSDB ``.stem.mp4``) or
    ``"clip"`` (MIR-1K clips, in order).
    """

    name: str
    dataset: str
    split: str
    files: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    @property
    def source(self) -> str:
        """Where the track lives (its folder, stem file or first clip), for messages and indexes."""
        first = Path(self.files[0][1])
        return str(first.parent if self.dataset in ("stems", "musdb-hq") else first)

    @property
    def vocals_silent(self) -> bool:
        """True for tracks known to have no vocals (the ``instrumental`` dataset) before reading them."""
        return self.dataset == "instrumental"

    def load(self) -> tuple[dict[str, np.ndarray], int]:
        """Read the track: ``({"mixture", "vocals", "accompaniment"}, rate)``.

        Each array is ``(samples, channels)`` float32 at the file's own rate, all of one length.
        MIR-1K sources are mono ``(samples, 1)`` and ``mixture == vocals + accompaniment``.
        Raises :class:`audio.AudioError` naming the file when one cannot be read.
        """
        if self.dataset == "mir1k":
            return _load_mir1k(self)
        if self.dataset == "musdb":
            return _load_musdb_stem(self)
        if self.dataset == "instrumental":
            return _load_instrumental(self)
        return _load_stems(self)


def find_tracks(dataset: str, root, split: str | None = None, unit: str = "track") -> list[Track]:
    """List the tracks of ``dataset`` under ``root`` (one ``split``, or all with None), sorted by name.

    ``unit`` matters for MIR-1K only (``"track"`` joins a song's clips, ``"clip"`` does not).
    Raises :class:`errors.UserError` showing the expected layout when ``root`` does not match it,
    and when the split holds no tracks.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if unit not in UNITS:
        raise UserError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    root = Path(root).expanduser()
    layout = {"stems": STEMS_LAYOUT, "musdb": MUSDB_LAYOUT, "musdb-hq": MUSDB_HQ_LAYOUT, "mir1k": MIR1K_LAYOUT,
              "instrumental": INSTRUMENTAL_LAYOUT}[dataset]
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; {layout}")
    if dataset == "stems":
        tracks = _find_stems(root, split)
    elif dataset == "mir1k":
        tracks = _find_mir1k(root, split, unit)
    elif dataset == "instrumental":
        tracks = _find_instrumental(root, split)
    else:
        tracks = _find_musdb(root, split, is_wav=dataset == "musdb-hq")
    if not tracks:
        where = f"split {split!r} of {root}" if split else str(root)
        raise UserError(f"{where}: no {dataset} tracks found (empty dataset); {layout}")
    names = [t.name for t in tracks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(
            f"{root}: track name(s) {', '.join(duplicates)} appear in several splits; choose one split"
        )
    return sorted(tracks, key=lambda t: t.name)


# --------------------------------------------------------------------------------------------
# Stems folders (and MUSDB18-HQ, which is a stems folder with drums/bass/other)
# --------------------------------------------------------------------------------------------


def _audio_files(folder: Path) -> dict[str, Path]:
    """Audio files of a folder by stem name (``vocals.wav`` -> ``"vocals"``)."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_audio_file(path) and not path.name.startswith("."):
            files.setdefault(path.stem, path)
    return files


def _is_track_folder(folder: Path) -> bool:
    return folder.is_dir() and bool({"mixture", "vocals", "accompaniment"} & set(_audio_files(folder)))


def _stems_track(folder: Path, dataset: str, split: str, layout: str) -> Track:
    files = _audio_files(folder)
    if "vocals" not in files:
        raise UserError(f"{folder}: no vocals file; {layout}")
    if "mixture" not in files and len(files) < 2:
        raise UserError(f"{folder}: needs a mixture or accompaniment (or other stems) beside the vocals; {layout}")
    # mixture first: its rate is the track's rate
    roles = sorted(files, key=lambda r: (r != "mixture", r != "vocals", r))
    return Track(folder.name, dataset, split, tuple((r, str(files[r])) for r in roles))


def _find_stems(root: Path, split: str | None) -> list[Track]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(_is_track_folder(p) for p in subdirs):
        # root is one split folder: <root>/<track>/mixture.wav
        split_dirs = [(split or root.name, root)]
    elif split is not None:
        if not (root / split).is_dir():
            found = ", ".join(p.name for p in subdirs) or "none"
            raise UserError(f"{root}: no split folder {split!r} (found: {found}); {STEMS_LAYOUT}")
        split_dirs = [(split, root / split)]
    else:
        split_dirs = [(p.name, p) for p in subdirs]
    tracks = []
    for name, folder in split_dirs:
        for sub in sorted(folder.iterdir()):
            if _is_track_folder(sub):
                tracks.append(_stems_track(sub, "stems", name, STEMS_LAYOUT))
            elif sub.is_dir() and any(is_audio_file(f) for f in sub.iterdir()):
                raise UserError(f"{sub}: audio files but no mixture/vocals/accompaniment; {STEMS_LAYOUT}")
    return tracks


def _fit(audio: np.ndarray, channels: int, length: int) -> np.ndarray:
    """Crop to ``length`` samples and broadcast mono to ``channels``."""
    audio = audio[:length]
    if audio.shape[1] != channels:
        if audio.shape[1] != 1:
            raise AudioError(f"a stem has {audio.shape[1]} channels where the others have {channels}")
        audio = np.repeat(audio, channels, axis=1)
    return audio


def _load_stems(track: Track) -> tuple[dict[str, np.ndarray], int]:
    sr = None
    stems = {}
    for role, path in track.files:
        audio, file_sr = load_audio(path)
        if sr is None:
            sr = file_sr
        stems[role] = resample(audio, file_sr, sr)
    length = min(len(a) for a in stems.values())
    channels = max(a.shape[1] for a in stems.values())
    longest = max(len(a) for a in stems.values())
    if longest - length > max(sr // 10, 1):  # encoders pad a little; more than 0.1 s is worth saying
        warnings.warn(f"{track.source}: stems differ in length by {(longest - length) / sr:.2f} s; cropped to the shortest", stacklevel=2)
    stems = {role: _fit(a, channels, length) for role, a in stems.items()}
    vocals = stems.pop("vocals")
    mixture = stems.pop("mixture", None)
    accompaniment = stems.pop("accompaniment", None)
    if accompaniment is None:
        accompaniment = sum(stems.values()) if stems else mixture - vocals
    if mixture is None:
        mixture = vocals + accompaniment
    out = {"mixture": mixture, "vocals": vocals, "accompaniment": accompaniment}
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, sr


# --------------------------------------------------------------------------------------------
# MUSDB18 / MUSDB18-HQ (listing and split through the musdb package)
# --------------------------------------------------------------------------------------------


def musdb_validation_names() -> list[str]:
    """The 14 validation track names of the official MUSDB18 split, from the musdb package's mus.yaml."""
    import musdb
    import yaml

    with open(Path(musdb.__path__[0]) / "configs" / "mus.yaml") as f:
        return list(yaml.safe_load(f)["validation_tracks"])


def _find_musdb(root: Path, split: str | None, is_wav: bool) -> list[Track]:
    # The listing mirrors musdb.DB(root, subsets, split, is_wav) (which filters the train subset
    # by the same list and silently drops listed tracks that are absent) without building a
    # musdb.DB: that runs ffprobe on every .stem.mp4 up front and one corrupt file makes it
    # raise for the whole folder, where prepare should skip that file and name it.
    layout = MUSDB_HQ_LAYOUT if is_wav else MUSDB_LAYOUT
    dataset = "musdb-hq" if is_wav else "musdb"
    if split == "valid":  # musdb's name for it
        split = "validation"
    if split is not None and split not in MUSDB_SPLITS:
        raise UserError(f"unknown {dataset} split {split!r}; choose one of {', '.join(MUSDB_SPLITS)}")
    if not any((root / s).is_dir() for s in ("train", "test")):
        raise UserError(f"{root}: no train/ or test/ folder; {layout}")
    validation = set(musdb_validation_names())
    tracks = []
    for subset in ("train", "test"):
        folder = root / subset
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if is_wav and path.is_dir() and not path.name.startswith("."):
                name = path.name
            elif not is_wav and path.is_file() and path.name.endswith(".stem.mp4"):
                name = path.name[: -len(".stem.mp4")]
            else:
                continue
            ours = "test" if subset == "test" else ("validation" if name in validation else "train")
            if split is not None and ours != split:
                continue
            if is_wav:
                tracks.append(_stems_track(path, dataset, ours, layout))
            else:
                tracks.append(Track(name, dataset, ours, (("stem", str(path)),)))
    if split in (None, "validation") and (root / "train").is_dir():
        missing = len(validation - {t.name for t in tracks if t.split == "validation"})
        if missing:
            warnings.warn(
                f"{root}: {missing} of the {len(validation)} MUSDB validation tracks are absent "
                "(a partial copy?); the validation split holds only the others"
            , stacklevel=2)
    return tracks


def _load_musdb_stem(track: Track) -> tuple[dict[str, np.ndarray], int]:
    import stempeg

    path = track.files[0][1]
    try:
        stems, sr = stempeg.read_stems(path, dtype=np.float32)
    except Exception as err:  # stempeg raises whatever ffmpeg/ffprobe parsing hits
        raise AudioError(f"{path}: cannot read as a .stem.mp4 ({type(err).__name__}: {err})") from None
    if stems.ndim != 3 or stems.shape[0] < len(MUSDB_STEM_IDS):
        raise AudioError(f"{path}: has {stems.shape[0] if stems.ndim == 3 else 1} streams, a MUSDB stem file has 5")
    get = {name: stems[i] for name, i in MUSDB_STEM_IDS.items()}
    out = {
        "mixture": get["mixture"],
        "vocals": get["vocals"],
        "accompaniment": sum(get[name] for name in MUSDB_ACCOMPANIMENT),
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, int(sr)


# --------------------------------------------------------------------------------------------
# MIR-1K
# --------------------------------------------------------------------------------------------


def mir1k_split_of(singer: str, split: str) -> bool:
    """Whether a MIR-1K singer belongs to ``split`` (one of :data:`MIR1K_SPLITS`)."""
    held_out = MIR1K_TEST_SINGERS + MIR1K_VALIDATION_SINGERS
    return {
        "huang-train": singer in MIR1K_HUANG_TRAIN_SINGERS,
        "huang-test": singer not in MIR1K_HUANG_TRAIN_SINGERS,
        "test": singer in MIR1K_TEST_SINGERS,
        "validation": singer in MIR1K_VALIDATION_SINGERS,
        "train": singer not in held_out,
    }[split]


def _mir1k_split_name(singer: str) -> str:
    """The singer-disjoint split a singer is in (used as Track.split when no split is asked)."""
    return next(s for s in ("test", "validation", "train") if mir1k_split_of(singer, s))


def _find_mir1k(root: Path, split: str | None, unit: str) -> list[Track]:
    if split is not None and split not in MIR1K_SPLITS:
        raise UserError(f"unknown mir1k split {split!r}; choose one of {', '.join(MIR1K_SPLITS)}")
    folder = root / "Wavfile" if (root / "Wavfile").is_dir() else root
    clips = {}
    for path in sorted(folder.iterdir()):
        match = _MIR1K_CLIP.match(path.stem)
        if path.is_file() and is_audio_file(path) and match:
            clips.setdefault(path.stem, (match["singer"], match["song"], int(match["clip"]), path))
    if not clips:
        raise UserError(f"{folder}: no MIR-1K clips found; {MIR1K_LAYOUT}")
    songs: dict[str, list] = {}
    for stem, (singer, song, clip, path) in clips.items():
        if split is not None and not mir1k_split_of(singer, split):
            continue
        key = stem if unit == "clip" else f"{singer}_{song}"
        songs.setdefault(key, []).append((clip, singer, path))
    tracks = []
    for name, parts in songs.items():
        parts.sort()
        singer = parts[0][1]
        tracks.append(Track(name, "mir1k", split or _mir1k_split_name(singer), tuple(("clip", str(p)) for _, _, p in parts)))
    return tracks


def _load_mir1k(track: Track) -> tuple[dict[str, np.ndarray], int]:
    pieces, sr = [], None
    for _, path in track.files:
        audio, file_sr = load_audio(path)
        if audio.shape[1] != 2:
            raise AudioError(f"{path}: MIR-1K clips are stereo (left = accompaniment, right = voice), got {audio.shape[1]} channel(s)")
        if sr is not None and file_sr != sr:
            audio = resample(audio, file_sr, sr)
        sr = sr or file_sr
        pieces.append(audio)
    audio = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    accompaniment = np.ascontiguousarray(audio[:, :1])
    vocals = np.ascontiguousarray(audio[:, 1:])
    return {"mixture": accompaniment + vocals, "vocals": vocals, "accompaniment": accompaniment}, sr


# --------------------------------------------------------------------------------------------
# Instrumental music (accompaniment only)
# --------------------------------------------------------------------------------------------


def _find_instrumental(root: Path, split: str | None) -> list[Track]:
    split_dirs = [name for name in INSTRUMENTAL_SPLITS if (root / name).is_dir()]
    if split_dirs:
        if split is not None and split not in split_dirs:
            raise UserError(f"{root}: no split folder {split!r} (found: {', '.join(split_dirs)}); {INSTRUMENTAL_LAYOUT}")
        folders = [(name, root / name) for name in split_dirs if split in (None, name)]
    else:
        folders = [(split or (root.name if root.name in INSTRUMENTAL_SPLITS else "train"), root)]
    tracks, seen = [], {}
    for name, folder in folders:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if not path.is_file() or not is_audio_file(path) or any(part.startswith(".") for part in rel.parts):
                continue
            track = rel.with_suffix("").as_posix().replace("/", "__")
            if track in seen:
                raise UserError(f"{path}: has the track name {track!r} of {seen[track]}; rename one of them")
            seen[track] = path
            tracks.append(Track(track, "instrumental", name, (("accompaniment", str(path)),)))
    return tracks


def _load_instrumental(track: Track) -> tuple[dict[str, np.ndarray], int]:
    accompaniment, sr = load_audio(track.files[0][1])
    return {"mixture": accompaniment, "vocals": np.zeros_like(accompaniment), "accompaniment": accompaniment}, sr

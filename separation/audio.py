"""The audio core: parameters, I/O, resampling and the STFT pair, imported by every script.

Array layout everywhere: time-domain audio is ``(samples, channels)`` float32; spectrograms are
``(bins, frames)`` per channel, or ``(bins, frames, channels)`` for multichannel audio.

The 512-bin convention
----------------------
With ``n_fft = 1024`` the STFT has 513 bins, 0 Hz to 4096 Hz (the Nyquist frequency at 8192 Hz).
The model sees bins 0..511 and never the last one, the Nyquist bin, which after resampling to
8192 Hz holds almost no energy (soxr's anti-aliasing filter removes it). At reconstruction the
model's 512-bin mask is extended to 513 bins by repeating its top row (bin 511's mask is applied
to the mixture's own Nyquist coefficient) and multiplied with the mixture's complex STFT, so the
mixture phase and the Nyquist coefficient are kept, and a mask of ones gives the mixture back
exactly (:func:`apply_mask`; the round trip is tested to better than -60 dB).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

from separation.cli import timed
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text


class AudioError(UserError):
    """A file that cannot be read or written as audio; the message names the file."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

#: Every stride-2 layer of the six-layer U-Net halves both axes, so patches must divide by 2**6.
UNET_DOWNSAMPLING = 2**6


@dataclasses.dataclass(frozen=True)
class AudioParams:
    """The audio parameters of Jansson et al. (2017), saved beside every model and cache.

    ``patch_frames`` frames of ``hop_length`` samples at ``sample_rate``: 128 x 768 / 8192 is
    about 12 s. ``n_bins`` is 512: the 513 bins of a 1024-point STFT minus the Nyquist bin.
    """

    sample_rate: int = 8192
    n_fft: int = 1024
    hop_length: int = 768
    patch_frames: int = 128
    n_bins: int = 512

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"audio parameter {field.name} must be a positive integer, got {value!r}")
        if self.n_fft % 2:
            raise UserError(f"n_fft must be even, got {self.n_fft}; use a power of two such as 1024")
        if self.n_bins > self.n_fft // 2 + 1:
            raise UserError(
                f"n_bins={self.n_bins} exceeds the n_fft/2+1={self.n_fft // 2 + 1} bins of the STFT; "
                f"lower n_bins or raise n_fft to at least {2 * (self.n_bins - 1)}"
            )
        if self.hop_length > self.n_fft:
            raise UserError(
                f"hop_length={self.hop_length} exceeds n_fft={self.n_fft}: samples between frames "
                "would be lost; use a hop of at most n_fft"
            )
        for name in ("n_bins", "patch_frames"):
            value = getattr(self, name)
            if value % UNET_DOWNSAMPLING:
                fixed = max(UNET_DOWNSAMPLING, value // UNET_DOWNSAMPLING * UNET_DOWNSAMPLING)
                raise UserError(
                    f"{name}={value} is not divisible by {UNET_DOWNSAMPLING} (2**6, one halving per "
                    f"U-Net encoder layer); use {fixed}"
                )

    @property
    def patch_seconds(self) -> float:
        """Duration of one patch in seconds (about 12 s with the defaults)."""
        return self.patch_frames * self.hop_length / self.sample_rate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "parameters") -> "AudioParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{source}: unknown audio parameter(s) {', '.join(unknown)}")
        return cls(**data)

    def save(self, path) -> None:
        """Write the parameters as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "AudioParams":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: audio parameters not found") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: cannot read audio parameters ({err})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: audio parameters must be a JSON object")
        return cls.from_dict(data, source=str(path))

    def check_same(self, other: "AudioParams", what: str, fix: str) -> None:
        """Refuse to combine things made with different parameters; the error lists them."""
        if self != other:
            diffs = ", ".join(
                f"{k}: {v} vs {other.to_dict()[k]}" for k, v in self.to_dict().items() if other.to_dict()[k] != v
            )
            raise UserError(f"{what} was made with other audio parameters ({diffs}); {fix}")


DEFAULT_PARAMS = AudioParams()
#: The file beside every cache and saved model that holds its AudioParams.
PARAMS_FILE = "audio_params.json"


# --------------------------------------------------------------------------------------------
# Audio I/O
# --------------------------------------------------------------------------------------------

#: Containers libsndfile reads itself; everything else goes through ffmpeg.
SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}
FFMPEG_EXTENSIONS = {".m4a", ".mp4", ".aac", ".opus", ".webm", ".wma", ".mkv"}
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS


def is_audio_file(path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def load_audio(path, sr: int | None = None, mono: bool = False, offset: float | None = None,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as ``(samples, channels)`` float32 in [-1, 1] and its sample rate.

    ``sr`` resamples (soxr) to that rate; ``mono`` folds channels to one by averaging them
    (the mean keeps the level of a centred source); ``offset`` and ``duration`` are seconds.
    wav/flac/ogg/mp3 are read by libsndfile, m4a/mp4/aac (and a ``.stem.mp4``'s first stream,
    the mixture) by ffmpeg. Raises :class:`AudioError`, naming the file, for a missing,
    unreadable, empty or non-finite file.
    """
    path = Path(path)
    check_regular_file(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        audio, file_sr = _load_ffmpeg(path, offset, duration)
    else:
        audio, file_sr = _load_soundfile(path, offset, duration)
    if audio.size == 0:
        raise AudioError(f"{path}: contains no audio samples" + (" in the requested range" if offset or duration else ""))
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if mono:
        audio = to_mono(audio)
    if sr is not None and sr != file_sr:
        audio = resample(audio, file_sr, sr)
        file_sr = sr
    return audio, file_sr


def check_regular_file(path: Path) -> None:
    """Refuse, naming it, a path that is not a regular file: missing, a folder, or a named pipe or
    device, whose reading could wait for a writer forever or never end."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file (a named pipe, socket or device); save the audio to a file first")


def audio_info(path) -> tuple[int, int, int]:
    """``(frames, channels, sample_rate)`` of an audio file from its header, without decoding it.

    For the formats decoded by ffmpeg, frames come from the container's duration. Raises
    :class:`AudioError` like :func:`load_audio`.
    """
    import soundfile as sf

    path = Path(path)
    check_regular_file(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        sr, channels = _probe_ffmpeg(path)
        proc = subprocess.run([shutil.which("ffprobe"), "-v", "error", "-show_entries", "format=duration", "-of",
                               "default=nw=1:nk=1", str(path)], capture_output=True, text=True)
        try:
            seconds = float(proc.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            seconds = 0.0
        return int(math.ceil(seconds * sr)) if math.isfinite(seconds) else 0, channels, sr
    try:
        info = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as err:
        raise AudioError(f"{path}: cannot read as audio ({_short(err)})") from None
    return info.frames, info.channels, info.samplerate


def _load_soundfile(path: Path, offset, duration) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: a name that is not valid UTF-8 opens too
            file_sr = f.samplerate
            start = int(round((offset or 0.0) * file_sr))
            frames = -1 if duration is None else int(round(duration * file_sr))
            if start:
                f.seek(min(start, f.frames))
            audio = f.read(frames=frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise AudioError(f"{path}: cannot read as audio ({_short(err)})") from None
    except (RuntimeError, ValueError, EOFError) as err:
        raise AudioError(f"{path}: cannot read as audio ({_short(err)})") from None
    return np.ascontiguousarray(audio), file_sr


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    text = text[-1] if text else type(err).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


def ffmpeg_binary() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise UserError("ffmpeg is needed for m4a/mp4/aac files; install it with: sudo apt-get install ffmpeg")
    return exe


def _probe_ffmpeg(path: Path) -> tuple[int, int]:
    """Sample rate and channel count of the first audio stream (ffprobe)."""
    probe = shutil.which("ffprobe")
    if probe is None:
        ffmpeg_binary()
        raise UserError("ffprobe is needed for m4a/mp4/aac files; install it with: sudo apt-get install ffmpeg")
    proc = subprocess.run(
        [probe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels",
         "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    try:
        stream = json.loads(proc.stdout)["streams"][0]
        return int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, KeyError, IndexError, TypeError):
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no audio stream"
        raise AudioError(f"{path}: cannot read as audio ({reason})") from None


def _load_ffmpeg(path: Path, offset, duration) -> tuple[np.ndarray, int]:
    file_sr, channels = _probe_ffmpeg(path)
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error"]
    if offset:
        cmd += ["-ss", f"{offset:.6f}"]
    cmd += ["-i", str(path)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{path}: cannot decode ({reason[-1] if reason else 'ffmpeg failed'})")
    audio = np.frombuffer(proc.stdout, dtype="<f4")
    audio = audio[: audio.size // channels * channels].reshape(-1, channels)
    return audio.astype(np.float32), file_sr


#: Samples per block when a long file is read in pieces (:func:`stream_mono`): 6 s at 44.1 kHz.
STREAM_BLOCK = 2**18


def stream_mono(path, sr: int, block: int = STREAM_BLOCK):
    """Yield a file's audio as 1-D float32 mono blocks at rate ``sr``, in bounded memory.

    The streaming twin of ``load_audio(path, sr, mono=True)`` for files too long to hold whole
    (an hour of music): blocks of ``block`` samples are read (libsndfile, or an ffmpeg pipe for
    the formats :func:`load_audio` decodes with ffmpeg), folded to mono (:func:`to_mono`) and
    resampled by soxr's streaming resampler (same filter as :func:`resample`). Raises
    :class:`AudioError` naming the file, when it is first iterated, for an unreadable, empty or
    non-finite file.
    """
    import soxr

    path = Path(path)
    check_regular_file(path)
    reader = _ffmpeg_blocks if path.suffix.lower() in FFMPEG_EXTENSIONS else _soundfile_blocks
    resampler, total = None, 0
    for file_sr, audio in reader(path, block):
        if resampler is None and file_sr != sr:
            resampler = soxr.ResampleStream(file_sr, sr, 1, dtype="float32", quality="HQ")
        if not np.isfinite(audio).all():
            raise AudioError(f"{path}: contains NaN or infinite samples")
        total += len(audio)
        mono = np.ascontiguousarray(to_mono(audio)[:, 0])
        yield mono if resampler is None else resampler.resample_chunk(mono)
    if total == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _soundfile_blocks(path: Path, block: int):
    """``(rate, (n, channels) float32 block)`` pairs read by libsndfile."""
    import soundfile as sf

    try:
        with sf.SoundFile(os.fsencode(path)) as f:
            while True:
                audio = f.read(frames=block, dtype="float32", always_2d=True)
                if not len(audio):
                    return
                yield f.samplerate, audio
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as err:
        raise AudioError(f"{path}: cannot read as audio ({_short(err)})") from None


def _ffmpeg_blocks(path: Path, block: int):
    """``(rate, (n, channels) float32 block)`` pairs decoded by an ffmpeg pipe."""
    file_sr, channels = _probe_ffmpeg(path)
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le",
           "-acodec", "pcm_f32le", "-"]
    with tempfile.TemporaryFile() as errors, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors) as proc:
        try:
            while data := proc.stdout.read(4 * channels * block):
                audio = np.frombuffer(data, dtype="<f4")
                yield file_sr, audio[: audio.size // channels * channels].reshape(-1, channels).astype(np.float32)
        finally:
            proc.stdout.close()
            proc.wait()
        if proc.returncode != 0:
            errors.seek(0)
            reason = errors.read().decode(errors="replace").strip().splitlines()
            raise AudioError(f"{path}: cannot decode ({reason[-1] if reason else 'ffmpeg failed'})")


def duration_seconds(path) -> float | None:
    """A file's length in seconds from its header (libsndfile, or ffprobe for the formats
    :func:`load_audio` decodes with ffmpeg); None when it cannot be read (reading it says why)."""
    import soundfile as sf

    path = Path(path)
    try:
        if path.suffix.lower() in FFMPEG_EXTENSIONS:
            probe = shutil.which("ffprobe")
            proc = subprocess.run([probe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                                  capture_output=True, text=True) if probe else None
            return float(proc.stdout.strip()) if proc else None
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None


#: Formats :func:`save_audio` writes: lossless wav and flac, lossy mp3 and ogg (Vorbis).
WRITE_FORMATS = ("wav", "flac", "mp3", "ogg")
#: Sample formats of wav and flac by bit depth; "32f" is 32-bit float, which FLAC has not.
BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
#: MPEG-1 Layer III: the sample rates it holds and its constant bitrates (kbit/s).
MP3_RATES = (32000, 44100, 48000)
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def save_audio(path, audio: np.ndarray, sr: int, subtype: str | None = None, *, format: str | None = None,
               bitrate: int = 320, clip: bool = False) -> None:
    """Write ``(samples, channels)`` (or 1-D mono) audio atomically; never clips silently.

    ``format`` is wav, flac, mp3 or ogg (default: the path's extension). WAV and FLAC are written
    as 16-bit PCM (or ``subtype``, e.g. ``"PCM_24"``, ``"FLOAT"``) while the peak fits in
    [-1, 1]; a louder signal is written as 32-bit float WAV, with a warning, rather than
    clipped. FLAC, which has no float samples, and an integer ``subtype`` refuse it, or with
    ``clip`` clip it, with a warning. mp3 (constant ``bitrate`` kbit/s, one of
    :data:`MP3_BITRATES`) and ogg (Vorbis) are lossy and float inside: they keep a louder signal
    as it is. mp3 holds 32, 44.1 and 48 kHz only (MPEG-1 rates), so another rate is resampled
    to the next of them (48 kHz from above), with a warning. The file appears complete or not
    at all.
    """
    import soundfile as sf

    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (samples, channels), got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in WRITE_FORMATS:
        raise AudioError(f"{path}: can only write {', '.join(WRITE_FORMATS)}")
    if fmt in ("mp3", "ogg"):
        if subtype is not None:
            raise ValueError(f"subtype is for wav and flac, not {fmt}")
        _save_lossy(path, audio, sr, fmt, bitrate)
        return
    peak = float(max(audio.max(), -audio.min())) if audio.size else 0.0  # no |x| copy of a long song
    if subtype is None:
        subtype = "PCM_16"
        if peak > 1.0 and fmt == "wav":
            warnings.warn(f"{path}: peak {peak:.3f} exceeds full scale; writing 32-bit float WAV instead of clipping", stacklevel=2)
            subtype = "FLOAT"
    if peak > 1.0 and not subtype.startswith(("FLOAT", "DOUBLE")):
        if not clip:
            fix = "FLAC cannot hold it; write .wav" if fmt == "flac" else "scale it or use subtype FLOAT"
            raise AudioError(f"{path}: peak {peak:.3f} exceeds full scale and would clip as {subtype}; {fix}")
        warnings.warn(f"{path}: peak {peak:.3f} exceeds full scale; clipped to fit {fmt.upper()} {subtype}", stacklevel=2)
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_output(path) as tmp:
        sf.write(os.fsencode(tmp), audio, sr, subtype=subtype, format=fmt.upper())


def _save_lossy(path: Path, audio: np.ndarray, sr: int, fmt: str, bitrate: int) -> None:
    """mp3 or ogg through libsndfile where it has the codec (1.1 and later), else ffmpeg."""
    import soundfile as sf

    if fmt == "mp3":
        if bitrate not in MP3_BITRATES:
            raise ValueError(f"mp3 bitrate must be one of {MP3_BITRATES} kbit/s, got {bitrate}")
        if sr not in MP3_RATES:
            rate = next((r for r in MP3_RATES if r >= sr), MP3_RATES[-1])
            warnings.warn(f"{path}: mp3 holds 32, 44.1 or 48 kHz; written at {rate} Hz (the audio is at {sr} Hz)",
                          stacklevel=3)
            audio, sr = resample(audio, sr, rate), rate
    with atomic_output(path) as tmp:
        if fmt.upper() not in sf.available_formats():
            _encode_ffmpeg(tmp, audio, sr, fmt, bitrate)
        elif fmt == "mp3":
            # libsndfile sets a constant bitrate through its compression level: 320 kbit/s at 0, 32 at 1
            sf.write(str(tmp), audio, sr, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
                     compression_level=(MP3_BITRATES[-1] - bitrate) / (MP3_BITRATES[-1] - MP3_BITRATES[0]))
        else:
            sf.write(str(tmp), audio, sr, format="OGG", subtype="VORBIS")


def _encode_ffmpeg(path: Path, audio: np.ndarray, sr: int, fmt: str, bitrate: int) -> None:
    """Encode mp3 (LAME, constant bitrate) or ogg (Vorbis at libsndfile's default quality, 4) with ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise UserError(f"writing {fmt} needs libsndfile 1.1 or later, or ffmpeg; install ffmpeg with: sudo apt-get install ffmpeg")
    codec = ["-c:a", "libmp3lame", "-b:a", f"{bitrate}k"] if fmt == "mp3" else ["-c:a", "libvorbis", "-q:a", "4"]
    proc = subprocess.run([exe, "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", str(audio.shape[1]),
                           "-i", "-", *codec, "-f", fmt, str(path)],
                          input=np.ascontiguousarray(audio, dtype="<f4").tobytes(), capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{path}: ffmpeg cannot write {fmt} ({reason[-1] if reason else 'ffmpeg failed'})")


def checked_audio(audio, sr) -> tuple[np.ndarray, int]:
    """A song given as an array, checked: ``(audio as (samples, channels) float32, sr as int)``; 1-D
    audio is one channel. Raises ``ValueError`` for no samples, NaN or infinite ones, or a rate
    that is not a positive integer."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"mixture must be non-empty (samples, channels) audio, got shape {np.shape(audio)}")
    if not np.isfinite(x).all():
        raise ValueError("mixture contains NaN or infinite samples")
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr}")
    return x, int(sr)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Fold ``(samples, channels)`` to ``(samples, 1)`` by averaging the channels."""
    if audio.shape[1] == 1:
        return audio
    # a matrix product is much faster than mean(axis=1) on (samples, channels) arrays
    return audio @ np.full((audio.shape[1], 1), 1 / audio.shape[1], dtype=np.float32)


def resample(audio: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``(samples, channels)`` audio with soxr (band-limited, linear phase)."""
    import soxr

    if sr_in == sr_out:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), sr_in, sr_out, quality=quality)
    return out.reshape(-1, audio.shape[1]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# STFT
# --------------------------------------------------------------------------------------------


#: Frames per FFT call in :func:`stft`/:func:`istft`.
FFT_BLOCK = 128


def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``n_fft`` samples (``scipy.signal.get_window("hann", n_fft)``)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft(audio: np.ndarray, params: AudioParams = DEFAULT_PARAMS, n_fft: int | None = None,
         hop_length: int | None = None) -> np.ndarray:
    """Complex STFT of 1-D ``(samples,)`` or ``(samples, channels)`` audio, all n_fft/2+1 bins.

    Returns ``(bins, frames)`` for 1-D input and ``(bins, frames, channels)`` for 2-D input, complex64.
    Periodic Hann window, centred frames with zero padding: librosa's ``stft(center=True)``
    convention and output (to 1e-5 of the peak, tested), so frame ``t`` is centred on sample ``t * hop_length``.
    The signal is padded with one hop of zeros at the end first: with a hop longer than half the
    window (768 of 1024), the last centred frame can end before the signal does, and samples under
    no window cannot be inverted. :func:`n_frames` counts the frames. ``n_fft``/``hop_length``
    override the parameters (full-band inference uses the same frame duration at another rate).

    Written on ``scipy.fft`` rather than calling librosa because librosa's first STFT imports
    numba and scipy.signal, most of the command line's start-up (benchmarks/RESULTS.md).
    """
    import scipy.fft  # already loaded by Keras; its rfft is faster than numpy's over a batch of frames

    n_fft = n_fft or params.n_fft
    hop = hop_length or params.hop_length
    audio = np.asarray(audio, dtype=np.float32)
    half = n_fft // 2
    padded = np.pad(audio.T, [(0, 0)] * (audio.ndim - 1) + [(half, half + hop)])  # ([ch,] samples), contiguous
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]  # ([ch,] frames, n_fft)
    window = _hann(n_fft)
    spec = np.empty(frames.shape[:-1] + (n_fft // 2 + 1,), dtype=np.complex64)
    for start in range(0, frames.shape[-2], FFT_BLOCK):  # blocks that stay in the CPU's cache are faster
        block = slice(start, start + FFT_BLOCK)
        spec[..., block, :] = scipy.fft.rfft(frames[..., block, :] * window, axis=-1)
    return spec.T  # (bins, frames[, ch]), a view


def fast_fft_length(n: int) -> int:
    """The smallest even length of at least ``n`` whose prime factors are all small: a fast FFT
    (``scipy.fft.next_fast_len``), and an even window, whose centre is a sample."""
    import scipy.fft

    n = scipy.fft.next_fast_len(n)
    while n % 2:
        n = scipy.fft.next_fast_len(n + 1)
    return n


def istft(spec: np.ndarray, length: int, params: AudioParams = DEFAULT_PARAMS, n_fft: int | None = None,
          hop_length: int | None = None) -> np.ndarray:
    """Inverse of :func:`stft`: ``(bins, frames[, channels])`` to ``(length[, channels])`` float32.

    Weighted overlap-add with the same window, divided by the summed squared windows where they
    are not ~0 (librosa's ``istft(center=True, length=...)``), cut or zero-padded to ``length``.
    """
    import scipy.fft

    n_fft = n_fft or params.n_fft
    hop = hop_length or params.hop_length
    window = _hann(n_fft)
    spec = spec.T  # ([ch,] frames, bins)
    n = spec.shape[-2]
    frames = np.empty(spec.shape[:-1] + (n_fft,), dtype=np.float32)
    for start in range(0, n, FFT_BLOCK):
        block = slice(start, start + FFT_BLOCK)
        frames[..., block, :] = scipy.fft.irfft(spec[..., block, :], n=n_fft, axis=-1) * window
    # frames g, g+G, g+2G... with G*hop >= n_fft do not overlap: each group is one reshape
    group = -(-n_fft // hop)
    span = group * hop
    total = n_fft + hop * (n - 1) + span
    out = np.zeros(frames.shape[:-2] + (total,), dtype=np.float32)
    weight = np.zeros(total, dtype=np.float32)
    for g in range(min(group, n)):
        part = frames[..., g::group, :]
        k = part.shape[-2]
        padded = np.zeros(part.shape[:-1] + (span,), dtype=np.float32)
        padded[..., :n_fft] = part
        out[..., g * hop:g * hop + k * span] += padded.reshape(part.shape[:-2] + (k * span,))
        w = np.zeros(span, dtype=np.float32)
        w[:n_fft] = window**2
        weight[g * hop:g * hop + k * span] += np.tile(w, k)
    half = n_fft // 2
    out, weight = out[..., half:half + length], weight[half:half + length]
    out /= np.where(weight > np.finfo(np.float32).tiny, weight, 1.0)
    return fit_length(out.T, length)  # (length[, ch])


def fit_length(x: np.ndarray, samples: int) -> np.ndarray:
    """Crop or zero-pad ``(samples', ...)`` audio at the end to ``samples`` (resampling rounds lengths)."""
    if x.shape[0] >= samples:
        return x[:samples]
    return np.pad(x, [(0, samples - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def model_bins(spec: np.ndarray, params: AudioParams = DEFAULT_PARAMS) -> np.ndarray:
    """Keep the model's bins 0..n_bins-1 of a full spectrogram (drops the Nyquist bin)."""
    return spec[: params.n_bins]


def extend_mask(mask: np.ndarray, total_bins: int) -> np.ndarray:
    """Extend a ``(n_bins, ...)`` mask to ``total_bins`` rows by repeating its top row."""
    missing = total_bins - mask.shape[0]
    if missing < 0:
        raise ValueError(f"mask has {mask.shape[0]} bins, more than the spectrogram's {total_bins}")
    if missing == 0:
        return mask
    top = np.repeat(mask[-1:], missing, axis=0)
    return np.concatenate([mask, top], axis=0)


def apply_mask(mix_spec: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Multiply the mixture's complex STFT by a magnitude mask of the model's bins.

    ``mask`` has the model's ``n_bins`` rows (or all of them); the missing top rows (the Nyquist
    bin) take the mask of the highest model bin, as the module docstring explains.
    """
    return mix_spec * extend_mask(mask, mix_spec.shape[0])


def magnitude(audio: np.ndarray, params: AudioParams = DEFAULT_PARAMS) -> np.ndarray:
    """The model's input: ``|STFT|`` of mono audio over the model's bins, ``(n_bins, frames)`` float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        if audio.shape[1] != 1:
            raise ValueError(f"magnitude() takes mono audio, got {audio.shape[1]} channels; fold with to_mono()")
        audio = audio[:, 0]
    return np.abs(model_bins(stft(audio, params), params)).astype(np.float32)


def n_frames(n_samples: int, params: AudioParams = DEFAULT_PARAMS) -> int:
    """Number of :func:`stft` frames of a signal of ``n_samples`` (centred, one hop padded)."""
    return 1 + (n_samples + params.hop_length) // params.hop_length


# --------------------------------------------------------------------------------------------
# Masking a long signal in chunks
# --------------------------------------------------------------------------------------------

#: STFT frames per chunk of :func:`masked_istft` (about 96 s at the model's frame duration):
#: bounds the size of the complex STFT held at once.
CHUNK_FRAMES = 1024


def masked_istft(mixture: np.ndarray, mask_for, n_fft: int, hop: int, *, chunk_frames: int = CHUNK_FRAMES,
                 apply=None, guide: np.ndarray | None = None, progress=None, timings: dict | None = None) -> np.ndarray:
    """``istft(stft(mixture) * mask)`` for ``(samples, channels)`` audio, in chunks of frames.

    ``mask_for(frames)`` returns the real mask ``(n_fft/2+1, len(frames))`` of the given frame
    indices; the same mask multiplies every channel. ``apply(spec, mask)`` turns a chunk's
    ``(bins, frames, channels)`` mixture STFT and its mask into the vocals' STFT (default: their
    product). ``guide``, a second signal of ``mixture``'s shape (a first estimate of the vocals),
    is cut into the same pieces and its chunk STFT passed on: ``apply(spec, mask, guide_spec)``
    (``mask_for`` may then be None, and ``mask`` is None). ``progress(1)`` is called after each
    chunk; ``timings`` (a dict) accumulates seconds per stage (``cli.timed``). Returns the
    vocals, ``mixture``'s shape, float32.

    Each chunk's STFT is taken over :func:`chunk_margin` extra frames on both sides, and only the
    samples whose every contributing frame lies inside the chunk's span are kept, so the result
    equals the one-piece computation while the STFT held at once is about ``chunk_frames`` frames.
    """
    samples, channels = mixture.shape
    if guide is not None and guide.shape != mixture.shape:
        raise ValueError(f"guide must have the mixture's shape {mixture.shape}, got {guide.shape}")
    padded = _padded_length(samples, n_fft)
    total = n_stft_frames(samples, n_fft, hop)
    margin = chunk_margin(n_fft, hop)
    out = np.empty((samples, channels), dtype=np.float32)
    for a in range(0, total, chunk_frames):
        b = min(a + chunk_frames, total)
        first = max(a - margin, 0)
        stop = padded if b == total else min((b + margin) * hop, padded)
        piece = _piece(mixture, first * hop, stop)
        with timed(timings, "stft"):
            spec = stft(piece, n_fft=n_fft, hop_length=hop)  # (bins, frames, channels)
            guide_spec = None if guide is None else stft(_piece(guide, first * hop, stop), n_fft=n_fft, hop_length=hop)
        with timed(timings, "mask"):
            mask = None if mask_for is None else mask_for(np.arange(first, first + spec.shape[1]))
            if guide_spec is not None:
                spec = apply(spec, mask, guide_spec)
            else:
                spec = apply(spec, mask) if apply is not None else spec * mask[..., None]
        with timed(timings, "istft"):
            y = istft(spec, len(piece), n_fft=n_fft, hop_length=hop)
        keep_to = samples if b == total else min(b * hop, samples)
        if keep_to > a * hop:
            out[a * hop:keep_to] = y[(a - first) * hop:keep_to - first * hop]
        if progress is not None:
            progress(1)
    return out


def _piece(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of ``(samples, channels)`` audio, zero padded past its end."""
    piece = x[start:min(stop, len(x))]
    if len(piece) < stop - start:
        piece = np.pad(piece, ((0, stop - start - len(piece)), (0, 0)))
    return piece


def _padded_length(samples: int, n_fft: int) -> int:
    """Length :func:`masked_istft` works on: at least one window, zero padded, for a very short
    input (:func:`stft` itself pads the hop that puts the last samples under two windows)."""
    return max(samples, n_fft)


def n_stft_frames(samples: int, n_fft: int, hop: int) -> int:
    """Number of frames :func:`masked_istft` cuts into chunks for a signal of ``samples``."""
    return 1 + _padded_length(samples, n_fft) // hop


def chunk_margin(n_fft: int, hop: int) -> int:
    """Frames of STFT :func:`masked_istft` adds on each side of a chunk: twice the frames whose
    windows reach a sample, so that the frames of every sample it keeps, and their windows, lie
    inside the chunk's piece of signal."""
    return 2 * -(-(n_fft // 2) // hop)


def n_chunks(samples: int, n_fft: int, hop: int, chunk_frames: int = CHUNK_FRAMES) -> int:
    """Number of chunks :func:`masked_istft` processes a signal of ``samples`` in."""
    return math.ceil(n_stft_frames(samples, n_fft, hop) / chunk_frames)


def chunk_stft_frames(samples: int, n_fft: int, hop: int, chunk_frames: int = CHUNK_FRAMES) -> int:
    """Frames of the largest STFT :func:`masked_istft` holds at once for a signal of ``samples``
    (its memory): a chunk and its margins."""
    return min(chunk_frames, n_stft_frames(samples, n_fft, hop)) + 2 * chunk_margin(n_fft, hop)


# --------------------------------------------------------------------------------------------
# Normalisation shared by training and inference
# --------------------------------------------------------------------------------------------

#: Magnitudes below this peak are treated as silence when normalising (a full-scale sine peaks
#: near n_fft/4 = 256 with a Hann window), so a silent patch is not blown up to full scale.
SILENCE_FLOOR = 1e-3


def normalize_patches(mix: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Divide each patch of the mixture, and the matching target patches, by the mixture's peak.

    Arrays are ``(batch, bins, frames[, 1])`` linear magnitudes. Input and target share one
    factor per patch, so they stay in the same (linear) domain and the target stays a masked
    copy of the input: ``target = mask * input`` holds before and after. The peak scaling makes
    the model's input independent of the song's loudness (the mixture peaks at 1).
    """
    axes = tuple(range(1, mix.ndim))
    scale = np.maximum(mix.max(axis=axes, keepdims=True), SILENCE_FLOOR)
    return (mix / scale,) + tuple(o / scale for o in others)

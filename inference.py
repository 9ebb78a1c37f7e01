"""Separate songs into vocals and accompaniment with a trained U-Net: any length, any rate.

    python inference.py SONG [SONG|FOLDER ...] [-o separated/] [--model PATH]

writes ``separated/<song>/vocals.wav`` and ``separated/<song>/accompaniment.wav`` at the song's
own sample rate, channel count and length. In a notebook::

    model, params = unet_model.load_model("runs/NAME/best.keras")
    stems = separate(audio, sr, model, params)   # {"vocals": ..., "accompaniment": ...}

How a song is separated
-----------------------
1. The mask is computed where the model was trained: the mono fold of the song, resampled to
   ``params.sample_rate`` (8192 Hz), as a ``(512, frames)`` magnitude spectrogram. It is cut
   into overlapping patches of 128 frames (:func:`overlap_add`), each patch is normalised
   (``audio.normalize_patches``) and masked by the model in batches, and the patch masks are
   blended with triangular weights, so that a frame's mask comes mostly from patches that see
   it in their middle, with context on both sides.
2. The mask is applied to the song's own STFT at its own rate (full band): an STFT whose
   n_fft and hop are scaled by ``sr / 8192`` (:func:`frame_grid`; n_fft rounded up to a fast
   FFT length), so its frames last as long as the model's; the mask is interpolated linearly to those frames' times and bins'
   frequencies. The same mask multiplies every channel's complex STFT (the mixture phase is
   kept) and the inverse STFT gives the vocals; the accompaniment is ``mixture - vocals``, so
   the two stems add up to the mixture exactly (up to float rounding).
3. Above 4096 Hz the model knows nothing: it only sees 0-4096 Hz. Its top bins are not
   trustworthy either: soxr's anti-aliasing filter, applied when the song is resampled to
   8192 Hz, attenuates the mixture by 6 dB at 3.92 kHz and by 28-46 dB from 4.0 kHz up, so the
   mask of those bins was computed from almost nothing. The mask is therefore used as the model
   gives it up to ``PASSBAND`` of the model's Nyquist frequency (3840 Hz), and every frequency
   above that takes, frame by frame, the mean of the mask over the reference band just below
   (``HIGH_BAND_REFERENCE``, 2880-3840 Hz): how much of the upper spectrum the model gave to
   the voice is extended to the sibilants, breaths and upper harmonics above it.
   ``benchmarks/bench_full_band.py`` measures this against the alternatives: that
   mean squared (shrunk towards 0 unless the band is clearly vocal), the mask at 3840 Hz, the
   model's top bin (4088 Hz) repeated upwards, and separating at 8192 Hz and upsampling (the
   "telephone" vocals, everything above 4 kHz left in the accompaniment). On synthetic songs
   at 44.1 kHz the plain mean kept the vocals' energy above 4 kHz within 1.3 dB (oracle
   masks) where the 8192 Hz route loses all of it, at an SDR above 4 kHz equal to the
   8192 Hz route's (-0.05 dB, oracle) or better (+0.18 dB, a trained model). Squaring won
   with oracle masks (+1.2 dB) but left a trained model's softer masks with a telephone
   (-36 dB of the vocals' energy above 4 kHz); the model's top bin was the worst everywhere
   (-2 to -3 dB). A song already at 8192 Hz needs no resampling and gets the mask exactly as
   in training (``audio.apply_mask``).

Memory stays bounded for long songs: the model runs on ``batch_size`` patches at a time and
the full-band STFT, masking and inverse STFT run on chunks of ``chunk_frames`` frames with
enough margin that the result equals the one-piece computation (tested). What grows with the
song is the audio itself (input and the two stems) and the 8192 Hz mono spectrogram and mask.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import audio
from audio import AudioParams, DEFAULT_PARAMS, UserError

#: Fraction of each patch shared with the next one. Measured (benchmarks/bench_overlap.py:
#: 30 MIR-1K test songs, a briefly trained model), SDR of the vocals over no
#: overlap: +0.076 dB at 0.25 for 1.24x the model's work, +0.094 dB at 0.5 (1.78x), +0.105 dB
#: at 0.75 (3.3x). 0.25 takes most of the gain and keeps a 3-minute song under a second.
DEFAULT_OVERLAP = 0.25
#: Patches per model call: one call for a typical song, bounded activations for an hour.
DEFAULT_BATCH_SIZE = 32
#: Full-rate STFT frames per chunk (about 96 s): bounds the size of the full-band STFT.
CHUNK_FRAMES = 1024
#: Part of the model's band (of its Nyquist frequency) that survives resampling intact: soxr
#: is flat to about 3.85 kHz and attenuates 6 dB at 3.92 kHz (at 8192 Hz).
PASSBAND = 0.9375
#: Band (fractions of the model's Nyquist frequency) whose mean mask is used above PASSBAND.
HIGH_BAND_REFERENCE = (0.703125, PASSBAND)
#: Modules Keras imports when they are installed, for features the command line never uses
#: (scikit-learn wrappers, pandas data adapters, matplotlib plots): a second of its start-up.
#: The command line hides them from its own process; Keras runs without them.
CLI_HIDDEN_MODULES = ("sklearn", "pandas", "matplotlib")
#: Where the CLI looks for a model when --model is not given.
PRETRAINED = Path(__file__).resolve().parent / "pretrained"
STEMS = ("vocals", "accompaniment")
TRAIN_HINT = ("train one: `python data_generator.py prepare --dataset mir1k --root DATA --cache cache/mir1k`, then "
              "`python train.py --cache cache/mir1k --run-dir runs/NAME`, and pass --model runs/NAME/best.keras")


# --------------------------------------------------------------------------------------------
# Segmenting and overlap-add
# --------------------------------------------------------------------------------------------


def overlap_add(x: np.ndarray, fn, size: int, overlap: float = DEFAULT_OVERLAP, batch_size: int = DEFAULT_BATCH_SIZE,
                progress=None) -> np.ndarray:
    """Apply ``fn`` to overlapping segments of ``x`` along its last axis and blend the results.

    ``x`` is ``(rows, frames)``; ``fn`` maps a batch ``(batch, rows, size)`` to
    ``(batch, out_rows, size)``. Segments start every ``size * (1 - overlap)`` frames and the
    last one ends at the last frame; an input shorter than ``size`` is zero padded at the end.
    Each output frame is the weighted mean of the segments covering it, with triangular weights
    (highest mid-segment, never zero), and the result is cropped to ``(out_rows, frames)``.
    ``progress`` (a tqdm bar or None) is advanced by one per segment.
    """
    frames = x.shape[-1]
    starts = segment_starts(frames, size, overlap)
    if frames < size:
        x = np.pad(x, ((0, 0), (0, size - frames)))
    total = x.shape[-1]
    # Triangular weights as in Demucs' apply_model: a patch edge, where the model sees no
    # context on one side, counts least, and every frame still has some weight.
    ramp = np.arange(1, size // 2 + 1, dtype=np.float32)
    weight = np.concatenate([ramp, np.arange(size - size // 2, 0, -1, dtype=np.float32)]) / (size // 2)
    out = None
    weight_sum = np.zeros(total, dtype=np.float32)
    for i in range(0, len(starts), batch_size):
        batch_starts = starts[i:i + batch_size]
        result = np.asarray(fn(np.stack([x[:, s:s + size] for s in batch_starts])), dtype=np.float32)
        if out is None:
            out = np.zeros((result.shape[1], total), dtype=np.float32)
        for s, segment in zip(batch_starts, result):
            out[:, s:s + size] += segment * weight
            weight_sum[s:s + size] += weight
        if progress is not None:
            progress.update(len(batch_starts))
    assert (weight_sum > 0).all(), "overlap_add left frames without any segment"
    return (out / weight_sum)[:, :frames]


def segment_starts(frames: int, size: int, overlap: float = DEFAULT_OVERLAP) -> list[int]:
    """First frames of the segments :func:`overlap_add` cuts ``frames`` frames into: every
    ``size * (1 - overlap)`` frames, and a last one ending at the last frame (or just ``[0]``)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    hop = max(1, round(size * (1 - overlap)))
    last = max(frames - size, 0)
    return list(range(0, last, hop)) + [last]


def n_segments(frames: int, size: int, overlap: float = DEFAULT_OVERLAP) -> int:
    """Number of segments (model patches) :func:`overlap_add` cuts ``frames`` frames into."""
    return len(segment_starts(frames, size, overlap))


# --------------------------------------------------------------------------------------------
# The model's mask
# --------------------------------------------------------------------------------------------

#: The mask functions of the last few models, so that a notebook calling separate() again does
#: not rebuild and retrace; bounded, as each entry keeps its model alive.
_PREDICTORS: "collections.OrderedDict[tuple[int, str], tuple]" = collections.OrderedDict()
_MAX_PREDICTORS = 4


def mask_predictor(model, params: AudioParams = DEFAULT_PARAMS, precision: str = "float32"):
    """A function mapping normalised patches ``(batch, n_bins, patch_frames, 1)`` to masks.

    ``model`` is the U-Net (its layer ``mask`` is used), its mask model, or any callable with
    that signature (an oracle, in the benchmark). A Keras model whose input does not match
    ``params`` raises :class:`UserError`. A U-Net from ``unet_model.build_unet`` runs as
    ``unet_model.inference_mask_model`` (the same mask, 1.4x as fast on CPUs);
    ``precision="bfloat16"`` computes it in bfloat16, 1.6x as fast again on CPUs with
    AVX512-BF16 or AMX (SDR within 0.01 dB of float32's, benchmarks/RESULTS.md), and
    ``"auto"`` chooses bfloat16 where ``unet_model.bfloat16_is_fast()``; other models run
    their layer ``mask`` as they are, in float32. The mask model is built once per model and
    precision, so one loaded model serves a whole batch of songs without rebuilding or
    retracing.
    """
    import keras

    import unet_model

    requested, chosen = precision, precision == "auto"
    if chosen:
        precision = "bfloat16" if unet_model.bfloat16_is_fast() else "float32"
    if precision not in unet_model.PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {unet_model.PRECISIONS}, got {precision!r}")
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise TypeError(f"model must be a keras.Model or a callable, got {type(model).__name__}")
        return model
    expected = (params.n_bins, params.patch_frames, 1)
    got = tuple(model.inputs[0].shape[1:])
    if got != expected:
        raise UserError(
            f"model {model.name!r} takes patches of {got} but the audio parameters give {expected} "
            f"(n_bins={params.n_bins}, patch_frames={params.patch_frames}); use the audio_params.json "
            "saved with that model"
        )
    cached = _PREDICTORS.get((id(model), requested))
    if cached is not None and cached[0] is model:
        return cached[1]
    try:
        mask_layer = model.get_layer("mask")
    except ValueError:
        raise UserError(f"model {model.name!r} has no layer named 'mask'; build it with unet_model.build_unet") from None
    if mask_layer.output is model.outputs[0]:
        masker = model
    else:
        try:
            masker = unet_model.inference_mask_model(model, precision)
        except ValueError as err:  # not build_unet's layout: its own mask layer, as trained
            if precision != "float32" and not chosen:
                raise UserError(f"{err}; it can only run in float32 (drop --precision {precision})") from None
            masker = unet_model.mask_model(model)

    def predict(patches: np.ndarray) -> np.ndarray:
        # predict_on_batch runs one compiled call, without Model.predict's per-call setup.
        return np.asarray(masker.predict_on_batch(patches))

    _PREDICTORS[(id(model), requested)] = (model, predict)
    while len(_PREDICTORS) > _MAX_PREDICTORS:
        _PREDICTORS.popitem(last=False)
    return predict


def predict_mask(mix_mag: np.ndarray, predictor, params: AudioParams = DEFAULT_PARAMS,
                 overlap: float = DEFAULT_OVERLAP, batch_size: int = DEFAULT_BATCH_SIZE, progress=None) -> np.ndarray:
    """The model's mask for a whole mono magnitude spectrogram ``(n_bins, frames)`` -> same shape.

    ``predictor`` comes from :func:`mask_predictor`. Patches of ``params.patch_frames`` frames
    are normalised one by one (mixture peak 1), as in training, and blended by
    :func:`overlap_add`.
    """
    def masks(patches):  # (B, bins, frames) -> (B, bins, frames)
        (normalised,) = audio.normalize_patches(patches)
        return predictor(normalised[..., None])[..., 0]

    return overlap_add(mix_mag, masks, params.patch_frames, overlap, batch_size, progress)


# --------------------------------------------------------------------------------------------
# Full-band mask application
# --------------------------------------------------------------------------------------------


def frame_grid(sr: int, params: AudioParams = DEFAULT_PARAMS) -> tuple[int, int]:
    """``(n_fft, hop)`` at rate ``sr`` whose frames last as long as the model's.

    The hop is the model's hop scaled by ``sr / sample_rate`` and rounded; 44100 Hz gives 4134
    samples, 0.09374 s instead of 0.09375 s, a drift absorbed by mapping each frame's time
    exactly (:func:`full_band_mask`). The window is the scaled n_fft (5512.5 at 44.1 kHz)
    rounded up to the next even length whose prime factors are all small (5544 = 2^3 3^2 7 11):
    0.6 % longer, and the FFT is twice as fast as with 5512 = 2^3 13 53.
    """
    import scipy.fft

    scale = sr / params.sample_rate
    n_fft = scipy.fft.next_fast_len(max(2, math.ceil(params.n_fft * scale)))
    while n_fft % 2:
        n_fft = scipy.fft.next_fast_len(n_fft + 1)
    return n_fft, max(1, round(params.hop_length * scale))


def full_band_mask(mask: np.ndarray, sr: int, frames: range | np.ndarray, params: AudioParams = DEFAULT_PARAMS,
                   high_band: str = "mean") -> np.ndarray:
    """Resample the model's mask ``(n_bins, model_frames)`` to the STFT grid at rate ``sr``.

    Returns ``(n_fft/2+1, len(frames))`` for the given frame indices of the :func:`frame_grid`
    STFT: linear interpolation in time (frame centres) and frequency (bin centres) up to
    ``PASSBAND`` of the model's band; above it each frame takes the mean mask of the
    ``HIGH_BAND_REFERENCE`` band (``high_band="mean"``, as the module docstring explains).
    Measured alternatives: ``"shrunk"`` (that mean squared), ``"edge"`` (the mask at
    ``PASSBAND``), ``"top"`` (every model bin up to 4088 Hz, then the top one repeated, as
    ``audio.extend_mask`` does).
    """
    n_fft, hop = frame_grid(sr, params)
    frames = np.asarray(frames)
    # Time: full-rate frame u is centred at u*hop/sr seconds, model frame t at t*hop_m/sr_m.
    position = frames * (hop / sr) * (params.sample_rate / params.hop_length)
    position = np.clip(position, 0, mask.shape[1] - 1)
    t0 = np.minimum(position.astype(np.int64), mask.shape[1] - 1)
    t1 = np.minimum(t0 + 1, mask.shape[1] - 1)
    wt = (position - t0).astype(np.float32)
    in_time = mask[:, t0] * (1 - wt) + mask[:, t1] * wt  # (n_bins, len(frames))

    # Frequency: bin k at rate sr is k*sr/n_fft Hz; model bin j is j*sr_m/n_fft_m Hz.
    model_bin_hz = params.sample_rate / params.n_fft
    nyquist = min(sr, params.sample_rate) / 2 / model_bin_hz  # as a fractional model bin
    if high_band == "top":  # audio.extend_mask's convention: every model bin, then the top one
        edge = min(params.n_bins - 1, nyquist)
        high = in_time[int(edge):int(edge) + 1]
    else:
        edge = PASSBAND * nyquist
        if high_band in ("shrunk", "mean"):
            high = in_time[round(HIGH_BAND_REFERENCE[0] * nyquist):int(edge) + 1].mean(axis=0, keepdims=True)
            if high_band == "shrunk":
                high = high**2
        elif high_band == "edge":
            high = in_time[int(edge):int(edge) + 1]
        else:
            raise ValueError(f"high_band must be 'mean', 'shrunk', 'edge' or 'top', got {high_band!r}")
    rows = np.concatenate([in_time, high])  # row n_bins: the high band
    q = np.arange(n_fft // 2 + 1) * (sr / n_fft) / model_bin_hz
    above = q > edge
    q = np.where(above, 0, q)
    j0 = q.astype(np.int64)
    j1 = np.minimum(j0 + 1, int(edge))
    wf = (q - j0).astype(np.float32)[:, None]
    j0 = np.where(above, len(rows) - 1, j0)
    j1 = np.where(above, len(rows) - 1, j1)
    return rows[j0] * (1 - wf) + rows[j1] * wf


def _padded_length(samples: int, n_fft: int, hop: int) -> int:
    """Length :func:`masked_istft` works on: at least one window, zero padded, for a very short
    input (``audio.stft`` itself pads the hop that puts the last samples under two windows)."""
    return max(samples, n_fft)


def n_chunks(samples: int, n_fft: int, hop: int, chunk_frames: int = CHUNK_FRAMES) -> int:
    """Number of chunks :func:`masked_istft` processes a signal of ``samples`` in."""
    return math.ceil((1 + _padded_length(samples, n_fft, hop) // hop) / chunk_frames)


def masked_istft(mixture: np.ndarray, mask_for, n_fft: int, hop: int, chunk_frames: int = CHUNK_FRAMES,
                 progress=None, timings: dict | None = None) -> np.ndarray:
    """``istft(stft(mixture) * mask)`` for ``(samples, channels)`` audio, in chunks of frames.

    ``mask_for(frames)`` returns the real mask ``(n_fft/2+1, len(frames))`` of the given frame
    indices; the same mask multiplies every channel. Each chunk's STFT is taken over a margin of
    extra frames on both sides and only samples whose every contributing frame lies inside the
    chunk's span are kept, so the result equals the one-piece computation while the complex
    STFT held at once is ``chunk_frames`` frames long.
    """
    samples, channels = mixture.shape
    padded = _padded_length(samples, n_fft, hop)
    total = 1 + padded // hop
    reach = -(-(n_fft // 2) // hop)  # frames on each side whose windows touch a sample
    out = np.empty((samples, channels), dtype=np.float32)
    for a in range(0, total, chunk_frames):
        b = min(a + chunk_frames, total)
        first = max(a - 2 * reach, 0)
        stop = padded if b == total else min((b + 2 * reach) * hop, padded)
        piece = mixture[first * hop:min(stop, samples)]
        if len(piece) < stop - first * hop:
            piece = np.pad(piece, ((0, stop - first * hop - len(piece)), (0, 0)))
        with _timed(timings, "stft"):
            spec = audio.stft(piece, n_fft=n_fft, hop_length=hop)  # (bins, frames, channels)
        with _timed(timings, "mask"):
            spec *= mask_for(np.arange(first, first + spec.shape[1]))[..., None]
        with _timed(timings, "istft"):
            y = audio.istft(spec, len(piece), n_fft=n_fft, hop_length=hop)
        keep_to = samples if b == total else min(b * hop, samples)
        if keep_to > a * hop:
            out[a * hop:keep_to] = y[(a - first) * hop:keep_to - first * hop]
        if progress is not None:
            progress.update(1)
    return out


# --------------------------------------------------------------------------------------------
# Separation
# --------------------------------------------------------------------------------------------


def separate(mixture: np.ndarray, sr: int, model, params: AudioParams | None = None,
             overlap: float = DEFAULT_OVERLAP, batch_size: int = DEFAULT_BATCH_SIZE, full_band: bool = True,
             chunk_frames: int = CHUNK_FRAMES, progress: bool | str = False,
             timings: dict | None = None) -> dict[str, np.ndarray]:
    """Separate a song into ``{"vocals": ..., "accompaniment": ...}`` at its own rate.

    ``mixture`` is ``(samples, channels)`` (or 1-D mono) float audio at ``sr`` Hz; both stems
    have its shape and ``vocals + accompaniment == mixture`` up to float rounding. ``model`` is
    a U-Net from ``unet_model`` (or see :func:`mask_predictor`), ``params`` the audio
    parameters saved with it (default :data:`audio.DEFAULT_PARAMS`). ``overlap`` is the
    fraction of each patch shared with the next; ``full_band=False`` separates at the model's
    rate and upsamples the vocals (no vocals above 4 kHz; for comparison). ``progress`` (True or
    a label) shows a progress bar on stderr; ``timings`` (a dict) accumulates seconds per stage.
    """
    vocals = separate_vocals(mixture, sr, model, params, overlap, batch_size, full_band, chunk_frames,
                             progress, timings)
    return {"vocals": vocals, "accompaniment": np.asarray(mixture, dtype=np.float32) - vocals}


def separate_vocals(mixture: np.ndarray, sr: int, model, params: AudioParams | None = None,
                    overlap: float = DEFAULT_OVERLAP, batch_size: int = DEFAULT_BATCH_SIZE, full_band: bool = True,
                    chunk_frames: int = CHUNK_FRAMES, progress: bool | str = False,
                    timings: dict | None = None) -> np.ndarray:
    """The vocals stem of :func:`separate` alone (same arguments; the mixture's shape)."""
    from tqdm import tqdm

    params = params or DEFAULT_PARAMS
    x = np.asarray(mixture, dtype=np.float32)
    one_d = x.ndim == 1
    if one_d:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"mixture must be non-empty (samples, channels) audio, got shape {np.shape(mixture)}")
    if not np.isfinite(x).all():
        raise ValueError("mixture contains NaN or infinite samples")
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sr = int(sr)
    predictor = mask_predictor(model, params)

    with _timed(timings, "resample"):
        mono = audio.resample(audio.to_mono(x), sr, params.sample_rate)[:, 0]
        # A song shorter than one window: zeros after it, as the centred STFT would add anyway.
        mono = np.pad(mono, (0, max(0, params.n_fft - len(mono))))
    with _timed(timings, "model_stft"):
        mix_mag = audio.magnitude(mono, params)  # (n_bins, frames) at the model's rate
    n_fft, hop = frame_grid(sr, params) if full_band else (params.n_fft, params.hop_length)
    samples = x.shape[0] if full_band else round(x.shape[0] * params.sample_rate / sr)
    steps = n_segments(mix_mag.shape[1], params.patch_frames, overlap) + n_chunks(samples, n_fft, hop, chunk_frames)
    with tqdm(total=steps, desc=progress if isinstance(progress, str) else "separating", unit="step",
              disable=not progress, leave=False, file=sys.stderr) as bar:
        with _timed(timings, "model"):
            mask = predict_mask(mix_mag, predictor, params, overlap, batch_size, bar)
        vocals = apply_vocal_mask(x, sr, mask, params, full_band, chunk_frames=chunk_frames, progress=bar,
                                  timings=timings)
    return vocals[:, 0] if one_d else vocals


def apply_vocal_mask(mixture: np.ndarray, sr: int, mask: np.ndarray, params: AudioParams = DEFAULT_PARAMS,
                     full_band: bool = True, high_band: str = "mean", chunk_frames: int = CHUNK_FRAMES,
                     progress=None, timings: dict | None = None) -> np.ndarray:
    """The vocals of ``(samples, channels)`` audio at ``sr`` under a model-rate mask ``(n_bins, frames)``.

    ``full_band``: the mask is mapped onto the song's own STFT (:func:`full_band_mask`; the
    model's own grid when ``sr`` is the model's rate). Otherwise the song is resampled to the
    model's rate, masked there and the vocals resampled back (nothing above 4 kHz).
    Split from :func:`separate_vocals` so that any mask (an oracle, in the benchmark) can be applied.
    """
    n_fft, hop = params.n_fft, params.hop_length

    def exact_mask(frames):  # the model's own frames, past the last one: its last mask
        return audio.extend_mask(mask[:, np.minimum(frames, mask.shape[1] - 1)], n_fft // 2 + 1)

    if sr == params.sample_rate:
        # No resampling, so the model saw every bin: apply its mask as in training.
        return masked_istft(mixture, exact_mask, n_fft, hop, chunk_frames, progress, timings)
    if full_band:
        n_fft, hop = frame_grid(sr, params)
        return masked_istft(mixture, lambda frames: full_band_mask(mask, sr, frames, params, high_band), n_fft, hop,
                            chunk_frames, progress, timings)
    with _timed(timings, "resample"):
        low = audio.resample(mixture, sr, params.sample_rate)
    low_vocals = masked_istft(low, exact_mask, n_fft, hop, chunk_frames, progress, timings)
    with _timed(timings, "resample"):
        return _fit_length(audio.resample(low_vocals, params.sample_rate, sr), mixture.shape[0])


def _fit_length(x: np.ndarray, samples: int) -> np.ndarray:
    """Crop or zero-pad ``(samples', channels)`` to ``samples`` (resampling rounds lengths)."""
    if x.shape[0] >= samples:
        return x[:samples]
    return np.pad(x, ((0, samples - x.shape[0]), (0, 0)))


@contextlib.contextmanager
def _timed(timings: dict | None, stage: str):
    """Add the block's wall time to ``timings[stage]`` (a no-op when ``timings`` is None)."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def song_name(path) -> str:
    """Output folder name of a song: the file's stem, the parent folder's name for a stems-layout
    ``mixture.*``, and ``X`` for ``X.stem.mp4``."""
    path = Path(path)
    stem = path.stem
    if stem.lower() == "mixture":
        return path.resolve().parent.name
    if stem.lower().endswith(".stem"):
        return stem[: -len(".stem")]
    return stem


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


def resolve_model(path: str | None) -> Path:
    """The ``.keras`` file to load: ``path`` itself, or inside a folder (a run folder or
    ``pretrained/``) its ``best.keras``, else its only ``.keras`` file. No ``path``: the
    pretrained model. Raises :class:`UserError` saying how to get a model."""
    if path is None:
        if not PRETRAINED.is_dir() or not list(PRETRAINED.glob("*.keras")):
            raise UserError(f"no --model given and no pretrained model in {PRETRAINED}; {TRAIN_HINT}")
        folder = PRETRAINED
    else:
        folder = Path(path)
        if not folder.exists():
            raise UserError(f"{folder}: no such model file or folder; {TRAIN_HINT}")
        if not folder.is_dir():
            return folder
    if (folder / "best.keras").is_file():
        return folder / "best.keras"
    candidates = sorted(folder.glob("*.keras"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"{folder}: no .keras model in this folder; {TRAIN_HINT}")
    raise UserError(f"{folder}: several models ({', '.join(p.name for p in candidates)}); pass one with --model")


def prepare_output(root: Path, names: list[str], overwrite: bool) -> None:
    """Create the output folder and refuse existing stems (unless ``overwrite``), before any work."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder; choose another output folder with -o")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{root}: cannot create the output folder ({err.strerror}); choose another with -o") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{root}: output folder is not writable; choose another with -o")
    if overwrite:
        return
    existing = [root / name / f"{stem}.wav" for name in names for stem in STEMS if (root / name / f"{stem}.wav").exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]} already exists{more}; pass --overwrite to replace, or choose another folder with -o")


def write_stems(stems: dict[str, np.ndarray], sr: int, folder: Path) -> None:
    """Write ``folder/<stem>.wav`` for each stem: all are written to a temporary folder first
    and moved into place only when every one is complete, so no partial output is left."""
    parent = folder.parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=parent))
    except OSError as err:
        raise UserError(f"{parent}: cannot write there ({err.strerror}); choose another folder with -o") from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for stem, x in stems.items():
                audio.save_audio(tmp / f"{stem}.wav", x, sr)
        for warning in caught:  # e.g. a stem louder than full scale, kept as float WAV
            print(f"note: {str(warning.message).replace(str(tmp), str(folder))}", file=sys.stderr)
        try:
            folder.mkdir(exist_ok=True)
            for stem in stems:
                os.replace(tmp / f"{stem}.wav", folder / f"{stem}.wav")
        except OSError as err:
            raise UserError(f"{folder}: cannot write ({err.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Separate songs into vocals and accompaniment with a trained U-Net. Writes "
                    "OUTPUT/<song>/vocals.wav and accompaniment.wav at each song's own rate, channels and length.")
    parser.add_argument("songs", nargs="+", metavar="SONG",
                        help="audio files (wav, flac, mp3, ogg, m4a, mp4; a .stem.mp4's mixture) or folders "
                             "(their audio files, recursively)")
    parser.add_argument("-o", "--output", default="separated", type=Path,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="a .keras model with its audio_params.json beside it, or a run folder "
                             f"(its best.keras); default: the model in {PRETRAINED.name}/")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                        help="fraction of each 12 s patch shared with the next, in [0, 1) (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="patches per model call (default: %(default)s)")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="arithmetic of the model: bfloat16 is 1.6x as fast as float32 on CPUs with AVX512-BF16 "
                             "or AMX, SDR within 0.01 dB (benchmarks/RESULTS.md), and much slower without; auto "
                             "(default) takes bfloat16 on such CPUs with TensorFlow's oneDNN, float32 elsewhere")
    parser.add_argument("--overwrite", action="store_true", help="replace stems that already exist")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if not 0 <= args.overlap < 1:
        raise UserError(f"--overlap {args.overlap}: must be at least 0 and below 1 (e.g. 0.5)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    model_path = resolve_model(args.model)
    files, problems = find_songs(args.songs, exclude=args.output)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    names = [song_name(f) for f in files]
    by_name: dict[str, Path] = {}
    for f, name in zip(files, names):
        if name in by_name:
            raise UserError(f"{by_name[name]} and {f} would both be written to {args.output / name}; "
                            "separate them in two runs with different -o folders")
        by_name[name] = f
    if not files:
        raise UserError("no songs to separate")
    prepare_output(args.output, names, args.overwrite)

    import unet_model

    model, params = unet_model.load_model(model_path)
    predictor = mask_predictor(model, params, args.precision)  # checks the model once, before the first song
    failed = list(problems)
    progress = sys.stderr.isatty()
    for path, name in zip(files, names):
        start = time.perf_counter()
        try:
            mixture, sr = audio.load_audio(path)
            mixture = np.require(mixture, np.float32, ["C", "W"])  # writable: the accompaniment goes in place
            vocals = separate_vocals(mixture, sr, predictor, params, args.overlap, args.batch_size,
                                     progress=name if progress else False)
            np.subtract(mixture, vocals, out=mixture)  # the accompaniment, in place: one copy less
            write_stems({"vocals": vocals, "accompaniment": mixture}, sr, args.output / name)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(str(err))
            continue
        except MemoryError:
            print(f"error: {path}: not enough memory to separate it", file=sys.stderr)
            failed.append(f"{path}: out of memory")
            continue
        seconds = mixture.shape[0] / sr
        print(f"{path} -> {args.output / name}/ ({seconds:.1f} s of audio at {sr} Hz, "
              f"{mixture.shape[1]} ch, in {time.perf_counter() - start:.1f} s)")
    if failed:
        print(f"error: {len(failed)} of {len(files) + len(problems)} inputs failed (listed above); "
              f"the other {len(files) + len(problems) - len(failed)} were separated", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    for unused in CLI_HIDDEN_MODULES:  # this process only, not a program importing this module
        sys.modules.setdefault(unused, None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    status = audio.run_cli(main)
    # Every stem is written, closed and renamed into place by now: skip the interpreter's
    # teardown of TensorFlow (most of a second, benchmarks/RESULTS.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

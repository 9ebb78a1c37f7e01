"""Separate songs into vocals and accompaniment with a trained U-Net: any length, any rate.

    python inference.py SONG [SONG|FOLDER ...] [-o separated/] [--model PATH] [--wiener] [--no-refine]

writes ``separated/<song>/vocals.wav`` and ``separated/<song>/accompaniment.wav`` at the song's
own sample rate, channel count and length. ``--stems``, ``--filename``, ``--format``, ``--bits``
and ``--mp3-bitrate`` choose what is written (``stems.Outputs``), ``--start`` and ``--duration``
part of each song; ``separation/stems.py`` finds the songs, checks memory, names and writes
their stems. In a notebook or a program, a :class:`Separator` loads the model once and
separates arrays or files::

    separator = Separator()                     # the shipped model; Separator("runs/NAME") another
    stems = separator.separate(mixture, sr)     # {"vocals": ..., "accompaniment": ...}
    separator.separate_file("song.mp3", "separated")   # separated/song/{vocals,accompaniment}.wav

How a song is separated
-----------------------
1. The mask is computed where the model was trained: on the song folded to mono and resampled
   to 8192 Hz, as a ``(512, frames)`` magnitude spectrogram cut into overlapping patches of 128
   frames, each normalised and masked by the model. The patch masks are blended with triangular
   weights (:func:`overlap_add`), so a frame's mask comes mostly from patches that see it in
   their middle, with context on both sides.
2. The mask is applied to the song's own STFT at its own rate (full band), whose frames last as
   long as the model's (:func:`frame_grid`): interpolated to those frames' times and bins'
   frequencies (:func:`full_band_mask`), it multiplies every channel's complex STFT (the mixture
   phase is kept), and the inverse STFT gives the vocals. The accompaniment is
   ``mixture - vocals``, so the two stems add up to the mixture exactly (up to float rounding).
3. Above 4096 Hz the model knows nothing, and of its top bins little: resampling to 8192 Hz has
   all but silenced the mixture there. So above :data:`PASSBAND` of the model's band (3840 Hz)
   every frequency takes, frame by frame, the mean mask of the band just below
   (:data:`HIGH_BAND_REFERENCE`): how much of the upper spectrum the model gave to the voice is
   extended to the sibilants, breaths and upper harmonics above it. A song already at 8192 Hz
   gets the mask exactly as in training (``audio.apply_mask``).
4. Optionally (``--wiener``), a multichannel Wiener filter refines the masked estimates, as
   Open-Unmix does (:func:`wiener_vocals`); off by default (docs/design.md).
5. A second, finer mask (:func:`refine_vocals`, ``--refine``, on by default): the vocals are
   re-read on a 4096-point STFT (at 44.1 kHz) with 75 % overlap, and each cell of the mixture
   takes their share of its magnitude, at most all of it. The first mask's STFT has only 25 %
   overlap, like the model's, and its inverse spreads the mask's effect at the frames' edges;
   the second reading repairs most of that (docs/design.md, "The second, finer mask").

Long songs take bounded memory: the model runs on ``batch_size`` patches at a time, and steps 2
and 5 on chunks of frames (``audio.masked_istft``), with the same result as in one piece.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from separation import audio, stems
from separation.audio import DEFAULT_PARAMS, AudioParams
from separation.cli import ArgumentParser, Steps, bounded, checked, progress_bar, run_cli, timed
from separation.errors import UserError

#: Fraction of each patch shared with the next one (benchmarks/bench_overlap.py measures others).
DEFAULT_OVERLAP = 0.25
#: Patches per model call: one call for a typical song, bounded activations for an hour.
DEFAULT_BATCH_SIZE = 32
#: Part of the model's band (of its Nyquist frequency) that survives resampling intact: the
#: resampler (soxr) is flat up to about there and attenuates steeply above.
PASSBAND = 0.9375
#: Band (fractions of the model's Nyquist frequency) whose mean mask is used above PASSBAND.
HIGH_BAND_REFERENCE = (0.703125, PASSBAND)


# --------------------------------------------------------------------------------------------
# Segmenting and overlap-add
# --------------------------------------------------------------------------------------------


def overlap_add(x: np.ndarray, fn, size: int, *, overlap: float = DEFAULT_OVERLAP, batch_size: int = DEFAULT_BATCH_SIZE,
                progress=None) -> np.ndarray:
    """Apply ``fn`` to overlapping segments of ``x`` along its last axis and blend the results.

    ``x`` is ``(rows, frames)``; ``fn`` maps a batch ``(batch, rows, size)`` to
    ``(batch, out_rows, size)``. Segments start every ``size * (1 - overlap)`` frames and the
    last one ends at the last frame; an input shorter than ``size`` is zero padded at the end.
    Each output frame is the weighted mean of the segments covering it, with triangular weights
    (highest mid-segment, never zero), and the result is cropped to ``(out_rows, frames)``.
    ``progress(n)``, if given, is called with the number of segments done after each batch.
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
            progress(len(batch_starts))
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
# Full-band mask application
# --------------------------------------------------------------------------------------------


def frame_grid(sr: int, params: AudioParams = DEFAULT_PARAMS) -> tuple[int, int]:
    """``(n_fft, hop)`` at rate ``sr`` whose frames last as long as the model's.

    The hop is the model's hop scaled by ``sr / sample_rate`` and rounded (:func:`full_band_mask`
    maps each frame's time exactly); the window is the scaled n_fft rounded up to the next even
    length whose prime factors are all small, for a fast FFT.
    """
    import scipy.fft

    scale = sr / params.sample_rate
    n_fft = scipy.fft.next_fast_len(max(2, math.ceil(params.n_fft * scale)))
    while n_fft % 2:
        n_fft = scipy.fft.next_fast_len(n_fft + 1)
    return n_fft, max(1, round(params.hop_length * scale))


def full_band_mask(mask: np.ndarray, sr: int, frames: range | np.ndarray, params: AudioParams = DEFAULT_PARAMS, *,
                   high_band=None, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Resample the model's mask ``(n_bins, model_frames)`` to the STFT grid at rate ``sr``.

    Returns ``(n_fft/2+1, len(frames))`` for the given frame indices of the :func:`frame_grid`
    STFT: linear interpolation in time (frame centres) and frequency (bin centres) up to the
    passband's edge; above it each frame takes one value, :func:`mean_high_band`'s (as the
    module docstring explains). ``high_band(in_time, nyquist) -> (row, edge)`` replaces that
    rule (``benchmarks/bench_full_band.py`` measures others this way). ``grid`` ``(n_fft, hop)``
    replaces :func:`frame_grid`'s STFT (the Wiener filter's has a shorter hop).
    """
    n_fft, hop = grid or frame_grid(sr, params)
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
    high, edge = (high_band or mean_high_band)(in_time, nyquist)
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


def mean_high_band(in_time: np.ndarray, nyquist: float) -> tuple[np.ndarray, float]:
    """The mask above the passband: ``(row (1, frames), edge)``, each frame's mean mask over
    :data:`HIGH_BAND_REFERENCE`, and the passband's edge (:data:`PASSBAND` of ``nyquist``, the
    model's or the song's Nyquist frequency in model bins, whichever is lower)."""
    edge = PASSBAND * nyquist
    return in_time[round(HIGH_BAND_REFERENCE[0] * nyquist):int(edge) + 1].mean(axis=0, keepdims=True), edge


# --------------------------------------------------------------------------------------------
# Wiener post-filter (opt-in)
# --------------------------------------------------------------------------------------------


#: The Wiener filter's STFT is the mask's (:func:`frame_grid`) with this fraction of its hop:
#: 75 % overlap, as Open-Unmix's 4096/1024 (docs/design.md).
WIENER_HOP = 0.25
#: Seconds of frames per block of the Wiener filter's EM, over which the spatial covariances are
#: estimated (bounding its memory): Open-Unmix's ``wiener_win_len``, 300 frames of 1024 at 44.1 kHz.
WIENER_SECONDS = 7.0
POST_FILTERS = (None, "wiener")


def wiener_vocals(spec: np.ndarray, mask: np.ndarray, *, iterations: int = 1, block_frames: int | None = None) -> np.ndarray:
    """The vocals' STFT of a mixture STFT after a multichannel Wiener filter (``norbert.wiener``).

    ``spec`` is the mixture's complex STFT ``(bins, frames, channels)``, ``mask`` the model's
    vocals mask ``(bins, frames)``; the result has ``spec``'s shape. The method is Open-Unmix's
    post-filter (Nugraha, Liutkus & Vincent 2016; ``norbert``, https://github.com/sigsep/norbert):

    1. Source magnitude estimates, per channel: vocals ``mask * |X|``, accompaniment
       ``(1 - mask) * |X|``, with the mixture's phase as first complex estimates.
    2. Each source is modelled, in each bin and frame, as a complex Gaussian whose covariance
       is a power spectrogram ``v_j(f, t)`` times a spatial covariance matrix ``R_j(f)``
       (channels x channels: where the source sits in the stereo image). Expectation-
       maximisation (``iterations`` rounds) re-estimates ``v_j`` and ``R_j`` from the current
       estimates and then
    3. the complex Wiener estimates ``y_j = v_j R_j (sum_k v_k R_k)^-1 x``: unlike the mask,
       they can use the inter-channel phase to tell a centred voice from side instruments.

    Only the vocals are returned: the caller takes the accompaniment as ``mixture - vocals``,
    so the stems add up to the mixture exactly. ``R_j`` is estimated per block of
    ``block_frames`` frames (all frames if None), which bounds memory.
    """
    import norbert

    block_frames = block_frames or spec.shape[1]
    out = np.empty_like(spec)
    for start in range(0, spec.shape[1], block_frames):
        block = slice(start, start + block_frames)
        # norbert's layout: x (frames, bins, channels) in float64 as it advises, v (..., sources)
        x = spec[:, block].transpose(1, 0, 2).astype(np.complex128)
        gain = np.clip(mask[:, block], 0, 1).T[..., None]
        v = np.stack([gain * np.abs(x), (1 - gain) * np.abs(x)], axis=-1)
        # Magnitudes with the mixture phase, then EM: Open-Unmix's default (use_softmask=False).
        y = norbert.wiener(v, x, iterations, use_softmask=False)
        out[:, block] = y[..., 0].transpose(1, 0, 2)
    return out


# --------------------------------------------------------------------------------------------
# The second, finer mask
# --------------------------------------------------------------------------------------------


#: The refinement's window (:func:`refine_grid`), in samples at :data:`REFINE_RATE`: 4096 at
#: 44.1 kHz, 93 ms, Open-Unmix's STFT (2048 and 8192 do as well: benchmarks/RESULTS.md,
#: "Inference refinements"). None turns the refinement off.
DEFAULT_REFINE = 4096
#: The rate at which a refinement window is counted in samples; at another rate it lasts as long.
REFINE_RATE = 44100
#: The refinement's hop, as a fraction of its window: 75 % overlap, as Open-Unmix's 4096/1024.
REFINE_HOP = 0.25
#: The refinement windows accepted (samples at :data:`REFINE_RATE`): 0.4 ms to 1.5 s.
MIN_REFINE, MAX_REFINE = 16, 65536


def refine_grid(sr: int, window: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the refinement's STFT at rate ``sr``: ``window`` samples at
    :data:`REFINE_RATE` scaled to ``sr`` (the same duration), rounded up to an even length with
    small prime factors (a fast FFT, as :func:`frame_grid`), and :data:`REFINE_HOP` of it."""
    import scipy.fft

    n_fft = scipy.fft.next_fast_len(max(4, math.ceil(window * sr / REFINE_RATE)))
    while n_fft % 2:
        n_fft = scipy.fft.next_fast_len(n_fft + 1)
    return n_fft, max(1, round(n_fft * REFINE_HOP))


def ratio_mask(estimate: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """``min(|estimate| / |mixture|, 1)`` of two complex STFTs of one shape, cell by cell (0 where
    the mixture is 0): the share of the mixture's magnitude an estimate takes, never above all of it."""
    magnitude = np.abs(mixture)
    return np.minimum(np.abs(estimate), magnitude) / np.maximum(magnitude, np.finfo(np.float32).tiny)


def refine_vocals(mixture: np.ndarray, vocals: np.ndarray, n_fft: int, hop: int, *,
                  chunk_frames: int = audio.CHUNK_FRAMES, progress=None, timings: dict | None = None) -> np.ndarray:
    """The vocals ``(samples, channels)`` re-masked on a finer STFT: a second mask, from the first estimate.

    On an STFT of ``n_fft`` points and ``hop`` (:func:`refine_grid`), each channel's vocals
    ``V`` and mixture ``X`` give :func:`ratio_mask` ``min(|V| / |X|, 1)``, which multiplies the
    mixture's STFT (its phase kept); the inverse STFT is the refined vocals. Re-reading the
    first estimate on a denser grid with the mixture's phase, and refusing it any cell louder
    than the mixture's, is a step towards a consistent estimate: it repairs most of what the
    first mask's 25 %-overlap STFT amplified at its frames' edges (docs/design.md, "The second,
    finer mask"). Chunked as the first mask (``audio.masked_istft``), the same result as in one piece.
    """
    def apply(spec, _, vocals_spec):
        return spec * ratio_mask(vocals_spec, spec)

    return audio.masked_istft(mixture, None, n_fft, hop, chunk_frames=chunk_frames, apply=apply, guide=vocals,
                              progress=progress, timings=timings)


# --------------------------------------------------------------------------------------------
# Separation
# --------------------------------------------------------------------------------------------


class Separator:
    """Vocals and accompaniment from a trained U-Net: load the model once, separate arrays or files.

    ``model`` is None (the shipped model, ``unet_model.PRETRAINED``), a ``.keras`` file or a run
    folder (loaded with the ``audio_params.json`` beside it), a Keras U-Net from
    ``unet_model.build_unet`` (its audio parameters in ``params``, default
    :data:`audio.DEFAULT_PARAMS`), or any function mapping normalised patches
    ``(batch, n_bins, patch_frames, 1)`` to masks (an oracle mask, the PyTorch twin).

    ``overlap`` is the fraction of each patch shared with the next, ``batch_size`` the patches
    per model call, ``chunk_frames`` the full-rate STFT frames processed at once (memory).
    ``precision`` (``"float32"``, ``"bfloat16"`` or ``"auto"``): a U-Net runs as
    ``unet_fast.fastest_mask_model`` chooses, the same mask, faster. ``post_filter="wiener"``
    refines the masked stems with a multichannel Wiener filter of ``wiener_iterations`` EM rounds
    (:func:`wiener_vocals`). ``refine``, a window in samples at 44.1 kHz (:func:`refine_grid`),
    re-masks the vocals on that finer STFT (:func:`refine_vocals`), after the Wiener filter if
    both are on; None leaves them as masked. Values out of range raise ``ValueError``.
    """

    def __init__(self, model=None, params: AudioParams | None = None, *, overlap: float = DEFAULT_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "float32", chunk_frames: int = audio.CHUNK_FRAMES,
                 post_filter: str | None = None, wiener_iterations: int = 1, refine: int | None = DEFAULT_REFINE):
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1 or chunk_frames < 1:
            raise ValueError(f"batch_size and chunk_frames must be at least 1, got {batch_size} and {chunk_frames}")
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
        if post_filter not in POST_FILTERS:
            raise ValueError(f"post_filter must be None or 'wiener', got {post_filter!r}")
        if int(wiener_iterations) != wiener_iterations or wiener_iterations < 1:
            raise ValueError(f"wiener_iterations must be an integer of at least 1, got {wiener_iterations}")
        if refine is not None and (int(refine) != refine or not MIN_REFINE <= refine <= MAX_REFINE):
            raise ValueError(f"refine must be None or a window of {MIN_REFINE} to {MAX_REFINE} samples, got {refine}")
        if model is None or isinstance(model, (str, os.PathLike)):
            import unet_model

            model, saved = unet_model.load_model(model)
            if params is not None:
                saved.check_same(params, f"model {model.name!r}", "leave params out to use the model's own")
            params = saved
        self.model = model
        self.params = params or DEFAULT_PARAMS
        self.overlap, self.batch_size, self.chunk_frames = overlap, int(batch_size), int(chunk_frames)
        self.post_filter, self.wiener_iterations = post_filter, int(wiener_iterations)
        self.refine = None if refine is None else int(refine)
        from separation import unet_fast

        self.predict, self.precision = unet_fast.mask_predictor(model, self.params, precision)

    def separate(self, mixture: np.ndarray, sr: int, *, progress=None, timings: dict | None = None) -> dict[str, np.ndarray]:
        """Separate a song into ``{"vocals": ..., "accompaniment": ...}`` at its own rate.

        ``mixture`` is ``(samples, channels)`` (or 1-D mono) float audio at ``sr`` Hz; both stems
        have its shape and ``vocals + accompaniment == mixture`` up to float rounding.
        ``progress(done, total)``, if given, is called as the work advances (model batches and
        STFT chunks); ``timings`` (a dict) accumulates seconds per stage (the benchmark's).
        """
        vocals = self.vocals(mixture, sr, progress=progress, timings=timings)
        return {"vocals": vocals, "accompaniment": np.asarray(mixture, dtype=np.float32) - vocals}

    def vocals(self, mixture: np.ndarray, sr: int, *, progress=None, timings: dict | None = None) -> np.ndarray:
        """The vocals stem of :meth:`separate` alone (the mixture's shape)."""
        params = self.params
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
        sr = int(sr)
        with timed(timings, "resample"):
            mono = audio.resample(audio.to_mono(x), sr, params.sample_rate)[:, 0]
            # A song shorter than one window: zeros after it, as the centred STFT would add anyway.
            mono = np.pad(mono, (0, max(0, params.n_fft - len(mono))))
        with timed(timings, "model_stft"):
            mix_mag = audio.magnitude(mono, params)  # (n_bins, frames) at the model's rate
        grids = [self.stft_grid(sr)] + ([self.refine_grid(sr)] if self.refine else [])
        step = Steps(progress, n_segments(mix_mag.shape[1], params.patch_frames, self.overlap)
                     + sum(audio.n_chunks(x.shape[0], n_fft, hop, self.chunk_frames) for n_fft, hop in grids))
        with timed(timings, "model"):
            mask = self.mask(mix_mag, progress=step)
        vocals = self.apply_mask(x, sr, mask, progress=step, timings=timings)
        if self.refine:
            vocals = refine_vocals(x, vocals, *self.refine_grid(sr), chunk_frames=self.chunk_frames, progress=step,
                                   timings=timings)
        return vocals[:, 0] if one_d else vocals

    def mask(self, mix_mag: np.ndarray, *, progress=None) -> np.ndarray:
        """The model's mask for a whole mono magnitude spectrogram ``(n_bins, frames)`` -> same shape.

        Patches of ``patch_frames`` frames are normalised one by one (mixture peak 1), as in
        training, and blended by :func:`overlap_add`; ``progress(n)`` counts patches.
        """
        def masks(patches):  # (B, bins, frames) -> (B, bins, frames)
            (normalised,) = audio.normalize_patches(patches)
            return self.predict(normalised[..., None])[..., 0]

        return overlap_add(mix_mag, masks, self.params.patch_frames, overlap=self.overlap, batch_size=self.batch_size,
                           progress=progress)

    def apply_mask(self, mixture: np.ndarray, sr: int, mask: np.ndarray, *, progress=None,
                   timings: dict | None = None) -> np.ndarray:
        """The vocals of ``(samples, channels)`` audio at ``sr`` under a model-rate mask ``(n_bins, frames)``.

        The mask is mapped onto the song's own STFT (:func:`full_band_mask`), or, at the model's
        own rate, applied as in training; with ``post_filter="wiener"``, :meth:`_wiener`. Any mask
        can be applied (an oracle, in the benchmarks).
        """
        params = self.params
        if self.post_filter == "wiener":
            return self._wiener(mixture, sr, mask, progress=progress, timings=timings)
        if sr == params.sample_rate:
            # No resampling, so the model saw every bin: apply its mask as in training.
            def mask_for(frames):  # the model's own frames, past the last one: its last mask
                return audio.extend_mask(mask[:, np.minimum(frames, mask.shape[1] - 1)], params.n_fft // 2 + 1)

            n_fft, hop = params.n_fft, params.hop_length
        else:
            def mask_for(frames):
                return full_band_mask(mask, sr, frames, params)

            n_fft, hop = frame_grid(sr, params)
        # istft(stft(mixture) * mask), chunk by chunk of frames to bound the memory
        return audio.masked_istft(mixture, mask_for, n_fft, hop, chunk_frames=self.chunk_frames, progress=progress,
                                  timings=timings)

    def stft_grid(self, sr: int) -> tuple[int, int]:
        """``(n_fft, hop)`` of the STFT the mask is applied on at rate ``sr`` (:func:`frame_grid`;
        with the Wiener filter, :data:`WIENER_HOP` of its hop)."""
        n_fft, hop = frame_grid(sr, self.params)  # at the model's rate, its own n_fft and hop
        return (n_fft, max(1, round(hop * WIENER_HOP))) if self.post_filter == "wiener" else (n_fft, hop)

    def refine_grid(self, sr: int) -> tuple[int, int] | None:
        """``(n_fft, hop)`` of the refinement's STFT at rate ``sr`` (:func:`refine_grid`), None when it is off."""
        return refine_grid(sr, self.refine) if self.refine else None

    def _wiener(self, mixture: np.ndarray, sr: int, mask: np.ndarray, *, progress=None,
                timings: dict | None = None) -> np.ndarray:
        """:meth:`apply_mask` with the Wiener post-filter: the mask mapped onto an STFT of
        :data:`WIENER_HOP` of the hop, and each chunk's vocals :func:`wiener_vocals`'s instead of
        mask x mixture (its spatial covariances are estimated per block within a chunk, so the
        result depends slightly on ``chunk_frames``)."""
        params = self.params
        n_fft, hop = self.stft_grid(sr)
        # At the model's rate the model saw every bin: its own mask, the top bin repeated (as in training).
        own_bins = (lambda in_time, nyquist: (in_time[-1:], nyquist)) if sr == params.sample_rate else None
        block_frames = max(1, round(WIENER_SECONDS * sr / hop))

        def mask_for(frames):
            return full_band_mask(mask, sr, frames, params, high_band=own_bins, grid=(n_fft, hop))

        def apply(spec, chunk_mask):
            return wiener_vocals(spec, chunk_mask, iterations=self.wiener_iterations, block_frames=block_frames)

        return audio.masked_istft(mixture, mask_for, n_fft, hop, chunk_frames=self.chunk_frames, apply=apply,
                                  progress=progress, timings=timings)

    def separate_file(self, path, out_dir, *, name: str | None = None, overwrite: bool = False, progress=None,
                      outputs: stems.Outputs | None = None, start: float = 0.0,
                      duration: float | None = None) -> dict[str, Path]:
        """Separate an audio file into ``out_dir/<name>/{vocals,accompaniment}.wav``; returns ``{stem: file}``.

        ``outputs`` (``stems.Outputs``) chooses other stems, file names or formats; ``name`` (the
        template's {track}) defaults to ``stems.song_name``; ``start`` and ``duration`` (seconds)
        separate part of the file. The stems have the file's rate, channels and length. Existing
        files raise :class:`UserError` unless ``overwrite``; the stems appear together or not at
        all (``stems.write_stems``).
        """
        outputs = outputs or stems.Outputs()
        paths = outputs.paths(path, out_dir, name)
        if not overwrite:
            for file in paths.values():
                if file.exists():
                    raise UserError(f"{file} already exists; remove it or separate with overwrite")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        mixture, sr = audio.load_audio(path, offset=start or None, duration=duration)
        mixture = np.require(mixture, np.float32, ["C", "W"])  # writable: the accompaniment goes in place
        vocals = self.vocals(mixture, sr, progress=progress)
        np.subtract(mixture, vocals, out=mixture)  # the accompaniment, in place: one copy less
        separated = {"vocals": vocals, "accompaniment": mixture}
        stems.write_stems({file: separated[stems.STEM_ALIASES[stem]] for stem, file in paths.items()}, sr, outputs)
        return paths


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Separate songs into vocals and accompaniment with a trained U-Net. Writes "
                    "OUTPUT/<song>/vocals.wav and accompaniment.wav (by default) at each song's own rate, channels "
                    "and length.")
    parser.add_argument("songs", nargs="+", metavar="SONG",
                        help="audio files (wav, flac, mp3, ogg, m4a, mp4; a .stem.mp4's mixture) or folders "
                             "(their audio files, recursively)")
    parser.add_argument("-o", "--output", default="separated", type=Path,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="a .keras model with its audio_params.json beside it, or a run folder "
                             "(its best.keras); default: the model in pretrained/")
    parser.add_argument("--overlap", type=bounded(float, 0, 1, high_open=True), default=DEFAULT_OVERLAP,
                        help="fraction of each 12 s patch shared with the next, in [0, 1) (default: %(default)s)")
    parser.add_argument("--batch-size", type=bounded(int, 1), default=DEFAULT_BATCH_SIZE,
                        help="patches per model call (default: %(default)s)")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="arithmetic of the model: bfloat16 is faster than float32 on CPUs with AVX512-BF16 "
                             "or AMX, SDR within 0.01 dB (benchmarks/RESULTS.md), and much slower without; auto "
                             "(default) takes bfloat16 on such CPUs with TensorFlow's oneDNN, float32 elsewhere")
    parser.add_argument("--wiener", action="store_true",
                        help="refine the stems with a multichannel Wiener filter (norbert, as Open-Unmix): "
                             "slower, and it did not improve the shipped model's vocals on the real produced song "
                             "(benchmarks/RESULTS.md)")
    parser.add_argument("--wiener-iterations", type=bounded(int, 1), default=None, metavar="N",
                        help="EM iterations of --wiener's filter, at least 1 (default: 1)")
    refine = parser.add_mutually_exclusive_group()
    refine.add_argument("--refine", type=bounded(int, MIN_REFINE, MAX_REFINE), default=DEFAULT_REFINE, metavar="N",
                        help="re-mask the vocals on a finer STFT of N samples at 44.1 kHz (the same duration at "
                             f"other rates; {MIN_REFINE} to {MAX_REFINE}), hop N/4: each cell takes the first "
                             "estimate's share of the mixture's magnitude, at most all of it (default: "
                             f"{DEFAULT_REFINE or 'off'}; benchmarks/RESULTS.md, 'Inference refinements')")
    refine.add_argument("--no-refine", dest="refine", action="store_const", const=None,
                        help="leave the vocals as the model's mask gives them")
    parser.add_argument("--overwrite", action="store_true", help="replace stems that already exist")
    parser.add_argument("--max-memory", type=bounded(float, 0, low_open=True), default=stems.DEFAULT_MAX_MEMORY,
                        metavar="GiB",
                        help="refuse, before reading it, a song whose separation would need more memory than this "
                             "(estimated from its header: about 0.9 GiB plus 0.5 GiB per 10 minutes of 44.1 kHz "
                             "stereo; docs/errors.md) (default: %(default)s)")
    files = parser.add_argument_group("what is written, where and how")
    files.add_argument("--stems", type=checked(stems.parse_stems), default=stems.STEMS, metavar="NAMES",
                       help="stems to write, separated by commas: vocals, accompaniment (also called instrumental "
                            "or, as in Demucs, no_vocals); each file is named as asked (default: vocals,accompaniment)")
    files.add_argument("--filename", type=checked(stems.check_filename), default=stems.DEFAULT_FILENAME,
                       metavar="TEMPLATE",
                       help="file names under OUTPUT, Demucs' template: {track} the song's name, {stem}, {ext} the "
                            "format's extension, {trackext} the song's; {stem} is required (default: %(default)s)")
    files.add_argument("--format", choices=audio.WRITE_FORMATS, default="wav",
                       help="file format (default: %(default)s); mp3 and ogg through libsndfile, or ffmpeg where "
                            "libsndfile is older than 1.1; mp3 holds 32, 44.1 or 48 kHz, the next one up is taken")
    files.add_argument("--bits", choices=tuple(audio.BIT_DEPTHS),
                       help="samples of wav and flac: 16- or 24-bit integers, or 32f, 32-bit float (wav only); "
                            "default: 16, or float for a wav stem beyond full scale (integers clip it, with a note)")
    files.add_argument("--mp3-bitrate", type=int, choices=audio.MP3_BITRATES, metavar="KBPS",
                       help="constant bitrate of --format mp3 in kbit/s, 32 to 320 (default: 320)")
    files.add_argument("--start", type=bounded(float, 0), default=0.0, metavar="SECONDS",
                       help="separate from this time in each song (default: its beginning)")
    files.add_argument("--duration", type=bounded(float, 0, low_open=True), metavar="SECONDS",
                       help="separate this many seconds (default: up to the end)")
    return parser


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.wiener_iterations is not None and not args.wiener:
        parser.error("argument --wiener-iterations: only with --wiener")
    if args.mp3_bitrate is not None and args.format != "mp3":
        parser.error("argument --mp3-bitrate: only with --format mp3")
    try:
        outputs = stems.Outputs(args.stems, args.filename, args.format, args.bits,
                                args.mp3_bitrate or audio.MP3_BITRATES[-1])
    except ValueError as err:
        parser.error(f"argument --bits: {err}")  # the one combination the options' own types cannot check
    import unet_model

    model_path = unet_model.model_file(args.model)
    # Before any work: the songs, where their stems go, and the output folder.
    files, problems = stems.prepare_songs(args.songs, args.output, outputs, args.start, args.overwrite)
    try:
        separator = Separator(model_path, overlap=args.overlap, batch_size=args.batch_size, precision=args.precision,
                              post_filter="wiener" if args.wiener else None, wiener_iterations=args.wiener_iterations or 1,
                              refine=args.refine)
    except ValueError as err:  # a model that runs in float32 only
        raise UserError(f"--precision {args.precision}: {err}") from None
    from separation import unet_fast

    print(f"Separating {len(files)} song{'s' if len(files) > 1 else ''} on {unet_fast.device_name()} in {separator.precision} "
          f"with {model_path}", flush=True)
    failed = list(problems)
    for path in files:
        start = time.perf_counter()
        try:
            stems.check_memory(path, args.max_memory, separator, args.start, args.duration)
            bar = progress_bar(stems.song_name(path)) if sys.stderr.isatty() else None
            paths = separator.separate_file(path, args.output, overwrite=True, outputs=outputs, start=args.start,
                                            duration=args.duration, progress=bar)
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
              f"{info.samplerate} Hz, {info.channels} ch, in {time.perf_counter() - start:.1f} s)")
    if failed:
        print(f"error: {len(failed)} of {len(files) + len(problems)} inputs failed (listed above); "
              f"the other {len(files) + len(problems) - len(failed)} were separated", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Keras imports these when installed, for what this command never uses: marked absent, they
    # are skipped (docs/design.md, "The command line's start-up").
    for unused in ("sklearn", "pandas", "matplotlib"):
        sys.modules.setdefault(unused, None)
    sys.exit(run_cli(main))

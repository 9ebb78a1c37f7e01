"""Separate songs into vocals and accompaniment with a trained U-Net: any length, any rate.

    python inference.py SONG [SONG|FOLDER ...] [-o separated/] [--model PATH] [--wiener] [--no-refine]

writes ``separated/<song>/vocals.wav`` and ``accompaniment.wav`` at each song's own sample rate,
channel count and length; ``separation/stems.py`` finds the songs, checks memory, names and
writes their stems (``--stems``, ``--filename``, ``--format``...). In a notebook or a program, a
:class:`Separator` loads the model once and separates arrays or files::

    separator = Separator()                     # the shipped model; Separator("runs/NAME") another
    stems = separator.separate(mixture, sr)     # {"vocals": ..., "accompaniment": ...}
    separator.separate_file("song.mp3", "separated")   # separated/song/{vocals,accompaniment}.wav

How a song is separated (why so: docs/design.md, "Inference")
-------------------------------------------------------------
1. The mask is computed where the model was trained: on the song folded to mono and resampled
   to 8192 Hz, as a ``(512, frames)`` magnitude spectrogram cut into overlapping patches of 128
   frames, each normalised and masked by the model; the patch masks are blended with triangular
   weights (:func:`overlap_add`), a frame's mask mostly from patches that see it in their middle.
2. The mask, interpolated to the times and frequencies of the song's own STFT at its own rate
   (:func:`full_band_mask`), whose frames last as long as the model's (:func:`frame_grid`),
   multiplies every channel's complex STFT (the mixture phase is kept); the inverse STFT gives
   the vocals, and the accompaniment is ``mixture - vocals``: the stems add up to the mixture.
3. Above :data:`PASSBAND` of the model's band (3840 Hz), which resampling to 8192 Hz has all but
   silenced, every frequency takes, frame by frame, the mean mask of the band just below
   (:data:`HIGH_BAND_REFERENCE`). A song at 8192 Hz gets the mask as in training (``audio.apply_mask``).
4. Optionally (``--wiener``), a multichannel Wiener filter refines the masked estimates, as
   Open-Unmix does (:func:`wiener_vocals`).
5. A second, finer mask (:func:`refine_vocals`; ``--no-refine`` turns it off): on a 4096-point
   STFT (at 44.1 kHz) with 75 % overlap, each cell of the mixture takes the first vocals' share of
   its magnitude, at most all of it, which repairs most of what the first mask's STFT (25 %
   overlap, like the model's) spread at its frames' edges.

Long songs take bounded memory: the model runs on ``batch_size`` patches at a time, and steps 2
and 5 on chunks of frames (``audio.masked_istft``), with the same result as in one piece.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

from separation import audio, stems
from separation.audio import DEFAULT_PARAMS, AudioParams
from separation.cli import ArgumentParser, Steps, bounded, run_cli, timed
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

    ``x`` is ``(rows, frames)``; ``fn`` maps a batch ``(batch, rows, size)`` to ``(batch, out_rows,
    size)``. Segments start as :func:`segment_starts` says (an input shorter than ``size`` is zero
    padded); each output frame is the mean of the segments covering it, weighted by a triangle
    (highest mid-segment, never zero), cropped to ``(out_rows, frames)``. ``progress(n)``, if
    given, counts the segments done after each batch.
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
    """``(n_fft, hop)`` at rate ``sr`` whose frames last as long as the model's: its hop scaled by
    ``sr / sample_rate`` and rounded (:func:`full_band_mask` maps each frame's time exactly), its
    n_fft scaled and rounded up to a fast FFT's length (``audio.fast_fft_length``)."""
    scale = sr / params.sample_rate
    return audio.fast_fft_length(max(2, math.ceil(params.n_fft * scale))), max(1, round(params.hop_length * scale))


def full_band_mask(mask: np.ndarray, sr: int, frames: range | np.ndarray, params: AudioParams = DEFAULT_PARAMS, *,
                   high_band=None, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Resample the model's mask ``(n_bins, model_frames)`` to the STFT grid at rate ``sr``.

    Returns ``(n_fft/2+1, len(frames))`` for the given frame indices of the :func:`frame_grid`
    STFT: linear interpolation in time (frame centres) and frequency (bin centres) up to the
    passband's edge, above it each frame's :func:`mean_high_band`. ``high_band(in_time, nyquist)
    -> (row, edge)`` replaces that rule (``benchmarks/bench_full_band.py``), ``grid`` ``(n_fft,
    hop)`` the STFT of :func:`frame_grid` (the Wiener filter's has a shorter hop).
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
    vocals mask ``(bins, frames)``; the result has ``spec``'s shape. Open-Unmix's post-filter
    (Nugraha, Liutkus & Vincent 2016; the model: docs/design.md, "The Wiener post-filter"): from
    the first estimates ``mask * |X|`` and ``(1 - mask) * |X|``, ``iterations`` rounds of EM fit
    each source's power spectrogram and spatial covariance, whose Wiener estimates can use the
    inter-channel phase. The covariances are estimated per block of ``block_frames`` frames (all
    if None), which bounds memory. Only the vocals are returned.
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


#: The refinement's window (:func:`refine_grid`) in samples at :data:`REFINE_RATE`: 93 ms, Open-Unmix's
#: STFT (benchmarks/RESULTS.md, "Inference refinements"). None turns the refinement off.
DEFAULT_REFINE = 4096
#: The rate at which a refinement window is counted in samples; at another rate it lasts as long.
REFINE_RATE = 44100
#: The refinement's hop, as a fraction of its window: 75 % overlap, as Open-Unmix's 4096/1024.
REFINE_HOP = 0.25
#: The refinement windows accepted (samples at :data:`REFINE_RATE`): 0.4 ms to 1.5 s.
MIN_REFINE, MAX_REFINE = 16, 65536


def refine_grid(sr: int, window: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the refinement's STFT at rate ``sr``: ``window`` samples at
    :data:`REFINE_RATE` scaled to ``sr`` (the same duration), rounded up to a fast FFT's length
    (``audio.fast_fft_length``, as :func:`frame_grid`), and :data:`REFINE_HOP` of it."""
    n_fft = audio.fast_fft_length(max(4, math.ceil(window * sr / REFINE_RATE)))
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
    mixture's STFT (its phase kept); the inverse STFT is the refined vocals (why it helps:
    docs/design.md, "The second, finer mask"). Chunked as the first mask (``audio.masked_istft``).
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

    ``model`` is None (the shipped model), a ``.keras`` file or a run folder (with the
    ``audio_params.json`` beside it), a Keras U-Net from ``unet_model.build_unet`` (its audio
    parameters in ``params``), or any function mapping normalised patches ``(batch, n_bins,
    patch_frames, 1)`` to masks (an oracle mask, the PyTorch twin). ``overlap``: the fraction of
    each patch shared with the next; ``batch_size``: patches per model call; ``chunk_frames``:
    full-rate STFT frames at once (memory); ``precision`` (float32, bfloat16, auto): as
    ``unet_fast.fastest_mask_model`` runs a U-Net; ``post_filter="wiener"``: :func:`wiener_vocals`
    with ``wiener_iterations`` EM rounds; ``refine``: :func:`refine_vocals`'s window in samples at
    44.1 kHz, after the Wiener filter if both are on (None: off). Values out of range raise ``ValueError``.
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
        have its shape and add up to it. ``progress(done, total)`` is called as the work advances;
        ``timings`` (a dict) accumulates seconds per stage (the benchmark's).
        """
        vocals = self.vocals(mixture, sr, progress=progress, timings=timings)
        return {"vocals": vocals, "accompaniment": np.asarray(mixture, dtype=np.float32) - vocals}

    def vocals(self, mixture: np.ndarray, sr: int, *, progress=None, timings: dict | None = None) -> np.ndarray:
        """The vocals stem of :meth:`separate` alone (the mixture's shape)."""
        params = self.params
        x, sr = audio.checked_audio(mixture, sr)  # (samples, channels) float32
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
        return vocals[:, 0] if np.ndim(mixture) == 1 else vocals

    def mask(self, mix_mag: np.ndarray, *, progress=None) -> np.ndarray:
        """The model's mask for a whole mono magnitude spectrogram ``(n_bins, frames)`` -> same shape:
        patches normalised one by one (mixture peak 1), as in training, and blended by
        :func:`overlap_add`; ``progress(n)`` counts patches."""
        def masks(patches):  # (B, bins, frames) -> (B, bins, frames)
            (normalised,) = audio.normalize_patches(patches)
            return self.predict(normalised[..., None])[..., 0]

        return overlap_add(mix_mag, masks, self.params.patch_frames, overlap=self.overlap, batch_size=self.batch_size,
                           progress=progress)

    def apply_mask(self, mixture: np.ndarray, sr: int, mask: np.ndarray, *, progress=None,
                   timings: dict | None = None) -> np.ndarray:
        """The vocals of ``(samples, channels)`` audio at ``sr`` under a model-rate mask ``(n_bins, frames)``
        (any mask: an oracle too), mapped onto the song's own STFT (:func:`full_band_mask`), at the
        model's rate applied as in training; with ``post_filter="wiener"``, :meth:`_wiener`."""
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
        :data:`WIENER_HOP` of the hop, each chunk's vocals :func:`wiener_vocals`'s (estimated per
        block within a chunk, so the result depends slightly on ``chunk_frames``)."""
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
        separate part of the file. Existing files raise :class:`UserError` unless ``overwrite``;
        the stems appear together or not at all (``stems.write_stems``).
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
    stems.add_arguments(parser)
    return parser


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.wiener_iterations is not None and not args.wiener:
        parser.error("argument --wiener-iterations: only with --wiener")
    outputs = stems.outputs_from_args(parser, args)
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
    # One song after another; a song that fails is an error line, and the others are separated.
    return stems.separate_songs(separator, files, problems, args.output, outputs, args.max_memory, args.start,
                                args.duration)


if __name__ == "__main__":
    # Keras imports these when installed, for what this command never uses: marked absent, they
    # are skipped (docs/design.md, "The command line's start-up").
    for unused in ("sklearn", "pandas", "matplotlib"):
        sys.modules.setdefault(unused, None)
    sys.exit(run_cli(main))

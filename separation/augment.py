"""The training augmentations: their settings (:class:`Augmentation`) and the two ways of mixing a batch.

A training batch is mixed by one of two strategies, chosen once by the settings
(:attr:`Augmentation.waveform`):

- :func:`mix_magnitudes` works on the cached magnitudes: the vocals patch, optionally
  time-stretched and pitch-shifted, is mixed with an accompaniment patch as
  ``sqrt(V**2 + A**2)`` (the expected magnitude of two sources with independent phases);
- :func:`mix_waveforms` works on the cached waveforms: the vocals segment, optionally processed by
  the effects of :mod:`separation.production` and set to a level against the accompaniment, is
  added to an accompaniment segment, and both the sum and the vocals go through
  :func:`audio.stft` (exact).

A track shorter than a patch fills it as ``short_tracks`` says (:data:`SHORT_TRACKS`): from the
patch's start, zero-padded (``pad``); at a random offset inside it (``place``, :func:`draw_starts`);
or, mixing from waveforms, placed so and with the accompaniment continued by other tracks' to the
patch's end (``fill``, :func:`fill_accompaniment`).

:func:`make_augmentation` makes a training run's settings from its command line, naming its
options in a refusal (:data:`AUGMENTATION_OPTIONS`).

Both draw everything from the batch's generator, in a fixed order, and each setting draws only
when it is on, so a batch stays a function of (seed, epoch, index) and a run without a setting
gets the batches it always had. Design notes: ``docs/design.md``, "Data".
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from separation.audio import model_bins, stft
from separation.errors import UserError

#: Per-source gain range of the gain augmentation (Open-Unmix's choice).
GAIN_RANGE = (0.25, 1.25)
#: Largest ``pitch`` augmentation, in semitones: an octave either way (frequency ratio 1/2 to 2).
MAX_PITCH = 12.0
#: RMS below which a segment counts as silent for ``vocal_level`` (-80 dBFS): its level is left alone.
LEVEL_FLOOR = 1e-4
#: The ways a track shorter than a patch fills it (``Augmentation.short_tracks``); the first is the default.
SHORT_TRACKS = ("pad", "place", "fill")
#: Length of the cross-fade between two accompaniment pieces of ``fill``, in seconds.
FILL_FADE = 0.1


class AugmentationError(ValueError):
    """Augmentation settings out of their range or contradicting each other.

    The message is kept as a template that names each setting as ``{field}``, so that a command
    line can name its own options instead (:meth:`worded`); ``str(err)`` names the fields.
    """

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.worded({}))

    def worded(self, names: dict[str, str]) -> str:
        """The message with each setting called by ``names[field]`` (by its field name where absent)."""
        return self.template.format_map(_Names(names))


class _Names(dict):
    """Names of settings that give a field without one its own name (for :meth:`AugmentationError.worded`)."""

    def __missing__(self, field: str) -> str:
        return field


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The augmentation settings of a training run, checked once when made (:class:`AugmentationError`).

    The default (every setting off) is no augmentation: training patches as the cache holds them.

    Magnitude augmentations:

    - ``remix``: every patch's vocals are mixed with the accompaniment of a random training track
      (any, itself included) at a random offset.
    - ``gain``: vocals and accompaniment each scaled by a gain uniform in :data:`GAIN_RANGE`
      before mixing (a common gain would be undone by the normalisation).
    - ``pitch`` (semitones, at most :data:`MAX_PITCH`): every patch's vocals are shifted in pitch
      by a random amount uniform in [-pitch, +pitch] semitones (:func:`pitch_shift`). The formants
      move with the pitch: large values make "chipmunk" or "giant" voices.
    - ``tempo`` (a fraction below 1): every patch's vocals are time-stretched by a random factor
      uniform in [1 - tempo, 1 + tempo] (:func:`time_stretch`), the pitch kept.
    - ``input_dropout`` (a probability in [0, 1)): each time-frequency cell of the normalised
      input is zeroed with this probability, and the target at the same cells (:func:`drop_cells`).

    ``pitch`` and ``tempo`` change the vocals alone, so the mixture is rebuilt from them and the
    accompaniment, as with ``remix``.

    Mixing settings (any of them turns on the mixing mode: the vocals come only from tracks whose
    vocals are not silent, the accompaniment from any of the tracks, instrumental ones included, at
    a random offset, as ``remix``):

    - ``instrumental_share`` (a fraction in [0, 1], or None): each patch has silent vocals with this
      probability: its mixture is the accompaniment alone and its target is zero.
    - ``vocal_level`` ``(low, high)`` in dB, or None: each patch's vocals are scaled so that their
      RMS is ``L`` dB above the accompaniment's, ``L`` uniform in [low, high] (:func:`level_gain`).
      Replaces ``gain``.
    - ``effects``: names from ``production.EFFECTS`` (reverb, compressor, ...) applied to each
      patch's vocal waveform by ``production.produce``; the target is the processed vocals.
      ``effects_tracks``: only the vocals of these training tracks are processed (None: all), e.g.
      the dry voices of one dataset and not the already produced ones of another.
    - ``accompaniment_tracks``: names of training tracks to draw the accompaniment from (None: all).
    - ``voice_tracks`` and ``voice_share``: each patch's vocals come from one of ``voice_tracks``
      (names of training tracks) with probability ``voice_share``, else from the other tracks that
      have vocals: a dataset with few voices can be weighed up (or down) against the others. Both
      or neither (None: the vocal tracks drawn uniformly).

    Short tracks (``short_tracks``, one of :data:`SHORT_TRACKS`), for a track shorter than a patch:

    - ``"pad"`` (the default): the track starts the patch, which is zero after its end.
    - ``"place"``: the track lies at a random offset inside the patch, zero before and after it;
      so does the accompaniment of a remix when it is short, at its own offset.
    - ``"fill"`` (mixing from waveforms only): the vocals' track is placed as with ``place``, and
      the accompaniment covers the whole patch: a short one is continued to the patch's end by
      pieces of other accompaniment tracks, joined with short cross-fades (:func:`fill_accompaniment`).

    ``vocal_level`` and ``effects`` work on waveforms (:attr:`waveform`, a format-2 cache), where
    ``pitch`` and ``tempo`` (magnitude approximations) are refused: the ``pitch`` effect shifts
    the waveform instead.
    """

    remix: bool = False
    gain: bool = False
    pitch: float = 0.0
    tempo: float = 0.0
    input_dropout: float = 0.0
    instrumental_share: float | None = None
    vocal_level: tuple[float, float] | None = None
    effects: tuple[str, ...] = ()
    accompaniment_tracks: tuple[str, ...] | None = None
    voice_tracks: tuple[str, ...] | None = None
    voice_share: float | None = None
    effects_tracks: tuple[str, ...] | None = None
    short_tracks: str = SHORT_TRACKS[0]

    def __post_init__(self):
        def normalise(field: str, value) -> None:
            object.__setattr__(self, field, value)  # the dataclass is frozen; values are set once, here

        normalise("remix", bool(self.remix))
        normalise("gain", bool(self.gain))
        for field in ("pitch", "tempo", "input_dropout"):
            normalise(field, float(getattr(self, field)))
        if self.instrumental_share is not None:
            normalise("instrumental_share", float(self.instrumental_share))
        if self.vocal_level is not None:
            normalise("vocal_level", tuple(float(v) for v in self.vocal_level))
        normalise("effects", tuple(self.effects or ()))
        for field in ("accompaniment_tracks", "voice_tracks", "effects_tracks"):
            if getattr(self, field) is not None:
                normalise(field, tuple(getattr(self, field)))
        if self.voice_share is not None:
            normalise("voice_share", float(self.voice_share))
        self._check()

    def _check(self) -> None:
        """Refuse a setting out of its range, or settings that contradict each other."""
        # `not low <= x <= high` also refuses NaN
        if not 0.0 <= self.input_dropout < 1.0:
            raise AugmentationError(f"{{input_dropout}} must be in [0, 1), got {self.input_dropout}")
        if not 0.0 <= self.pitch <= MAX_PITCH:
            raise AugmentationError(f"{{pitch}} must be in [0, {MAX_PITCH:g}] semitones, got {self.pitch}")
        if not 0.0 <= self.tempo < 1.0:
            raise AugmentationError(f"{{tempo}} must be in [0, 1) (a fraction of the tempo), got {self.tempo}")
        share = self.instrumental_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise AugmentationError(f"{{instrumental_share}} must be in [0, 1], got {share}")
        if (self.voice_tracks is None) != (self.voice_share is None):
            raise AugmentationError("{voice_tracks} and {voice_share} go together: give both or neither")
        if self.voice_share is not None and not 0.0 <= self.voice_share <= 1.0:
            raise AugmentationError(f"{{voice_share}} must be in [0, 1], got {self.voice_share}")
        if self.effects_tracks is not None and not self.effects:
            raise AugmentationError("{effects_tracks} chooses whose vocals {effects} processes; give {effects} too")
        if self.vocal_level is not None:
            if len(self.vocal_level) != 2 or not all(math.isfinite(v) for v in self.vocal_level):
                raise AugmentationError(f"{{vocal_level}} must be two finite levels (low, high) in dB, "
                                        f"got {self.vocal_level}")
            low, high = self.vocal_level
            if low > high:
                raise AugmentationError(f"{{vocal_level}} {low:g} {high:g}: give LO HI in dB with LO <= HI, e.g. -4 6")
            if self.gain:
                raise AugmentationError("{vocal_level} sets the vocal-to-accompaniment level; drop {gain}")
        if self.effects:
            known = production_effects()
            unknown = [e for e in self.effects if e not in known]
            if unknown:
                raise AugmentationError(f"unknown effect(s) {', '.join(map(repr, unknown))}; "
                                        f"choose from {', '.join(known)}")
        if self.waveform and (self.pitch or self.tempo):
            raise AugmentationError("{pitch}/{tempo} act on magnitudes and cannot be combined with "
                                    "{vocal_level}/{effects}; use {effects} pitch (a time-domain pitch shift) instead")
        if self.short_tracks not in SHORT_TRACKS:
            raise AugmentationError(f"{{short_tracks}} must be one of {', '.join(SHORT_TRACKS)}, got {self.short_tracks!r}")
        if self.short_tracks == "fill" and not self.waveform:
            raise AugmentationError("{short_tracks} fill joins accompaniment waveforms, so it needs {vocal_level} "
                                    "or {effects}; without them use {short_tracks} place")

    @property
    def mixing(self) -> bool:
        """Whether a mixing setting is on (vocals only from tracks that have them)."""
        return (self.instrumental_share is not None or self.vocal_level is not None or bool(self.effects)
                or self.accompaniment_tracks is not None or self.voice_tracks is not None)

    @property
    def waveform(self) -> bool:
        """Whether batches are mixed from waveforms (:func:`mix_waveforms`), not magnitudes."""
        return self.vocal_level is not None or bool(self.effects)

    @property
    def place(self) -> bool:
        """Whether a short track lies at a random offset inside its patch (``short_tracks`` place or fill)."""
        return self.short_tracks != "pad"

    @property
    def active(self) -> bool:
        """Whether any setting is on."""
        return (self.remix or self.gain or bool(self.input_dropout) or bool(self.pitch) or bool(self.tempo)
                or self.mixing or self.place)


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
# A training run's settings, from its command line
# --------------------------------------------------------------------------------------------


#: The option of train.py (and pytorch_twin/train_torch.py) that sets each field of
#: :class:`Augmentation`, to name it in a refusal.
AUGMENTATION_OPTIONS = {
    "remix": "--remix", "gain": "--gain", "pitch": "--pitch", "tempo": "--tempo", "input_dropout": "--input-dropout",
    "instrumental_share": "--instrumental-share", "vocal_level": "--vocal-level", "effects": "--vocal-fx",
    "accompaniment_tracks": "--accompaniment-from", "short_tracks": "--short-tracks",
    "voice_tracks": "--voice-share", "voice_share": "--voice-share", "effects_tracks": "--vocal-fx-on",
}


def make_augmentation(config, cache, train_tracks: list[str]) -> Augmentation:
    """A training run's augmentation settings, checked once (:class:`Augmentation`; their bounds
    were checked by argparse), from its ``train.TrainConfig`` ``config`` and its cache
    (``cache.Cache``): options that contradict each other are a UserError that names them
    (:data:`AUGMENTATION_OPTIONS`), and ``--accompaniment-from``, ``--voice-share`` and
    ``--vocal-fx-on`` become the names of their dataset's training tracks."""
    try:
        augmentation = config.augmentation()
    except AugmentationError as err:
        raise UserError(err.worded(AUGMENTATION_OPTIONS)) from None
    voice_dataset, voice_share = config.voice_share or (None, None)
    try:
        return dataclasses.replace(
            augmentation,
            accompaniment_tracks=_dataset_tracks(cache, train_tracks, config.accompaniment_from, "--accompaniment-from"),
            voice_tracks=_dataset_tracks(cache, train_tracks, voice_dataset, "--voice-share"), voice_share=voice_share,
            effects_tracks=_dataset_tracks(cache, train_tracks, config.vocal_fx_on, "--vocal-fx-on"))
    except AugmentationError as err:
        raise UserError(err.worded(AUGMENTATION_OPTIONS)) from None


def _dataset_tracks(cache, train_tracks: list[str], dataset: str | None, option: str) -> list[str] | None:
    """The training tracks of ``dataset`` (None for None), for ``option`` (``--accompaniment-from``...)."""
    if dataset is None:
        return None
    tracks = [n for n in train_tracks if cache.track(n)["dataset"] == dataset]
    if not tracks:
        datasets = sorted({cache.track(n)["dataset"] for n in train_tracks})
        raise UserError(f"{option} {dataset}: no training track of that dataset "
                        f"(the training tracks are {', '.join(datasets)}); prepare it into the cache or choose another")
    return tracks


# --------------------------------------------------------------------------------------------
# The two mixing strategies
# --------------------------------------------------------------------------------------------


def mix_magnitudes(tracks, augmentation: Augmentation, accompaniment: np.ndarray, track, offset,
                   rng) -> tuple[np.ndarray, np.ndarray]:
    """``(mixture, vocals)`` magnitude patches, ``(B, n_bins, patch_frames)`` float32, from the cached magnitudes.

    ``tracks`` is the :class:`cache.TrackSet` drawn from; ``track`` and ``offset`` (B) are the
    patches' positions in it and their first frames; ``accompaniment``, the positions the
    accompaniment of a remix is drawn from; ``rng``, the batch's generator (None without
    augmentation). Without augmentation the cached mixture is read. Otherwise the vocals are read
    (``tempo``: stretched), shifted (``pitch``), silenced (``instrumental_share``), the
    accompaniment read (``remix`` or a mixing setting: of a random track at a random offset,
    :func:`draw_starts`; else the same patch's), both scaled (``gain``), and mixed as
    ``sqrt(V**2 + A**2)``, which keeps ``V <= mixture`` (the ideal mask stays in [0, 1]). The
    draws come in that order.
    """
    a, frames = augmentation, tracks.params.patch_frames
    if a.tempo:
        rates = rng.uniform(1 - a.tempo, 1 + a.tempo, size=len(track))
        vocals = time_stretch(tracks.patches("vocals", track, offset, stretch_frames(frames, rates)), rates, frames)
    else:
        vocals = tracks.patches("vocals", track, offset)
    if a.pitch:
        vocals = pitch_shift(vocals, 2.0 ** (rng.uniform(-a.pitch, a.pitch, size=len(track)) / 12))
    if not (a.remix or a.gain or a.pitch or a.tempo or a.mixing):
        return tracks.patches("mixture", track, offset), vocals
    vocals[silent_patches(a.instrumental_share, rng, len(track))] = 0.0
    if a.remix or a.mixing:
        track = accompaniment[rng.integers(len(accompaniment), size=len(track))]
        offset = draw_starts(tracks.frames[track], frames, rng, a.place)
    background = tracks.patches("accompaniment", track, offset)
    if a.gain:
        gains = rng.uniform(*GAIN_RANGE, size=(2, len(track), 1, 1)).astype(np.float32)
        vocals *= gains[0]
        background *= gains[1]
    return np.sqrt(vocals**2 + background**2), vocals


def mix_waveforms(tracks, augmentation: Augmentation, accompaniment: np.ndarray, track, offset,
                  rng) -> tuple[np.ndarray, np.ndarray]:
    """``(mixture, vocals)`` magnitude patches, ``(B, n_bins, patch_frames)`` float32, mixed from waveforms.

    The arguments are :func:`mix_magnitudes`'. The patches are the first ``patch_frames`` frames
    and ``n_bins`` bins of :func:`audio.stft` of :func:`mixed_waveforms`' mixtures and vocals.
    """
    p, size = tracks.params, len(track)
    waves = mixed_waveforms(tracks, augmentation, accompaniment, track, offset, rng)
    spec = np.abs(model_bins(stft(waves, p), p))[:, :p.patch_frames]  # (n_bins, frames, 2B)
    spec = np.ascontiguousarray(spec.transpose(2, 0, 1))
    return spec[:size], spec[size:]


def mixed_waveforms(tracks, augmentation: Augmentation, accompaniment: np.ndarray, track, offset,
                    rng) -> np.ndarray:
    """The waveforms :func:`mix_waveforms` takes the STFT of: ``(patch_frames * hop_length, 2B)``
    float32, the B mixtures, then the B vocals.

    The arguments are :func:`mix_magnitudes`'. Each patch reads the vocals' segment of
    ``patch_frames * hop_length`` samples from its frame offset (a negative one places a short
    track inside the segment) and the accompaniment's from a random track of ``accompaniment`` at
    a random sample offset (:func:`draw_starts`; zero outside a track, or with ``fill`` continued
    to the segment's end by :func:`fill_accompaniment`), processes the vocals (``effects``, which
    see the segment alone; only those of ``effects_tracks`` where given), sets their level
    (``vocal_level``, over the samples inside the tracks; or ``gain``) and adds them. The draws, in order: the silent patches, the
    accompaniment's tracks and offsets, the levels (or gains), then for each patch the pieces that
    fill its accompaniment and its effects.
    """
    a, p = augmentation, tracks.params
    size, length = len(track), p.patch_frames * p.hop_length
    silent = silent_patches(a.instrumental_share, rng, size)
    other = accompaniment[rng.integers(len(accompaniment), size=size)]
    start = draw_starts(tracks.samples[other], length, rng, a.short_tracks == "place")
    if a.vocal_level is not None:
        levels, gains = rng.uniform(*a.vocal_level, size=size), None
    elif a.gain:
        levels, gains = None, rng.uniform(*GAIN_RANGE, size=(2, size)).astype(np.float32)
    else:
        levels = gains = None
    fade = round(FILL_FADE * p.sample_rate)
    waves = np.zeros((length, 2 * size), dtype=np.float32)  # columns: B mixtures, then B vocals
    for b in range(size):
        background, inside = tracks.segment(other[b], "accompaniment", start[b], length)
        if a.short_tracks == "fill" and inside.stop < length:
            background = fill_accompaniment(tracks, accompaniment, background, inside.stop, fade, rng)
            inside = slice(0, length)
        vocals = np.zeros(length, dtype=np.float32)
        if not silent[b]:
            vocals, voiced = tracks.segment(track[b], "vocals", offset[b] * p.hop_length, length)
            if a.effects and (a.effects_tracks is None or tracks.entries[track[b]]["name"] in a.effects_tracks):
                from separation import production

                vocals = production.produce(vocals, p.sample_rate, rng, a.effects)
            if levels is not None:
                vocals *= level_gain(vocals[voiced], background[inside], levels[b])
        if gains is not None:
            vocals *= gains[0, b]
            background *= gains[1, b]
        waves[:, b] = vocals + background
        waves[:, size + b] = vocals
    return waves


# --------------------------------------------------------------------------------------------
# Short tracks
# --------------------------------------------------------------------------------------------


def draw_starts(lengths, span: int, rng, place: bool = False) -> np.ndarray:
    """Uniform random starts of a window of ``span`` frames (or samples) in tracks of ``lengths`` (B,).

    In a track at least ``span`` long, from 0 to ``length - span``. A shorter track gives 0 (it
    starts the window, which runs past its end), or with ``place`` a start from ``length - span``
    to 0: negative, the track lies ``-start`` into the window and wholly inside it. One draw of
    ``rng`` per track either way, so ``place`` changes no later draw.
    """
    lengths = np.asarray(lengths)
    low = np.minimum(lengths - span, 0) if place else 0
    return rng.integers(low, np.maximum(lengths - span, 0) + 1)


def fill_accompaniment(tracks, accompaniment: np.ndarray, background: np.ndarray, covered: int, fade: int,
                       rng) -> np.ndarray:
    """``background``, a ``(samples,)`` accompaniment segment whose first ``covered`` samples lie in
    its track, continued to its end by pieces of random tracks of ``accompaniment``.

    Each piece is read from a random start of its track (:func:`draw_starts`) and overlaps the
    one before by ``fade`` samples, where the earlier fades out and the later in on a quarter
    sine and cosine: the gains' squares sum to 1, so the level holds across the joint for
    unrelated music. Draws a track, then a start, per piece. In place; returns ``background``.
    """
    length = len(background)
    while covered < length:
        piece_track = accompaniment[rng.integers(len(accompaniment))]
        joint = max(covered - fade, 0)
        piece_start = draw_starts(tracks.samples[piece_track], length - joint, rng)
        piece, inside = tracks.segment(piece_track, "accompaniment", piece_start, length - joint)
        overlap = min(covered - joint, inside.stop)
        angle = (np.arange(overlap) + 0.5) / max(overlap, 1) * (np.pi / 2)
        joined = slice(joint, joint + overlap)
        background[joined] = background[joined] * np.cos(angle) + piece[:overlap] * np.sin(angle)
        end = joint + inside.stop
        background[joint + overlap:end] = piece[overlap:inside.stop]
        covered = max(end, covered + 1)  # a track shorter than the fade still moves on
    return background


# --------------------------------------------------------------------------------------------
# The augmentations, one function each
# --------------------------------------------------------------------------------------------


def silent_patches(share: float | None, rng, size: int) -> np.ndarray:
    """Which of ``size`` patches get silent vocals (``instrumental_share``); draws only when the share is positive."""
    if not share:
        return np.zeros(size, dtype=bool)
    return rng.random(size) < share


def drop_cells(mixture: np.ndarray, vocals: np.ndarray, rate: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Input dropout: zero each cell of the (normalised) ``mixture`` with probability ``rate``, and the
    ``vocals`` at the same cells. In place; returns both.

    There is no 1/(1 - rate) rescaling, which would break the domain input and target share; the
    target is zeroed too because the model's output there is mask * 0 = 0 whatever it does.
    """
    keep = rng.random(mixture.shape, dtype=np.float32) >= rate
    mixture *= keep
    vocals *= keep
    return mixture, vocals


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


def level_gain(vocals: np.ndarray, accompaniment: np.ndarray, level_db: float) -> float:
    """The gain that puts ``vocals``' RMS ``level_db`` dB above ``accompaniment``'s (1 where either is silent).

    The caller passes the samples inside the tracks, so zero padding past a track's end does not
    lower an RMS; below :data:`LEVEL_FLOOR` a segment counts as silent.
    """
    rms_v = float(np.sqrt(np.mean(np.square(vocals, dtype=np.float64)))) if len(vocals) else 0.0
    rms_a = float(np.sqrt(np.mean(np.square(accompaniment, dtype=np.float64)))) if len(accompaniment) else 0.0
    if rms_v < LEVEL_FLOOR or rms_a < LEVEL_FLOOR:
        return 1.0
    return 10 ** (level_db / 20) * rms_a / rms_v

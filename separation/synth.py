"""Synthetic songs with separate stems: the built-in default dataset.

:func:`synthesize_dataset` writes ``out/{train,test}/<name>/{mixture,vocals,accompaniment}.wav``
(44.1 kHz stereo 16-bit by default) so the whole pipeline (train, separate, evaluate) can run
before MUSDB18 is downloaded. Every track is a pure function of ``(seed, split, index)``, and
``mixture == vocals + accompaniment`` holds exactly on the 16-bit integers.

The musical model
-----------------
A song has a tempo (75-150 bpm), a key (any tonic, major or natural minor) and a four-bar chord
progression that loops, one chord per bar. Bars are grouped in blocks of four in which drums, bass
and pad are independently switched on or off (never all of them), so the texture changes.

*Voice.* A singer has a register (16 semitones centred between E3 and A#4, so notes from A2
to G5) and a formant scale (larger for higher voices). The melody is a random walk on the scale
that prefers chord tones on beats, in sixteenth to dotted-half notes; it is sung in phrases of
1-8 beats separated by rests (at least a second from note to note, sometimes an instrumental
break), so some stretches have no voice at all: the vocals are exactly zero (digital silence)
outside the phrases, which ``score["rests"]`` lists. Each note is a syllable: an optional consonant before the beat (fricatives s/sh/f/h and
bursts t/k/p as shaped noise, voiced nasals m/n/l as a dip with nasal formants) and a vowel
(a/e/i/o/u formants F1..F5 that glide from syllable to syllable); a few notes are melismas (new
pitch, same vowel, no consonant). The pitch has portamento between notes, scoops into some
notes, delayed vibrato and a slow drift. The glottal source is a band-limited sawtooth following
that pitch; it is filtered in the STFT domain by the time-varying formant envelope, with
aspiration noise shaped the same way, which keeps harmonics and noise up to 10-14 kHz. Most
phrases start with an audible breath. The dry voice goes through a room reverb whose tail is
gated at the end of the phrase.

*Accompaniment.* Drums (synthesised kick, snare, closed/open hi-hat on a per-track pattern with
ghost notes and timing jitter), bass (root/fifth/octave on a rhythmic pattern; saw, square or FM
timbre, low-passed), a chord instrument (detuned-saw pad, organ or FM electric piano) and a lead
instrument that plays in the singer's register (fills in the voice's rests and, in some songs,
a quiet counter-melody under the phrases) with a timbre unlike the voice: a plucked saw whose
brightness decays, a square lead with vibrato, or an FM bell. Every instrument has its own
level and pan; pad, lead and snare feed the shared reverb.

*Levels.* The vocal-to-accompaniment ratio (RMS of the whole stems) is drawn uniformly in
[-3, +3] dB per track and the mixture peaks between -3 and -0.5 dBFS; both stems are quantised to
16 bits (multiples of 1/32768) so their sum is the exact mixture and never clips.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from separation.audio import istft, stft
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text

#: Bumped whenever the generated audio changes, so an old folder is not mistaken for a new one.
SYNTH_VERSION = 1
SPLITS = ("train", "test")
#: Written in this order: the mixture last, so a track with a mixture is complete.
STEMS = ("vocals", "accompaniment", "mixture")
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0
MIN_SR, MAX_SR = 22050, 192000
#: 16-bit full scale: ``int16 / 32768`` is what soundfile reads back as float.
FULL_SCALE = 32768
#: Samples per control step: pitch and envelopes are computed at sr / 32 (1.4 kHz), then held.
CONTROL = 32

MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
#: Four-bar progressions as 0-based scale degrees of the chord roots.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 3), (3, 0, 4, 4), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 6, 5, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 6, 2)),
}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

#: Formant frequencies F1..F5 (Hz) of an adult male voice; higher voices scale them up.
VOWELS = {
    "a": (730, 1090, 2440, 3400, 4500),
    "e": (530, 1840, 2480, 3500, 4500),
    "i": (290, 2250, 3010, 3600, 4600),
    "o": (570, 840, 2410, 3300, 4400),
    "u": (320, 870, 2240, 3300, 4400),
}
VOWEL_NAMES = tuple(VOWELS)
VOWEL_WEIGHTS = (0.3, 0.2, 0.2, 0.15, 0.15)
NASAL_FORMANTS = (260, 1150, 2300, 3300, 4400)
FORMANT_BANDWIDTHS = (80.0, 100.0, 120.0, 180.0, 220.0)
FORMANT_GAINS = (10.0, 6.0, 3.5, 2.0, 1.5)

#: Consonants: (kind, duration range s, noise centre Hz, width in octaves, level dB re the vowel,
#: voiced amplitude during the consonant). Kinds: "fric" (noise over the whole consonant),
#: "burst" (closure then a short release burst), "nasal" (voiced dip, nasal formants, no noise).
CONSONANTS = {
    "s": ("fric", (0.06, 0.12), 7000.0, 0.45, -8.0, 0.0),
    "sh": ("fric", (0.06, 0.11), 3300.0, 0.6, -8.0, 0.0),
    "f": ("fric", (0.05, 0.09), 5500.0, 1.6, -16.0, 0.0),
    "h": ("fric", (0.05, 0.09), 1800.0, 1.4, -14.0, 0.0),
    "t": ("burst", (0.04, 0.07), 5000.0, 1.0, -4.0, 0.0),
    "k": ("burst", (0.05, 0.08), 2200.0, 0.8, -6.0, 0.0),
    "p": ("burst", (0.04, 0.07), 1000.0, 1.2, -8.0, 0.0),
    "m": ("nasal", (0.05, 0.09), 0.0, 0.0, 0.0, 0.35),
    "n": ("nasal", (0.05, 0.09), 0.0, 0.0, 0.0, 0.4),
    "l": ("nasal", (0.04, 0.07), 0.0, 0.0, 0.0, 0.6),
}
CONSONANT_NAMES = tuple(CONSONANTS)
CONSONANT_WEIGHTS = (0.16, 0.07, 0.07, 0.06, 0.14, 0.1, 0.06, 0.12, 0.12, 0.1)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def track_name(split: str, index: int) -> str:
    """Folder name of the ``index``-th track of a split: ``train000``, ..., ``test000``, ...

    The split is part of the name so that names are unique across splits (tracks are found by
    name: datasets.find_tracks refuses duplicates, and estimates are stored per name).
    """
    return f"{split}{index:03d}"


def track_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one dataset track; it depends on nothing else (not on the number of tracks)."""
    return np.random.SeedSequence([seed, SPLITS.index(split), index])


def synthesize_track(seed_or_rng, seconds: float = 30.0, sr: int = 44100):
    """Synthesise one song: ``(vocals, accompaniment, score)``.

    ``seed_or_rng`` is anything :func:`numpy.random.default_rng` accepts (an int, a
    :class:`~numpy.random.SeedSequence` such as :func:`track_seed`, or a Generator, which is then
    advanced). The stems are ``(round(seconds * sr), 2)`` float32 on the 16-bit grid (multiples of
    1/32768), so ``vocals + accompaniment`` is exactly the mixture that is written and it stays
    inside [-1, 1). ``score`` is a JSON-friendly dict: tempo, key, chords, the sung ``notes``
    (onset, offset, midi, vowel, consonant), the vocal ``phrases`` and ``rests`` (start, end) in
    seconds (the vocals are exactly zero inside the rests), the ``lead_notes``, the timbres and
    the ``levels`` (vocal-to-accompaniment ratio in dB, peaks in dBFS).
    """
    seconds, sr = _check_duration(seconds), _check_sr(sr)
    rng = np.random.default_rng(seed_or_rng)
    n = int(round(seconds * sr))
    plan = _compose(rng, n / sr)
    dry = _render_voice(rng, plan, n, sr)
    acc, send = _render_accompaniment(rng, plan, n, sr)
    wet_voice, wet_acc = _reverb(rng, (dry, send), sr, n)
    voice_pan = rng.uniform(-0.15, 0.15)
    gate = _phrase_gate(plan["phrase_samples"], n, sr)
    vocals = (_pan(dry, voice_pan) + wet_voice * plan["voice_wet"]) * gate[:, None]
    acc = acc + wet_acc

    # Levels: vocal-to-accompaniment ratio first, then one gain for both so the mixture (and each
    # stem, in case they cancel) peaks at the target; quantising afterwards moves peaks < 1 LSB.
    var_db = rng.uniform(-3.0, 3.0)
    vocals *= _rms(acc) / max(_rms(vocals), 1e-12) * 10 ** (var_db / 20)
    peak_db = rng.uniform(-3.0, -0.5)
    peak = max(np.abs(vocals + acc).max(), np.abs(vocals).max(), np.abs(acc).max())
    gain = 10 ** (peak_db / 20) / peak
    vocals = _quantize(vocals * gain)
    acc = _quantize(acc * gain)

    score = _score(plan, n, sr)
    score["levels"] = {
        "vocal_to_accompaniment_db": _db(_rms(vocals) / _rms(acc)),
        "vocals_rms_dbfs": _db(_rms(vocals)),
        "accompaniment_rms_dbfs": _db(_rms(acc)),
        "mixture_peak_dbfs": _db(np.abs(vocals + acc).max()),
    }
    return vocals, acc, score


def synthesize_dataset(out, seed: int = 0, n_train: int = 24, n_test: int = 6, seconds: float = 30.0,
                       sr: int = 44100, progress: bool = True) -> list[Path]:
    """Write a synthetic stems dataset; returns the track folders (train first, then test).

    Layout: ``out/train/trainNNN/`` and ``out/test/testNNN/``, each with
    ``{mixture,vocals,accompaniment}.wav``, stereo 16-bit PCM at
    ``sr``, plus ``out/dataset.json`` (generator, version, seed, sizes, seconds, sr). Each track
    depends only on ``(seed, split, index)``. Running again with the same arguments skips the
    complete tracks (and finishes an interrupted run); a folder that holds another dataset (other
    arguments, or train/test folders not written here) is refused with a :class:`UserError`, as
    are bad arguments.
    """
    seed = _check_count(seed, "seed (--seed)", 0)
    n_train = _check_count(n_train, "number of training tracks (--train)", 0)
    n_test = _check_count(n_test, "number of test tracks (--test)", 0)
    if n_train + n_test == 0:
        raise UserError("nothing to synthesize: --train and --test are both 0; ask for at least one track")
    seconds, sr = _check_duration(seconds), _check_sr(sr)
    out = Path(out)
    _claim_folder(out, _description(seed, n_train, n_test, seconds, sr))

    from tqdm import tqdm

    jobs = [(split, i) for split, count in zip(SPLITS, (n_train, n_test)) for i in range(count)]
    folders = []
    for split, index in tqdm(jobs, desc=f"synthesizing {out}", unit="track", disable=not progress):
        folder = out / split / track_name(split, index)
        folders.append(folder)
        if all((folder / f"{stem}.wav").is_file() for stem in STEMS):
            continue  # same arguments, same bytes: an earlier run already wrote it
        folder.mkdir(parents=True, exist_ok=True)
        vocals, acc, _ = synthesize_track(track_seed(seed, split, index), seconds, sr)
        _write_stems(folder, vocals, acc, sr)
    return folders


# --------------------------------------------------------------------------------------------
# Arguments and the output folder
# --------------------------------------------------------------------------------------------


def _check_count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_duration(seconds) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(seconds, bool) or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise UserError(
            f"track length (--seconds) must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds "
            f"(room for a sung phrase and a rest), got {seconds!r}"
        )
    return value


def _check_sr(sr) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or not MIN_SR <= sr <= MAX_SR:
        raise UserError(f"sample rate must be an integer between {MIN_SR} and {MAX_SR} Hz "
                        f"(the voice reaches 10 kHz), got {sr!r}")
    return int(sr)


def _description(seed: int, n_train: int, n_test: int, seconds: float, sr: int) -> dict:
    """The content of dataset.json; two runs write the same dataset iff these are equal."""
    return {"generator": "synth", "version": SYNTH_VERSION, "seed": seed, "n_train": n_train,
            "n_test": n_test, "seconds": seconds, "sr": sr, "channels": 2, "format": "WAV PCM_16",
            "stems": sorted(STEMS)}


def _claim_folder(out: Path, description: dict) -> None:
    """Make ``out`` ours (dataset.json) or refuse it if it holds a different dataset."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    meta = out / "dataset.json"
    if meta.is_file():
        try:
            existing = json.loads(meta.read_text())
        except (OSError, ValueError):
            existing = None
        if existing == description:
            return
        if not isinstance(existing, dict) or existing.get("generator") != "synth":
            raise UserError(f"{meta}: not a synthetic dataset description; choose another --out folder")
        keys = [k for k in description if existing.get(k) != description[k]]
        diffs = ", ".join(f"{k}={existing.get(k)!r} (asked {description[k]!r})" for k in keys)
        raise UserError(f"{out}: already holds a different synthetic dataset ({diffs}); "
                        "choose another --out folder or delete this one")
    for split in SPLITS:
        if (out / split).exists():
            raise UserError(f"{out}: already has a {split}/ folder not written by synthesize; "
                            "choose another --out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create the folder ({err.strerror})") from None
    atomic_write_text(meta, json.dumps(description, indent=2) + "\n")


def _quantize(x: np.ndarray) -> np.ndarray:
    """Round to the 16-bit grid, as float32 multiples of 1/32768 (exact in float32)."""
    q = np.round(np.asarray(x, dtype=np.float64) * FULL_SCALE)
    assert np.abs(q).max() < FULL_SCALE, "a stem would clip; the level stage must leave headroom"
    return (q / FULL_SCALE).astype(np.float32)


def _write_stems(folder: Path, vocals: np.ndarray, acc: np.ndarray, sr: int) -> None:
    """Write the stems as 16-bit WAV from integers, so the mixture is their exact sum."""
    import soundfile as sf

    ints = {"vocals": np.round(vocals * FULL_SCALE).astype(np.int32),
            "accompaniment": np.round(acc * FULL_SCALE).astype(np.int32)}
    ints["mixture"] = ints["vocals"] + ints["accompaniment"]
    for stem in STEMS:
        data = ints[stem]
        assert np.abs(data).max() < FULL_SCALE, f"{stem} would clip"
        with atomic_output(folder / f"{stem}.wav") as tmp:
            sf.write(str(tmp), data.astype(np.int16), sr, subtype="PCM_16", format="WAV")


# --------------------------------------------------------------------------------------------
# Small signal helpers
# --------------------------------------------------------------------------------------------


def _db(ratio: float) -> float:
    return float(20 * np.log10(max(float(ratio), 1e-12)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _playing_rms(x: np.ndarray, block: int = 1024) -> float:
    """RMS over the blocks where ``x`` plays (within 40 dB of its loudest block): its level when on."""
    m = len(x) // block * block
    power = np.mean(np.square(x[:m].reshape(-1, block)), axis=1)
    on = power > power.max() * 1e-4
    return float(np.sqrt(power[on].mean())) if on.any() else 0.0


def _midi_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _pan(x: np.ndarray, pan: float) -> np.ndarray:
    """Mono ``(n,)`` to stereo ``(n, 2)`` with a constant-power pan in [-1 (left), 1 (right)]."""
    angle = (pan + 1.0) * math.pi / 4
    return np.stack([x * math.cos(angle), x * math.sin(angle)], axis=1)


def _stft_size(sr: int) -> tuple[int, int]:
    """STFT size of about 46 ms (2048 at 44.1 kHz) and a quarter hop, for time-varying filters."""
    n_fft = 1 << int(round(math.log2(sr * 0.046)))
    return n_fft, n_fft // 4


def _one_pole(x: np.ndarray, tau: float, sr: float) -> np.ndarray:
    """Exponential smoothing along axis 0 with time constant ``tau`` seconds, starting at ``x[0]``."""
    from scipy.signal import lfilter

    a = math.exp(-1.0 / (tau * sr))
    y, _ = lfilter([1 - a], [1, -a], x, axis=0, zi=a * x[:1])
    return y


def _smooth_noise(rng, n: int, sr: float, rate: float) -> np.ndarray:
    """``n`` values at ``sr`` of slow N(0, 1) noise: random knots every ``1/rate`` s, interpolated."""
    knots = rng.standard_normal(int(n / sr * rate) + 2)
    return np.interp(np.arange(n) * (rate / sr), np.arange(len(knots)), knots)


def _lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2, kind: str = "lowpass") -> np.ndarray:
    from scipy.signal import butter, sosfilt

    cutoff = min(cutoff, 0.45 * sr) if kind == "lowpass" else cutoff
    return sosfilt(butter(order, cutoff, kind, fs=sr, output="sos"), x, axis=0)


def _saw(phase: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Band-limited sawtooth (polyBLEP) of a running phase in cycles; ``dt`` cycles per sample."""
    p = (phase % 1.0).astype(np.float32)
    dt = dt.astype(np.float32)
    y = 2.0 * p - 1.0
    lo = p < dt
    x = p[lo] / dt[lo]
    y[lo] -= x + x - x * x - 1.0
    hi = p > 1.0 - dt
    x = (p[hi] - 1.0) / dt[hi]
    y[hi] -= x * x + x + x + 1.0
    return y


def _wavetable(phase: np.ndarray, amps, size: int = 1 << 15) -> np.ndarray:
    """Additive waveform with fixed harmonic amplitudes ``amps`` (harmonics 1, 2, ...) by lookup.

    The table is band-limited by construction (an inverse FFT of the harmonics); nearest-entry
    lookup in 32768 points errs by less than -50 dB and is much faster than summing sines.
    """
    coeffs = np.zeros(size // 2 + 1, dtype=np.complex128)
    coeffs[1:len(amps) + 1] = -0.5j * size * np.asarray(amps, dtype=np.float64)
    table = np.fft.irfft(coeffs, size).astype(np.float32)
    return table[(phase * size).astype(np.int64) & (size - 1)]  # phase >= 0: the mask wraps it


def _harmonics(wave: str, top_hz: float, sr: int) -> np.ndarray:
    """Harmonic amplitudes of a "saw", "square" or "organ" whose highest note is ``top_hz``."""
    count = int(min(48, 0.45 * sr / top_hz))
    h = np.arange(1, count + 1)
    if wave == "organ":
        return np.array([1.0, 0.5, 0.35, 0.25, 0, 0.12, 0, 0.08])[:count]
    return (2 / np.pi) / h * (h % 2 if wave == "square" else 1)


# --------------------------------------------------------------------------------------------
# Composition: every musical decision, no audio
# --------------------------------------------------------------------------------------------


def _degree_midi(tonic: int, mode, degree):
    degree = np.asarray(degree)
    return tonic + 12 * (degree // 7) + np.take(mode, degree % 7)


def _compose(rng, seconds: float) -> dict:
    """Tempo, key, chords, sections, the sung melody with phrases and breaths, and the other parts."""
    bpm = rng.uniform(75, 150)
    beat = 60.0 / bpm
    mode_name = "major" if rng.random() < 0.55 else "minor"
    mode = MODES[mode_name]
    key = int(rng.integers(12))
    prog = PROGRESSIONS[mode_name][rng.integers(len(PROGRESSIONS[mode_name]))]
    n_bars = int(seconds / (4 * beat)) + 2
    roots = [prog[b % 4] for b in range(n_bars)]
    chord_pcs = [{int(p) % 12 for p in _degree_midi(key, mode, [r, r + 2, r + 4])} for r in roots]

    # Blocks of four bars: drums/bass/pad switched independently, never all off.
    n_blocks = n_bars // 4 + 1
    sections = {name: rng.random(n_blocks) < p for name, p in (("drums", 0.85), ("bass", 0.9), ("pad", 0.85))}
    sections["pad"] |= ~(sections["drums"] | sections["bass"])

    plan = {"bpm": bpm, "beat": beat, "key": key, "mode": mode_name, "roots": roots, "n_bars": n_bars,
            "chord_pcs": chord_pcs, "sections": sections, "seconds": seconds}
    plan.update(_compose_voice(rng, plan, mode))
    plan["lead_notes"] = _compose_lead(rng, plan)
    plan["bass_notes"] = _compose_bass(rng, plan, mode)
    plan["chords_notes"] = _compose_chords(rng, plan, mode)
    plan["drum_hits"] = _compose_drums(rng, plan)
    plan["voice_wet"] = rng.uniform(0.15, 0.4)
    return plan


def _compose_voice(rng, plan: dict, mode) -> dict:
    """The sung notes, phrases and breaths (seconds), the singer's register and vowel choices."""
    beat, seconds, key = plan["beat"], plan["seconds"], plan["key"]
    centre = rng.uniform(52, 70)
    lo, hi = int(round(centre - 7)), int(round(centre + 9))
    allowed = np.array([m for m in range(lo, hi + 1) if (m - key) % 12 in mode])
    notes, phrases, breaths = [], [], []
    cursor = max(float(rng.integers(1, 5)), math.ceil(2 * 0.6 / beat) / 2)  # beats
    position = int(np.argmin(np.abs(allowed - centre)))
    while True:
        available = (seconds - 0.35) / beat - cursor
        minimum = 1.0 if not phrases else 1.5
        if available < minimum:
            if phrases:
                break
            cursor = math.ceil(2 * 0.45 / beat) / 2  # a short song: start early instead
            available = (seconds - 0.35) / beat - cursor
        length = min(float(rng.choice([3, 4, 4, 5, 6, 7, 8])), math.floor(2 * available) / 2)
        length = max(length, 1.0)
        sixteenths = int(round(4 * length))
        durs = []  # in sixteenths; single sixteenths only in slow songs, where they last >= 0.14 s
        weights = ([0.15, 0.45, 0.05, 0.2, 0.07, 0.05, 0.03] if beat > 0.55 else
                   [0.0, 0.45, 0.05, 0.3, 0.08, 0.09, 0.03])
        while sum(durs) < sixteenths:
            durs.append(int(rng.choice([1, 2, 3, 4, 6, 8, 12], p=weights)))
        durs[-1] -= sum(durs) - sixteenths
        phrase_gain = 10 ** (rng.uniform(-3, 3) / 20)
        start_note = len(notes)
        t = cursor * beat
        for k, d in enumerate(durs):
            bar = min(int(t / (4 * beat)), plan["n_bars"] - 1)
            if k == 0 or rng.random() < 0.85:
                position += int(rng.choice([-3, -2, -1, 0, 1, 2, 3], p=[0.05, 0.15, 0.25, 0.15, 0.25, 0.1, 0.05]))
                position = int(np.clip(position, 0, len(allowed) - 1))
            on_beat = abs(t / beat - round(t / beat)) < 1e-6
            if on_beat and rng.random() < 0.6:  # chord tones on beats
                tones = [i for i, m in enumerate(allowed) if m % 12 in plan["chord_pcs"][bar]]
                position = min(tones, key=lambda i: (abs(i - position), i))
            melisma = k > 0 and rng.random() < 0.15
            consonant = -1 if melisma or (k == 0 and rng.random() < 0.25) else int(
                rng.choice(len(CONSONANT_NAMES), p=CONSONANT_WEIGHTS))
            vowel = notes[-1]["vowel"] if melisma else int(rng.choice(len(VOWEL_NAMES), p=VOWEL_WEIGHTS))
            cdur = rng.uniform(*CONSONANTS[CONSONANT_NAMES[consonant]][1]) if consonant >= 0 else 0.0
            if k:  # the consonant takes at most 40 % of the previous note
                cdur = min(cdur, 0.4 * durs[k - 1] * beat / 4)
            onset = t + float(np.clip(rng.normal(0, 0.01), -0.02, 0.02))
            notes.append({"onset": onset, "end": t + d * beat / 4, "midi": int(allowed[position]),
                          "vel": phrase_gain * 10 ** (rng.uniform(-1.5, 1.5) / 20), "vowel": vowel,
                          "consonant": consonant, "cdur": cdur, "swell": rng.uniform(-0.3, 0.3),
                          "scoop": rng.uniform(0.3, 1.5) if rng.random() < 0.3 else 0.0})
            t += d * beat / 4
        phrase = notes[start_note:]
        # Legato: a note lasts until the next syllable's consonant; the last one is held 80-100 %.
        for a, b in zip(phrase[:-1], phrase[1:]):
            a["offset"] = b["onset"] - b["cdur"]
        phrase[-1]["offset"] = phrase[-1]["onset"] + (phrase[-1]["end"] - phrase[-1]["onset"]) * rng.uniform(0.8, 1.0)
        first = phrase[0]["onset"] - phrase[0]["cdur"]
        start = first - 0.03
        if rng.random() < 0.75:
            dur = rng.uniform(0.15, 0.35)
            breaths.append((first - 0.03 - dur, dur))
            start = first - 0.04 - dur
        end = min(phrase[-1]["offset"] + rng.uniform(0.12, 0.25), seconds)
        phrases.append((max(start, 0.0), end))
        rest = max(float(rng.choice([1, 2, 2, 3, 4, 5])), math.ceil(2 * 1.0 / beat) / 2)
        if rng.random() < 0.15:
            rest += 4  # an instrumental break
        cursor += length + rest
    return {"voice_notes": notes, "phrases": phrases, "breaths": breaths, "voice_range": (lo, hi),
            "voice_centre": centre, "voice_allowed": allowed}


def _compose_lead(rng, plan: dict) -> list[tuple[float, float, float, float]]:
    """(onset, duration, midi, velocity) of the lead: fills in the voice's rests, maybe a counter-melody."""
    beat, allowed = plan["beat"], plan["voice_allowed"]
    if rng.random() < 0.3:
        allowed = allowed + 12 if allowed.max() + 12 <= 84 else allowed
    bounds = [(0.0, plan["phrases"][0][0])]
    bounds += [(a[1], b[0]) for a, b in zip(plan["phrases"][:-1], plan["phrases"][1:])]
    bounds.append((plan["phrases"][-1][1], plan["seconds"]))
    notes = []
    position = len(allowed) // 2
    fill_probability = rng.uniform(0.5, 1.0)
    step = 0.5 if rng.random() < 0.6 else 0.25  # eighths or sixteenths, in beats
    for start, end in bounds:
        t = math.ceil((start / beat + 0.5) / step) * step
        if end / beat - 0.5 - t < 1.5 or rng.random() > fill_probability:
            continue
        while t * beat < end - 0.5 * beat:
            d = step * int(rng.choice([1, 1, 2, 2, 3, 4]))
            if rng.random() < 0.8:
                position = int(np.clip(position + rng.choice([-2, -1, 1, 2, 3, -3]), 0, len(allowed) - 1))
                notes.append((t * beat, d * beat * 0.9, float(allowed[position]), 10 ** (rng.uniform(-3, 0) / 20)))
            t += d
    if rng.random() < 0.4:  # a quiet counter-melody of long notes under some phrases
        for start, end in plan["phrases"]:
            if rng.random() < 0.5:
                continue
            t = math.ceil(start / beat)
            while (t + 2) * beat < end:
                d = float(rng.choice([2, 3, 4]))
                position = int(np.clip(position + rng.choice([-2, -1, 1, 2]), 0, len(allowed) - 1))
                notes.append((t * beat, min(d * beat, end - t * beat), float(allowed[position]),
                              10 ** (rng.uniform(-10, -6) / 20)))
                t += d
    notes.sort()
    return notes


def _compose_bass(rng, plan: dict, mode) -> list[tuple[float, float, float, float]]:
    """(onset, duration, midi, velocity) of the bass line: chord roots with fifths and octaves."""
    beat, key = plan["beat"], plan["key"]
    patterns = ((0, 4), (0, 2, 4, 6), (0, 3, 4, 6, 7), (0, 1, 2, 3, 4, 5, 6, 7), (0, 3, 6))
    pattern = patterns[rng.integers(len(patterns))]
    legato = rng.uniform(0.5, 0.95)
    base = 28 + (key - 4) % 12  # E1..D#2
    notes = []
    for bar, root in enumerate(plan["roots"]):
        if not plan["sections"]["bass"][bar // 4]:
            continue
        root_midi = int(_degree_midi(base, mode, root))
        for i, e in enumerate(pattern):
            nxt = pattern[i + 1] if i + 1 < len(pattern) else 8
            midi = root_midi + int(rng.choice([0, 0, 0, 7, 12])) if i else root_midi
            onset = (bar * 4 + e / 2) * beat
            notes.append((onset, (nxt - e) / 2 * beat * legato, float(midi), 10 ** (rng.uniform(-2, 0) / 20)))
    return notes


def _compose_chords(rng, plan: dict, mode) -> list[tuple[float, float, tuple, float]]:
    """(onset, duration, midis, velocity) of the chord instrument: 3-4 note close voicings."""
    beat, key = plan["beat"], plan["key"]
    size = int(rng.integers(3, 5))
    low = int(rng.integers(50, 56))
    hits = (0,) if rng.random() < 0.5 else ((0, 4) if rng.random() < 0.6 else (0, 3, 6))  # eighths
    notes = []
    for bar, root in enumerate(plan["roots"]):
        if not plan["sections"]["pad"][bar // 4]:
            continue
        degrees = [root, root + 2, root + 4, root + 6][:size]
        pcs = sorted({int(m) % 12 for m in _degree_midi(key, mode, degrees)})
        chord = sorted(low + (pc - low) % 12 for pc in pcs)  # close voicing above ``low``
        chord += [chord[0] + 12] * (size - len(chord))
        for i, e in enumerate(hits):
            nxt = hits[i + 1] if i + 1 < len(hits) else 8
            notes.append(((bar * 4 + e / 2) * beat, (nxt - e) / 2 * beat * 0.97, tuple(chord), 1.0))
    return notes


def _compose_drums(rng, plan: dict) -> dict:
    """Onsets (s) and velocities of kick, snare, closed and open hi-hat from a 16-step pattern."""
    beat = plan["beat"]
    kicks = ((0, 8), (0, 4, 8, 12), (0, 6, 10), (0, 7, 8), (0, 3, 8, 11))
    snares = ((4, 12), (8,), (4, 12, 15))
    kick = kicks[rng.integers(len(kicks))]
    snare = snares[rng.integers(len(snares))]
    hat_step = 1 if rng.random() < 0.4 else 2
    hits = {name: ([], []) for name in ("kick", "snare", "hat", "open_hat")}

    def add(name, step, bar, velocity):
        t = (bar * 4 + step / 4) * beat + rng.normal(0, 0.004)
        if 0 <= t < plan["seconds"]:
            hits[name][0].append(t)
            hits[name][1].append(velocity * 10 ** (rng.uniform(-2, 0) / 20))

    for bar in range(plan["n_bars"]):
        if not plan["sections"]["drums"][bar // 4]:
            continue
        for s in kick:
            add("kick", s, bar, 1.0)
        for s in snare:
            add("snare", s, bar, 1.0)
        for s in range(16):
            if s % 4 == 2 and rng.random() < 0.1:
                add("snare", s, bar, 0.25)  # ghost note
        for s in range(0, 16, hat_step):
            if s % 8 == 6 and rng.random() < 0.25:
                add("open_hat", s, bar, 0.8)
            elif rng.random() < 0.95:
                add("hat", s, bar, 1.0 if s % 4 == 0 else 0.6)
    return {k: (np.array(t), np.array(v)) for k, (t, v) in hits.items()}


def _score(plan: dict, n: int, sr: int) -> dict:
    """The JSON-friendly description of a composed track (see :func:`synthesize_track`)."""
    phrases = [(a / sr, b / sr) for a, b in plan["phrase_samples"]]
    edges = [0.0] + [x for p in phrases for x in p] + [n / sr]
    rests = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]
    notes = [{"onset": float(v["onset"]), "offset": float(v["offset"]), "midi": v["midi"],
              "vowel": VOWEL_NAMES[v["vowel"]],
              "consonant": CONSONANT_NAMES[v["consonant"]] if v["consonant"] >= 0 else None}
             for v in plan["voice_notes"]]
    bar = 4 * plan["beat"]
    chords = [(b * bar, min((b + 1) * bar, n / sr), sorted(plan["chord_pcs"][b]))
              for b in range(plan["n_bars"]) if b * bar < n / sr]
    return {"seconds": n / sr, "sr": sr, "tempo_bpm": float(plan["bpm"]),
            "key": f"{NOTE_NAMES[plan['key']]} {plan['mode']}", "chords": chords,
            "voice_range": list(plan["voice_range"]), "notes": notes, "phrases": phrases, "rests": rests,
            "breaths": [(float(a), float(a + d)) for a, d in plan["breaths"]],
            "lead_notes": [(float(a), float(a + d), m) for a, d, m, _ in plan["lead_notes"]],
            "timbres": dict(plan["timbres"])}


# --------------------------------------------------------------------------------------------
# Voice
# --------------------------------------------------------------------------------------------


def _phrase_gate(phrase_samples, n: int, sr: int) -> np.ndarray:
    """1 inside the phrases with raised-cosine edges (10 ms in, 40 ms out), exactly 0 outside."""
    gate = np.zeros(n)
    for a, b in phrase_samples:
        gate[a:b] = 1.0
        fade_in, fade_out = (min(int(s * sr), (b - a) // 2) for s in (0.01, 0.04))
        gate[a:a + fade_in] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade_in) / fade_in)
        gate[b - fade_out:b] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, fade_out + 1) / fade_out)
    return gate


def _render_voice(rng, plan: dict, n: int, sr: int) -> np.ndarray:
    """The dry mono voice ``(n,)``: sawtooth source filtered by moving formants, plus noises.

    Also stores the phrase boundaries in samples as ``plan["phrase_samples"]``.
    """
    notes = plan["voice_notes"]
    on = np.array([v["onset"] for v in notes])
    off = np.array([v["offset"] for v in notes])
    midi = np.array([v["midi"] for v in notes], dtype=np.float64)
    vel = np.array([v["vel"] for v in notes])
    swell = np.array([v["swell"] for v in notes])
    scoop = np.array([v["scoop"] for v in notes])
    cdur = np.array([v["cdur"] for v in notes])
    cons = np.array([v["consonant"] for v in notes])
    plan["phrase_samples"] = [(max(0, int(math.floor(a * sr))), min(n, int(math.ceil(b * sr))))
                              for a, b in plan["phrases"]]

    # Pitch at the control rate: portamento, scoops, delayed vibrato, drift and flutter.
    steps = np.arange(0, n, CONTROL)
    control_sr = sr / CONTROL
    j = np.clip(np.searchsorted(on * sr, steps, side="right") - 1, 0, len(notes) - 1)
    since = steps / sr - on[j]
    pitch = _one_pole(midi[j], rng.uniform(0.02, 0.07), control_sr)
    pitch -= scoop[j] * np.exp(-np.maximum(since, 0) / rng.uniform(0.05, 0.1))
    rate = rng.uniform(4.8, 6.5) * (1 + 0.08 * _smooth_noise(rng, len(steps), control_sr, 2.0))
    depth = rng.uniform(0.15, 0.6) * np.clip((since - rng.uniform(0.12, 0.35)) / 0.25, 0, 1)
    pitch += depth * np.sin(2 * np.pi * np.cumsum(rate) / control_sr)
    pitch += (0.08 * _smooth_noise(rng, len(steps), control_sr, 3.0)
              + 0.02 * _smooth_noise(rng, len(steps), control_sr, 25.0))
    dt = np.interp(np.arange(n), steps, _midi_hz(pitch) / sr)
    source = _saw(np.cumsum(dt), dt)

    n_fft, hop = _stft_size(sr)
    spec = stft(source, n_fft=n_fft, hop_length=hop)
    noise = stft(rng.standard_normal(n), n_fft=n_fft, hop_length=hop)
    frames = spec.shape[1]
    tf = np.arange(frames) * hop / sr
    freqs = np.arange(spec.shape[0]) * sr / n_fft
    top = min(0.45 * sr, 14000.0)
    nb = int(np.searchsorted(freqs, top))  # bins above stay zero

    # Voiced amplitude per frame: attack, swell, release after the offset, dips at consonants.
    jf = np.searchsorted(on, tf, side="right") - 1
    k = np.clip(jf, 0, len(notes) - 1)
    since_f = tf - on[k]
    dur = off[k] - on[k]
    attack = rng.uniform(0.03, 0.08)
    held = np.minimum(since_f, dur)
    amp = vel[k] * np.clip(held / attack, 0, 1) * (1 + swell[k] * (held / dur - 0.5))
    amp *= np.exp(-np.maximum(since_f - dur, 0) / 0.06)
    amp[jf < 0] = 0.0
    nxt = np.clip(jf + 1, 0, len(notes) - 1)
    in_cons = (jf + 1 < len(notes)) & (tf >= on[nxt] - cdur[nxt])
    dips = np.array([CONSONANTS[CONSONANT_NAMES[c]][5] if c >= 0 else 1.0 for c in cons])
    amp = np.where(in_cons, dips[nxt] * vel[nxt], amp)
    amp = np.convolve(amp, [0.25, 0.5, 0.25], mode="same")
    amp *= 1 + 0.05 * _smooth_noise(rng, frames, sr / hop, 8.0)  # shimmer

    # Formants per frame: the note's vowel (nasal during m/n/l), gliding between syllables.
    from scipy.ndimage import uniform_filter1d

    centre = plan["voice_centre"]
    scale = np.interp(centre, [52, 70], [1.0, 1.18]) * rng.uniform(0.96, 1.04)
    table = np.array([VOWELS[v] for v in VOWEL_NAMES] + [NASAL_FORMANTS], dtype=np.float64) * scale
    vowel = np.array([v["vowel"] for v in notes])
    nasal = np.array([c >= 0 and CONSONANTS[CONSONANT_NAMES[c]][0] == "nasal" for c in cons])
    row = np.where(in_cons & nasal[nxt], len(VOWEL_NAMES), vowel[k])
    formants = uniform_filter1d(table[row], size=5, axis=0, mode="nearest")
    gains = np.array(FORMANT_GAINS)
    gains[2:4] += rng.uniform(0, 2)  # the singer's formant, stronger in trained voices
    bw = np.array(FORMANT_BANDWIDTHS) * scale
    active = np.flatnonzero(amp > 1e-4)
    f = freqs[:nb, None].astype(np.float32)
    knee = rng.uniform(1500, 3500)
    envelope = np.ones((nb, len(active)), dtype=np.float32)
    for i in range(5):
        envelope += gains[i] / (1 + np.square((f - formants[active, i].astype(np.float32)) / (bw[i] / 2)))
    envelope *= (1 / np.sqrt(1 + (f / knee) ** 2) / (1 + (f / top) ** 8)).astype(np.float32)

    voiced = np.zeros((spec.shape[0], frames), dtype=np.complex64)
    voiced[:nb, active] = spec[:nb, active] * envelope
    # Reference power of a sung frame at amplitude 1, to set noise levels in dB re the vowel.
    ref = float(np.median(np.sum(np.abs(voiced[:, active]) ** 2, axis=0)))
    voiced[:, active] *= amp[active].astype(np.float32)

    # Aspiration: the same envelope on noise, high-passed, at a per-singer breathiness.
    aspiration = np.zeros_like(voiced)
    hp = (f / 2000) ** 2 / (1 + (f / 2000) ** 2)
    aspiration[:nb, active] = noise[:nb, active] * envelope * hp * amp[active].astype(np.float32)
    ratio = np.sqrt(np.sum(np.abs(voiced) ** 2) / max(np.sum(np.abs(aspiration) ** 2), 1e-20))
    total = voiced + aspiration * np.float32(ratio * 10 ** (rng.uniform(-30, -20) / 20))

    # Consonants and breaths: shaped noise at a level relative to the vowel's frame power.
    noise_power = float(np.sum(np.hanning(n_fft + 1)[:-1] ** 2))
    fb = np.maximum(freqs[:nb], 1.0)

    def add_noise(start, length, centre_hz, width, level_db, kind):
        shape = np.exp(-0.5 * (np.log2(fb / centre_hz) / width) ** 2) / (1 + (fb / top) ** 8)
        shape *= math.sqrt(ref / noise_power) / np.sqrt(np.sum(shape ** 2)) * 10 ** (level_db / 20)
        first = max(0, int(start * sr / hop) - 1)
        last = min(frames, int((start + length) * sr / hop) + 2)
        u = np.clip((tf[first:last] - start) / length, 0, 1)
        if kind == "burst":  # closure (silent), then a release burst decaying into the vowel
            t_env = np.where(u < 0.7, 0.0, np.exp(-(u - 0.7) * 4))
        else:
            t_env = np.sin(np.pi * u) ** 0.7
        total[:nb, first:last] += noise[:nb, first:last] * (shape[:, None] * t_env).astype(np.float32)

    consonant_db = rng.uniform(-6, 0)
    for i in np.flatnonzero(cons >= 0):
        kind, _, centre_hz, width, level, _ = CONSONANTS[CONSONANT_NAMES[cons[i]]]
        if kind != "nasal":
            add_noise(on[i] - cdur[i], cdur[i], centre_hz * rng.uniform(0.9, 1.1), width,
                      level + consonant_db + _db(vel[i]), kind)
    breath_db = rng.uniform(-24, -14)
    for start, length in plan["breaths"]:
        add_noise(start, length, rng.uniform(1400, 2200), 1.3, breath_db, "fric")

    dry = istft(total, n, n_fft=n_fft, hop_length=hop).astype(np.float64)
    active_samples = np.concatenate([np.arange(a, b) for a, b in plan["phrase_samples"]])
    return dry / max(_rms(dry[active_samples]), 1e-12)


# --------------------------------------------------------------------------------------------
# Accompaniment
# --------------------------------------------------------------------------------------------


def _adsr(since, dur, attack, decay, sustain, release):
    """Envelope of a note ``since`` seconds after its onset, released after ``dur`` seconds."""
    held = np.minimum(since, dur)
    level = np.minimum(held / attack, 1.0) * (sustain + (1 - sustain) * np.exp(-np.maximum(held - attack, 0) / decay))
    return level * np.exp(-np.maximum(since - dur, 0) / release)


def _render_line(notes, n: int, sr: int, wave: str, adsr, glide: float = 0.0, vibrato=(0.0, 5.0),
                 fm=(1.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """An instrument playing ``notes``: ``(signal (n, voices), seconds since the onset per control step)``.

    ``notes`` are ``(onset, duration, midi, velocity)`` sorted by onset; ``midi`` is a number, or a
    tuple with one pitch per voice of a chord (voices share onsets and envelope). A note sounds
    until the next starts (its release is cut there). ``wave``: "saw", "square", "organ" or "fm"
    (a carrier with a modulator at ``fm[0]`` times the pitch and index ``fm[1]`` decaying with
    time constant ``fm[2]`` s). The control signals are computed every :data:`CONTROL` samples;
    the other waves come from a table band-limited below 0.45 ``sr`` for the highest note.
    """
    if not notes:
        return np.zeros((n, 1)), np.full(n // CONTROL + 1, 1e3)
    on, dur, vel = (np.array([note[i] for note in notes], dtype=np.float64) for i in (0, 1, 3))
    midi = np.array([np.atleast_1d(note[2]) for note in notes], dtype=np.float64)  # (notes, voices)
    tc = np.arange(0, n, CONTROL) / sr
    j = np.searchsorted(on, tc, side="right") - 1
    k = np.clip(j, 0, len(on) - 1)
    since = np.where(j < 0, 1e3, tc - on[k])  # before the first note: long after a (silent) one
    env = _adsr(since, dur[k], *adsr) * vel[k]
    env[j < 0] = 0.0
    env = _one_pole(_upsample(env, n), 0.002, sr).astype(np.float32)  # smooths the control steps
    pitch = midi[k]
    if glide:
        pitch = _one_pole(pitch, glide, sr / CONTROL)
    depth, rate = vibrato
    if depth:
        pitch = pitch + (depth * np.clip((since - 0.2) / 0.3, 0, 1) * np.sin(2 * np.pi * rate * tc))[:, None]
    if wave != "fm":  # band-limited for the highest note this line plays
        amps = _harmonics(wave, float(_midi_hz(pitch.max())), sr)
    else:
        ratio, index, decay = fm
        index = _upsample((index * np.exp(-since / decay)).astype(np.float32), n)
    out = np.empty((n, pitch.shape[1]), dtype=np.float32)
    for v in range(pitch.shape[1]):  # one voice at a time keeps the sample-rate arrays few
        phase = np.cumsum(_upsample(_midi_hz(pitch[:, v]) / sr, n))
        if wave != "fm":
            out[:, v] = _wavetable(phase, amps)
        else:
            modulator = np.sin((2 * np.pi * ((ratio * phase) % 1.0)).astype(np.float32))
            out[:, v] = np.sin((2 * np.pi * (phase % 1.0)).astype(np.float32) + index * modulator)
        out[:, v] *= env
    return out, since


def _upsample(control: np.ndarray, n: int) -> np.ndarray:
    """Control-rate values (every :data:`CONTROL` samples) held to ``n`` samples."""
    return np.repeat(control, CONTROL, axis=0)[:n]


def _decaying_lowpass(x: np.ndarray, since_onset: np.ndarray, sr: int, start_hz: float, end_hz: float,
                      tau: float) -> np.ndarray:
    """Low-pass ``x`` ``(n,)`` with a cutoff falling from ``start_hz`` to ``end_hz`` after each onset.

    ``since_onset`` is the time since the latest onset per control step (:func:`_render_line`).
    """
    n_fft, hop = _stft_size(sr)
    spec = stft(x, n_fft=n_fft, hop_length=hop)
    since = since_onset[np.minimum(np.arange(spec.shape[1]) * hop // CONTROL, len(since_onset) - 1)]
    cutoff = end_hz + (start_hz - end_hz) * np.exp(-since / tau)
    freqs = np.arange(spec.shape[0]) * sr / n_fft
    spec *= (1 / np.sqrt(1 + (freqs[:, None] / cutoff[None, :]) ** 4)).astype(np.float32)
    return istft(spec, len(x), n_fft=n_fft, hop_length=hop).astype(np.float64)


def _drum_samples(rng, sr: int) -> dict:
    """One hit of each drum, synthesised with per-track parameters."""
    def t(seconds):
        return np.arange(int(seconds * sr)) / sr

    tk = t(0.45)
    f_kick = rng.uniform(45, 60) + rng.uniform(70, 150) * np.exp(-tk / rng.uniform(0.02, 0.05))
    kick = np.sin(2 * np.pi * np.cumsum(f_kick) / sr) * np.exp(-tk / rng.uniform(0.1, 0.25))
    kick = np.tanh(2.0 * kick) + 0.3 * rng.standard_normal(len(tk)) * np.exp(-tk / 0.002)
    ts = t(0.35)
    snare_noise = _lowpass(rng.standard_normal(len(ts)), rng.uniform(800, 1500), sr, 2, "highpass")
    snare = (0.5 * np.sin(2 * np.pi * rng.uniform(170, 240) * ts) * np.exp(-ts / 0.05)
             + snare_noise * np.exp(-ts / rng.uniform(0.04, 0.1)))
    snare = _lowpass(snare, rng.uniform(4000, 9000), sr)
    th = t(0.4)
    if rng.random() < 0.5:  # white noise or a metallic cluster of square waves (808 style)
        metal = rng.standard_normal(len(th))
    else:
        freqs = rng.uniform(300, 900) * np.array([1.0, 1.34, 1.5, 1.77, 2.03, 2.54])
        metal = np.sign(np.sin(2 * np.pi * freqs[:, None] * th)).sum(axis=0)
    metal = _lowpass(metal, rng.uniform(6000, 8000), sr, 4, "highpass")
    closed = metal * np.exp(-th / rng.uniform(0.015, 0.045))
    opened = metal * np.exp(-th / rng.uniform(0.12, 0.25))
    hits = {"kick": kick, "snare": snare, "hat": closed, "open_hat": opened}
    return {k: v / np.abs(v).max() for k, v in hits.items()}


def _place(sample: np.ndarray, onsets, gains, n: int, sr: int) -> np.ndarray:
    """Add one copy of ``sample`` per onset (seconds) with its gain: ``(n,)``."""
    out = np.zeros(n)
    for t, g in zip(onsets, gains):
        i = int(round(t * sr))
        m = min(n - i, len(sample))
        if m > 0:
            out[i:i + m] += g * sample[:m]
    return out


def _render_accompaniment(rng, plan: dict, n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """The accompaniment ``(n, 2)`` (dry, panned, levelled) and its mono reverb send ``(n,)``."""
    timbres = {}
    parts = []  # (mono signal, level dB, pan, reverb send)

    drums = _drum_samples(rng, sr)
    for name, level, width in (("kick", -3, 0.05), ("snare", -9, 0.1), ("hat", -21, 0.5), ("open_hat", -24, 0.5)):
        onsets, gains = plan["drum_hits"][name]
        sig = _place(drums[name], onsets, gains, n, sr)
        parts.append((sig, level + rng.uniform(-3, 3), rng.uniform(-width, width), 0.1 if name == "snare" else 0.0))

    bass_wave = ("saw", "square", "fm")[rng.integers(3)]
    timbres["bass"] = bass_wave
    bass, _ = _render_line(plan["bass_notes"], n, sr, bass_wave, (0.005, rng.uniform(0.1, 0.4), 0.5, 0.05),
                           fm=(1.0, rng.uniform(1, 4), 0.15))
    bass = _lowpass(bass[:, 0], rng.uniform(400, 1200), sr, 4)
    parts.append((bass, -5 + rng.uniform(-3, 3), rng.uniform(-0.1, 0.1), 0.0))

    pad_kind = ("pad", "organ", "epiano")[rng.integers(3)]
    timbres["chords"] = pad_kind
    wave, adsr = {"pad": ("saw", (rng.uniform(0.05, 0.3), 1.0, 1.0, 0.3)),
                  "organ": ("organ", (0.01, 1.0, 1.0, 0.05)),
                  "epiano": ("fm", (0.003, rng.uniform(0.5, 1.5), 0.3, 0.2))}[pad_kind]
    chords = plan["chords_notes"]
    if pad_kind == "pad":  # two oscillators per voice, detuned by +-8 cents
        chords = [(a, d, tuple(m + c for m in ms for c in (-0.08, 0.08)), g) for a, d, ms, g in chords]
    voices, _ = _render_line(chords, n, sr, wave, adsr, fm=(1.0, rng.uniform(1.5, 3), 0.4))
    pans = np.resize([1.0, -1.0], voices.shape[1]) * rng.uniform(0.2, 0.6, voices.shape[1])
    angles = (pans + 1.0) * math.pi / 4
    # Pan each voice. (Products are written (k, voices) @ (voices, n): BLAS is slow for tall-skinny.)
    pad = (np.stack([np.cos(angles), np.sin(angles)]).astype(np.float32) @ voices.T).T
    if pad_kind == "pad":
        pad = _lowpass(pad, rng.uniform(1200, 3000), sr)
    pad_mono = pad.mean(axis=1)

    lead_kind = ("pluck", "square", "bell")[rng.integers(3)]
    timbres["lead"] = lead_kind
    if lead_kind == "pluck":
        lead, since = _render_line(plan["lead_notes"], n, sr, "saw", (0.002, rng.uniform(0.15, 0.5), 0.0, 0.1))
        lead = _decaying_lowpass(lead[:, 0], since, sr, rng.uniform(6000, 10000), rng.uniform(800, 2000),
                                 rng.uniform(0.05, 0.2))
    elif lead_kind == "square":
        lead, _ = _render_line(plan["lead_notes"], n, sr, "square", (0.01, 0.2, 0.7, 0.08),
                               glide=0.03, vibrato=(rng.uniform(0.1, 0.4), rng.uniform(4.5, 6.5)))
        lead = _lowpass(lead[:, 0], rng.uniform(3000, 7000), sr)
    else:
        lead, _ = _render_line(plan["lead_notes"], n, sr, "fm", (0.002, rng.uniform(0.3, 1.0), 0.0, 0.3),
                               fm=(float(rng.choice([2.0, 3.5, 5.0])), rng.uniform(2, 5), rng.uniform(0.1, 0.4)))
        lead = lead[:, 0]
    parts.append((lead, -8 + rng.uniform(-3, 3), rng.uniform(-0.5, 0.5), 0.25))

    # One matrix product mixes the mono parts into left, right and the reverb send.
    signals = np.stack([p[0] for p in parts]).astype(np.float32)  # (parts, n)
    gains = np.array([10 ** (p[1] / 20) / max(_playing_rms(p[0]), 1e-12) for p in parts])
    angles = (np.array([p[2] for p in parts]) + 1.0) * math.pi / 4
    routing = gains * np.stack([np.cos(angles), np.sin(angles), [p[3] for p in parts]])
    mixed = (routing.astype(np.float32) @ signals).T  # (n, 3)
    pad_gain = 10 ** ((-9 + rng.uniform(-3, 3)) / 20) / max(_playing_rms(pad_mono), 1e-12)
    plan["timbres"] = timbres
    return mixed[:, :2] + pad * pad_gain, mixed[:, 2] + 0.3 * pad_gain * pad_mono


def _reverb(rng, sources, sr: int, n: int) -> list[np.ndarray]:
    """The same stereo room for each mono ``(n,)`` source: a list of ``(n, 2)`` wet signals."""
    from scipy.signal import oaconvolve

    rt60 = rng.uniform(0.4, 1.6)
    length = int(min(rt60, 1.2) * sr)
    t = np.arange(length) / sr
    ir = rng.standard_normal((length, 2)) * np.exp(-6.91 * t / rt60)[:, None]
    ir = _lowpass(ir, rng.uniform(3000, 8000), sr)
    ir = np.concatenate([np.zeros((int(rng.uniform(0.01, 0.03) * sr), 2)), ir])
    ir /= np.sqrt(np.sum(ir ** 2) / 2)
    stacked = np.stack(sources, axis=1)[:, :, None].astype(np.float32)  # (n, sources, 1) * (L, 1, 2)
    wet = oaconvolve(stacked, ir[:, None, :].astype(np.float32), axes=0)[:n]
    return [wet[:, i, :] for i in range(len(sources))]

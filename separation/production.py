"""Make a dry voice sound produced: the effects of a mixing desk, drawn at random, and a dev set.

Training augmentation (the data generator calls this on MIR-1K's dry voices)::

    rng = np.random.default_rng(seed)
    wet = produce(vocals, sr, rng, effects=("highpass", "compressor", "eq", "reverb"))

``vocals`` is mono float32 ``(samples,)``; the result has the same shape, dtype and RMS level
(the generator sets the vocal-to-accompaniment level itself). Each named effect draws its
settings from ``rng`` within the ranges below and is applied in the order of :data:`EFFECTS`,
a vocal chain's usual order; effects not named are skipped, so each can be measured on its own.
The same rng state gives the same output. pedalboard (Spotify's wrapper of JUCE's DSP) does
the processing; frequencies that do not exist at the given rate (an 8 kHz "air" shelf at
8192 Hz) are moved just below its Nyquist frequency. Speed at 8192 Hz:
``benchmarks/bench_production.py``.

The produced-music development set::

    python -m separation.production devset --mir1k ROOT --instrumental DIR --out data/produced-dev [--seed 0]

writes ``<out>/test/<track>/{mixture,vocals,accompaniment}.wav`` (a ``stems`` folder for
``inference.py`` and ``evaluate.py --references <out>/test``): each song of MIR-1K's four
singer-disjoint test singers, produced with one of :data:`DEV_PRESETS` (fixed chains, not the
random draws above, and a convolution reverb with synthetic stereo impulse responses instead of
pedalboard's Freeverb, so that the dev set is not the training augmentation's own output), over
an excerpt of a track of the instrumental ``test`` split, at 44.1 kHz stereo. See
:func:`make_devset`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from separation.audio import fit_length

#: The effects, in the order they are applied.
EFFECTS = ("pitch", "highpass", "eq", "compressor", "saturation", "doubling", "reverb")

# Ranges of each effect's settings (uniform draws; "log" ranges are drawn uniformly in log).
#: Time-domain pitch shift (pedalboard.PitchShift, a phase vocoder that keeps the duration), semitones.
PITCH_SEMITONES = (-3.0, 3.0)
#: High-pass cutoff (rumble and proximity-effect removal), Hz, log; two first-order
#: pedalboard.HighpassFilter in series, 12 dB/octave, a mixing desk's usual slope.
HIGHPASS_HZ = (60.0, 200.0)
#: EQ: a low-mid cut (mud), a presence peak and an "air" high shelf: (Hz range, gain dB range).
EQ_LOW_MID = ((200.0, 500.0), (-6.0, -1.0))
EQ_PRESENCE = ((2000.0, 5000.0), (1.0, 6.0))
EQ_AIR = ((8000.0, 12000.0), (1.0, 6.0))
#: Compressor: threshold (dB below the voice's peak), ratio, attack ms, release ms.
COMPRESSOR_THRESHOLD_DB = (-30.0, -10.0)
COMPRESSOR_RATIO = (2.0, 8.0)
COMPRESSOR_ATTACK_MS = (1.0, 20.0)
COMPRESSOR_RELEASE_MS = (50.0, 300.0)
#: Saturation: tanh drive (dB above the voice's peak) and wet share of the mix.
SATURATION_DRIVE_DB = (3.0, 15.0)
SATURATION_MIX = (0.3, 1.0)
#: Doubling (pedalboard.Chorus: a delayed copy whose delay wobbles, i.e. detuned): rate Hz,
#: depth, centre delay ms, mix.
DOUBLING_RATE_HZ = (0.3, 2.0)
DOUBLING_DEPTH = (0.05, 0.3)
DOUBLING_DELAY_MS = (10.0, 35.0)
DOUBLING_MIX = (0.2, 0.5)
#: Reverb (pedalboard.Reverb, Freeverb): room size, damping, wet level (dry stays 1).
REVERB_ROOM_SIZE = (0.2, 0.9)
REVERB_DAMPING = (0.2, 0.7)
REVERB_WET = (0.1, 0.4)
#: Highest frequency an EQ band may take, as a share of the Nyquist frequency.
MAX_EQ_SHARE = 0.85


def _uniform(rng: np.random.Generator, bounds, log: bool = False) -> float:
    low, high = bounds
    if log:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def effect_chain(effects, sr: int, rng: np.random.Generator, peak: float) -> list:
    """The pedalboard plugins (and ``("saturation", drive, mix)`` steps) for ``effects``, drawn from ``rng``.

    Draws happen for every effect in :data:`EFFECTS` order whether named or not, so that adding
    one effect to a run does not change the settings the others get from the same seed.
    """
    import pedalboard as pb

    unknown = [e for e in effects if e not in EFFECTS]
    if unknown:
        raise ValueError(f"unknown effect(s) {', '.join(map(repr, unknown))}; choose from {', '.join(EFFECTS)}")
    top = MAX_EQ_SHARE * sr / 2
    peak_db = 20 * np.log10(max(peak, 1e-9))
    pitch = _uniform(rng, PITCH_SEMITONES)  # drawn in EFFECTS order, like every other setting
    highpass = min(_uniform(rng, HIGHPASS_HZ, log=True), top)
    drawn = {
        "pitch": [pb.PitchShift(semitones=pitch)],
        "highpass": [pb.HighpassFilter(cutoff_frequency_hz=highpass) for _ in range(2)],
        "eq": [
            pb.PeakFilter(cutoff_frequency_hz=min(_uniform(rng, EQ_LOW_MID[0], log=True), top),
                          gain_db=_uniform(rng, EQ_LOW_MID[1]), q=1.0),
            pb.PeakFilter(cutoff_frequency_hz=min(_uniform(rng, EQ_PRESENCE[0], log=True), top),
                          gain_db=_uniform(rng, EQ_PRESENCE[1]), q=1.0),
            pb.HighShelfFilter(cutoff_frequency_hz=min(_uniform(rng, EQ_AIR[0], log=True), top),
                               gain_db=_uniform(rng, EQ_AIR[1])),
        ],
        "compressor": [pb.Compressor(threshold_db=peak_db + _uniform(rng, COMPRESSOR_THRESHOLD_DB),
                                     ratio=_uniform(rng, COMPRESSOR_RATIO),
                                     attack_ms=_uniform(rng, COMPRESSOR_ATTACK_MS, log=True),
                                     release_ms=_uniform(rng, COMPRESSOR_RELEASE_MS, log=True))],
        "saturation": [("saturation", _uniform(rng, SATURATION_DRIVE_DB), _uniform(rng, SATURATION_MIX))],
        "doubling": [pb.Chorus(rate_hz=_uniform(rng, DOUBLING_RATE_HZ), depth=_uniform(rng, DOUBLING_DEPTH),
                               centre_delay_ms=_uniform(rng, DOUBLING_DELAY_MS), feedback=0.0,
                               mix=_uniform(rng, DOUBLING_MIX))],
        "reverb": [pb.Reverb(room_size=_uniform(rng, REVERB_ROOM_SIZE), damping=_uniform(rng, REVERB_DAMPING),
                             wet_level=_uniform(rng, REVERB_WET), dry_level=1.0, width=1.0)],
    }
    return [step for name in EFFECTS if name in effects for step in drawn[name]]


def saturate(x: np.ndarray, drive_db: float, mix: float) -> np.ndarray:
    """Soft clipping: ``tanh`` of the signal driven ``drive_db`` above its peak, blended with the dry signal."""
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return x
    gain = 10 ** (drive_db / 20) / peak
    wet = np.tanh(gain * x) / np.tanh(gain * peak) * peak  # the peak keeps its level
    return (mix * wet + (1 - mix) * x).astype(np.float32)


def run_chain(x: np.ndarray, sr: int, chain: list) -> np.ndarray:
    """Apply the steps of :func:`effect_chain` in turn; pedalboard runs consecutive plugins in one call."""
    import pedalboard as pb

    plugins: list = []
    for step in chain + [None]:
        if isinstance(step, tuple) or step is None:
            if plugins:
                x = pb.Pedalboard(plugins)(x[None, :], sr)[0]
                plugins = []
            if step is not None:
                x = saturate(x, *step[1:])
        else:
            plugins.append(step)
    return x


def produce(vocals: np.ndarray, sr: int, rng: np.random.Generator, effects=EFFECTS) -> np.ndarray:
    """Process a mono voice ``(samples,)`` float32 with the named effects; same shape, dtype and RMS.

    Settings are drawn from ``rng`` (see the module's constants). Reverb tails and pitch-shift
    latency are cut or padded to the input's length. Silence stays silent.
    """
    vocals = np.asarray(vocals, dtype=np.float32)
    if vocals.ndim != 1:
        raise ValueError(f"vocals must be mono (samples,), got shape {vocals.shape}")
    peak = float(np.max(np.abs(vocals))) if vocals.size else 0.0
    chain = effect_chain(tuple(effects), sr, rng, peak)  # validates names and draws even for silence
    if peak == 0 or not chain:
        return vocals.copy()
    out = run_chain(vocals, sr, chain)
    out = fit_length(out, len(vocals))
    rms_in, rms_out = np.sqrt(np.mean(vocals ** 2)), np.sqrt(np.mean(out ** 2))
    out = out * (rms_in / rms_out) if rms_out > 0 else out
    return np.nan_to_num(out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The produced-music development set
# --------------------------------------------------------------------------------------------

#: Rate and channels of the dev set's files.
DEV_SR = 44100
#: Vocal-to-accompaniment level range (RMS over the excerpt, dB).
DEV_LEVEL_DB = (-4.0, 6.0)
#: Longest excerpt, seconds (a song's voice is cut to it; the accompaniment excerpt matches the voice).
DEV_MAX_SECONDS = 30.0
#: Peak of the loudest stem sum (the mixture) after scaling: headroom against clipping.
DEV_PEAK = 0.9
#: Fixed vocal chains ("presets"), chosen per song in turn. The reverb is a convolution with a
#: synthetic stereo impulse response (exponentially decaying noise: ``rt60`` seconds, a
#: ``predelay`` and a ``wet`` level), not the training augmentation's Freeverb.
DEV_PRESETS = {
    "pop": dict(highpass=100, low_mid=(300, -3), presence=(3000, 4), air=(10000, 4),
                compressor=(-18, 4, 5, 120), saturation=None, doubling=(0.8, 0.15, 20, 0.3),
                reverb=dict(rt60=1.2, predelay=0.02, wet=0.25)),
    "ballad": dict(highpass=80, low_mid=(250, -2), presence=(2500, 3), air=(12000, 5),
                   compressor=(-20, 3, 10, 200), saturation=None, doubling=None,
                   reverb=dict(rt60=2.2, predelay=0.04, wet=0.35)),
    "rock": dict(highpass=150, low_mid=(400, -4), presence=(4000, 5), air=(9000, 2),
                 compressor=(-24, 6, 2, 80), saturation=(9, 0.6), doubling=(1.5, 0.1, 28, 0.35),
                 reverb=dict(rt60=0.6, predelay=0.01, wet=0.15)),
    "dry": dict(highpass=120, low_mid=(350, -2), presence=(3500, 3), air=(10000, 3),
                compressor=(-15, 3, 15, 150), saturation=(4, 0.4), doubling=None,
                reverb=dict(rt60=0.35, predelay=0.0, wet=0.1)),
}


def impulse_response(rt60: float, predelay: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic stereo reverb tail ``(samples, 2)``: decorrelated noise decaying 60 dB in ``rt60`` s.

    High frequencies decay faster (a one-pole low-pass whose cutoff falls along the tail), as
    in real rooms. Normalised to unit energy per channel.
    """
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal((n, 2)) * np.exp(-6.9 * t / rt60)[:, None]  # 60 dB = e^-6.9
    # darken the tail: mix in progressively more of a smoothed copy
    kernel = np.ones(16) / 16
    smooth = np.stack([np.convolve(noise[:, c], kernel, mode="same") for c in range(2)], axis=1)
    share = (t / rt60)[:, None]
    tail = (1 - share) * noise + share * smooth * 4
    ir = np.concatenate([np.zeros((int(predelay * sr), 2)), tail])
    return (ir / np.sqrt(np.sum(ir ** 2, axis=0))).astype(np.float32)


def produce_preset(vocals: np.ndarray, sr: int, preset: dict, rng: np.random.Generator) -> np.ndarray:
    """Process a mono voice with a fixed :data:`DEV_PRESETS` chain; returns stereo ``(samples, 2)``."""
    import pedalboard as pb
    from scipy.signal import fftconvolve

    peak_db = 20 * np.log10(max(float(np.max(np.abs(vocals))), 1e-9))
    threshold, ratio, attack, release = preset["compressor"]
    plugins = [pb.HighpassFilter(preset["highpass"]),
               pb.PeakFilter(preset["low_mid"][0], preset["low_mid"][1], q=1.0),
               pb.PeakFilter(preset["presence"][0], preset["presence"][1], q=1.0),
               pb.HighShelfFilter(preset["air"][0], preset["air"][1]),
               pb.Compressor(peak_db + threshold, ratio, attack, release)]
    x = pb.Pedalboard(plugins)(vocals[None, :].astype(np.float32), sr)[0]
    if preset["saturation"]:
        x = saturate(x, *preset["saturation"])
    if preset["doubling"]:
        rate, depth, delay, mix = preset["doubling"]
        x = pb.Chorus(rate_hz=rate, depth=depth, centre_delay_ms=delay, feedback=0.0, mix=mix)(x[None, :], sr)[0]
    r = preset["reverb"]
    wet = fftconvolve(x[:, None], impulse_response(r["rt60"], r["predelay"], sr, rng), axes=0)[: len(x)]
    dry_rms = np.sqrt(np.mean(x ** 2))
    wet *= r["wet"] * dry_rms / max(float(np.sqrt(np.mean(wet ** 2))), 1e-12)
    return (x[:, None] + wet).astype(np.float32)


def stable_rng(seed: int, name: str) -> np.random.Generator:
    """An rng for one item, from the seed and the item's name (independent of the order of items)."""
    digest = hashlib.sha1(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def loudest_offset(accompaniment: np.ndarray, length: int, rng: np.random.Generator) -> int:
    """A random start of a ``length``-sample excerpt among the louder half of candidate starts (no intros or fades)."""
    if len(accompaniment) <= length:
        return 0
    starts = np.linspace(0, len(accompaniment) - length, 32).astype(int)
    energy = np.array([np.mean(accompaniment[s:s + length] ** 2) for s in starts])
    louder = starts[energy >= np.median(energy)]
    return int(rng.choice(louder))


def _quantize24(x: np.ndarray) -> np.ndarray:
    """Round to the 24-bit PCM grid, so that sums of stems are exact in the written files."""
    return (np.round(x.astype(np.float64) * 2 ** 23) / 2 ** 23).astype(np.float32)


def make_song(voice: np.ndarray, accompaniment: np.ndarray, preset: dict, level_db: float,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mix a produced voice (mono, DEV_SR) over stereo accompaniment (DEV_SR) at ``level_db``.

    Returns ``{"mixture", "vocals", "accompaniment"}`` ``(samples, 2)`` float32 on the 24-bit grid,
    with mixture = vocals + accompaniment exactly and the mixture's peak at :data:`DEV_PEAK`.
    """
    vocals = produce_preset(voice, DEV_SR, preset, rng)
    gain = 10 ** (level_db / 20) * np.sqrt(np.mean(accompaniment ** 2)) / np.sqrt(np.mean(vocals ** 2))
    vocals = vocals * gain
    scale = DEV_PEAK / float(np.max(np.abs(vocals + accompaniment)))
    vocals, accompaniment = _quantize24(vocals * scale), _quantize24(accompaniment * scale)
    return {"mixture": vocals + accompaniment, "vocals": vocals, "accompaniment": accompaniment}


def make_devset(mir1k_root: Path, instrumental: Path, out: Path, seed: int = 0,
                levels: tuple[float, float] = DEV_LEVEL_DB) -> list[str]:
    """Write the produced-music dev set to ``out/test/<track>/`` atomically; returns the track names.

    One excerpt per MIR-1K test song (singers Ani, davidson, heycat, yifen; clips joined): its
    voice (the right channel, 8192 Hz, upsampled to 44.1 kHz: nothing above 4 kHz) cut to at
    most :data:`DEV_MAX_SECONDS`, produced with the presets in turn, over an excerpt of the same
    length from a track of ``instrumental/test`` (tracks of at least DEV_MAX_SECONDS used in turn,
    in an order shuffled by the seed, from a louder part: :func:`loudest_offset`), at a level drawn uniformly from ``levels`` (dB, default :data:`DEV_LEVEL_DB`). Same seed, same bytes;
    the same seed at other ``levels`` gives the same excerpts and presets, only the levels move.
    """
    from separation import datasets
    from separation.audio import load_audio, resample
    from separation.errors import UserError

    songs = sorted(datasets.find_tracks("mir1k", mir1k_root, "test", unit="track"), key=lambda t: t.name)
    split = instrumental / "test" if (instrumental / "test").is_dir() else instrumental
    import soundfile as sf

    music = sorted(p for p in split.rglob("*") if p.is_file() and p.suffix.lower() in (".ogg", ".opus", ".mp3", ".flac", ".wav"))
    music = [p for p in music if sf.info(str(p)).duration >= DEV_MAX_SECONDS]  # no excerpt runs past a track's end
    if not music:
        raise UserError(f"{split}: no audio files of {DEV_MAX_SECONDS:g} s or more; run scripts/fetch_debian_music.sh "
                        "(it writes data/instrumental/test)")
    order = stable_rng(seed, "music-order").permutation(len(music))
    presets = list(DEV_PRESETS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    names = []
    try:
        for i, song in enumerate(songs):
            rng = stable_rng(seed, song.name)
            stems, sr = song.load()
            voice = resample(stems["vocals"], sr, DEV_SR)[:, 0]
            voice = voice[: int(DEV_MAX_SECONDS * DEV_SR)]
            track = music[order[i % len(music)]]
            acc, _ = load_audio(track, sr=DEV_SR)
            acc = acc if acc.shape[1] == 2 else np.repeat(acc[:, :1], 2, axis=1)
            start = loudest_offset(acc, len(voice), rng)
            acc = fit_length(acc[start:start + len(voice)], len(voice))
            preset = presets[i % len(presets)]
            result = make_song(voice, acc, DEV_PRESETS[preset], _uniform(rng, levels), rng)
            name = f"{song.name}--{preset}--{track.stem}"
            folder = tmp / "test" / name
            folder.mkdir(parents=True)
            for stem, audio in result.items():
                sf.write(folder / f"{stem}.wav", audio, DEV_SR, subtype="PCM_24")
            names.append(name)
            print(f"{name}: {len(voice) / DEV_SR:.1f} s from {track.parent.name}/{track.name} at {start / DEV_SR:.1f} s",
                  file=sys.stderr)
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def get_parser() -> argparse.ArgumentParser:
    from separation.cli import ArgumentParser  # every script's: one-line errors, --verbose

    parser = ArgumentParser(prog="python -m separation.production",
                            description="Production-style vocal effects; `devset` writes the produced-music development set.")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devset", help="write <out>/test/<track>/{mixture,vocals,accompaniment}.wav (44.1 kHz stereo)")
    dev.add_argument("--mir1k", required=True, type=Path, help="MIR-1K folder (its test singers give the voices)")
    dev.add_argument("--instrumental", required=True, type=Path,
                     help="instrumental folder with a test/ split (scripts/fetch_debian_music.sh writes data/instrumental)")
    dev.add_argument("--out", required=True, type=Path, help="output folder (replaced as a whole when complete)")
    dev.add_argument("--seed", type=int, default=0, help="draws of excerpts, levels and reverb tails (default: %(default)s)")
    dev.add_argument("--levels", type=float, nargs=2, default=DEV_LEVEL_DB, metavar=("LO", "HI"),
                     help="vocal-to-accompaniment level range, dB of RMS over the excerpt (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from separation.errors import UserError

    for flag, path in (("--mir1k", args.mir1k), ("--instrumental", args.instrumental)):
        if not path.is_dir():
            raise UserError(f"{flag} {path}: no such folder")
    if args.levels[0] > args.levels[1]:
        raise UserError(f"--levels {args.levels[0]:g} {args.levels[1]:g}: LO must not exceed HI")
    names = make_devset(args.mir1k, args.instrumental, args.out, args.seed, tuple(args.levels))
    print(f"wrote {len(names)} tracks to {args.out / 'test'}")
    return 0


if __name__ == "__main__":
    from separation import cli

    sys.exit(cli.run_cli(main))

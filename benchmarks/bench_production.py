"""Milliseconds per 12-second segment at 8192 Hz of each effect of production.py, and of the chain.

    python benchmarks/bench_production.py [--repeats 20]

The data generator calls ``production.produce`` once per training patch (12 s at 8192 Hz), so
these are the costs per patch it adds. Input: a harmonic voice-like signal (notes and gaps).
The last rows time two alternatives for "pitch": pedalboard.time_stretch (Rubber Band) and a
tape-style resampling with soxr (changes the tempo too; not used by produce()).
"""

from __future__ import annotations

import time

import numpy as np

from benchlib import cpu_summary, load_average, print_table
from separation import cli  # noqa: E402  (benchlib puts the project on sys.path)

from separation import production  # noqa: E402  (benchlib puts the project on sys.path)
from separation.audio import DEFAULT_PARAMS  # noqa: E402


def voice_like(samples: int, sr: int) -> np.ndarray:
    t = np.arange(samples) / sr
    x = sum(np.sin(2 * np.pi * 180 * k * t + k) / k for k in range(1, 12))
    gate = (np.floor(t * 3) % 3 != 0).astype(float)
    return (0.2 * x * gate).astype(np.float32)


def ms_per_call(fn, repeats: int) -> float:
    fn()  # warm-up (plugin construction, FFT plans)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    sr = DEFAULT_PARAMS.sample_rate
    x = voice_like(DEFAULT_PARAMS.patch_frames * DEFAULT_PARAMS.hop_length, sr)  # one training patch
    rows = []
    for effects in [(e,) for e in production.EFFECTS] + [production.EFFECTS,
                                                         tuple(e for e in production.EFFECTS if e != "pitch")]:
        rng = np.random.default_rng(0)  # one stream: each call draws new settings
        ms = ms_per_call(lambda e=effects, r=rng: production.produce(x, sr, r, e), args.repeats)
        name = effects[0] if len(effects) == 1 else ("all" if "pitch" in effects else "all but pitch")
        rows.append([name, ms])
    import pedalboard as pb
    import soxr

    rows.append(["pitch as time_stretch (alternative)",
                 ms_per_call(lambda: pb.time_stretch(x[None], sr, 1.0, pitch_shift_in_semitones=2.0,
                                                     high_quality=False), max(1, args.repeats // 4))])
    rows.append(["pitch as soxr resampling (alternative)",
                 ms_per_call(lambda: soxr.resample(x, sr, int(sr * 2 ** (2 / 12))), args.repeats)])
    print_table("production.py: ms per 12 s segment at 8192 Hz",
                f"{cpu_summary()}; load {load_average():.1f}; mean of {args.repeats} calls after one warm-up",
                ["effect", "ms per segment"], rows, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

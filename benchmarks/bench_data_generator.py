"""How fast the data generator makes patches, beside how fast the full U-Net consumes them in training.

    .venv/bin/python benchmarks/bench_data_generator.py [--cache DIR] [--batch-size 16] [--batches 50] [--model-steps 3]
        [--effect-batches 5]

Without ``--cache`` it prepares a temporary cache of synthetic stems (sines and noise). The
generator (``data_generator.PatchSampler``, what ``DataGenerator`` serves Keras) is timed in
one process (no workers) with the page cache warm; the model is ``unet_model.build_unet()``
compiled with Adam and an L1 loss, timed over a few ``train_on_batch`` steps after one warm-up
step. Prints one table; the generator should make patches at least :data:`GOAL` (5) times faster
than training consumes them (issue 18's goal), so that one data-loading thread keeps the model
busy. The waveform-mode rows (``vocal_level``, ``effects``) need a format-2 cache; with
production.py present, one row per effect of ``production.EFFECTS`` and one with all of them
(over ``--effect-batches`` batches).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_summary, load_average, print_table

import numpy as np  # noqa: E402

from separation import audio  # noqa: E402
from separation import cli, errors
from separation.augment import Augmentation, production_effects  # noqa: E402
from separation.cache import Cache, prepare  # noqa: E402
import data_generator as dg  # noqa: E402

#: How many times faster than training consumes them the generator must make patches.
GOAL = 5


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="a prepared cache (default: a temporary synthetic one)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=50, help="generator batches timed per mode")
    parser.add_argument("--model-steps", type=int, default=3, help="train_on_batch steps timed (0: skip the model)")
    parser.add_argument("--effect-batches", type=cli.bounded(int, 1), default=5,
                        help="generator batches timed per effect row")
    return parser


def synthetic_cache(folder: Path, tracks: int = 8, seconds: float = 30.0) -> Path:
    """A stems dataset of sines over noise at 8192 Hz, prepared into ``folder/cache``."""
    rng = np.random.default_rng(0)
    sr = audio.DEFAULT_PARAMS.sample_rate
    t = np.arange(int(seconds * sr)) / sr
    for i in range(tracks):
        song = folder / "stems" / "train" / f"song{i}"
        song.mkdir(parents=True)
        vocals = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)[:, None]
        accompaniment = 0.05 * rng.standard_normal((len(t), 1))
        audio.save_audio(song / "vocals.wav", vocals, sr)
        audio.save_audio(song / "accompaniment.wav", accompaniment, sr)
        audio.save_audio(song / "mixture.wav", vocals + accompaniment, sr)
    prepare("stems", folder / "stems", folder / "cache", progress=False)
    return folder / "cache"


def waveform_modes(effect_batches: int) -> list[tuple[str, dict, int | None]]:
    """The rows of the waveform mode: level only, then each production effect and all of them."""
    mixing = dict(instrumental_share=0.1, vocal_level=(-4.0, 6.0))
    rows = [("generator, training + instrumental share 0.1, vocal level -4..6 dB (waveforms)",
             dict(augmentation=Augmentation(**mixing)), None)]
    try:
        effects = production_effects()
    except errors.UserError:
        return rows  # no production.py in this checkout
    rows += [(f"  ... + effect {name}", dict(augmentation=Augmentation(effects=(name,), **mixing)), effect_batches)
             for name in effects]
    rows.append((f"  ... + all effects ({', '.join(effects)})", dict(augmentation=Augmentation(effects=effects, **mixing)),
                 effect_batches))
    return rows


def time_generator(gen, batches: int) -> float:
    """Patches per second over ``batches`` batches (after one pass to warm the page cache)."""
    n = min(batches, len(gen))
    for i in range(n):
        gen[i]
    gen.on_epoch_end()
    start = time.perf_counter()
    for i in range(n):
        gen[i]
    return n * gen.batch_size / (time.perf_counter() - start)


def time_model(batch_size: int, steps: int, params) -> tuple[float | None, str]:
    """Patches per second of train_on_batch on the full U-Net, or None with the reason."""
    try:
        import keras
        from unet_model import build_unet
    except ImportError as err:
        return None, f"unet_model not available ({err})"
    model = build_unet(input_shape=(params.n_bins, params.patch_frames, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, params.n_bins, params.patch_frames, 1), dtype=np.float32)
    y = 0.5 * x
    model.train_on_batch(x, y)  # warm-up: tracing and graph building
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start), f"{model.count_params():,} parameters"


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(args.cache or synthetic_cache(Path(tmp)))
        hours = sum(t["seconds"] for t in cache.tracks if "seconds" in t) / 3600
        what = f"{args.cache or 'synthetic cache'} ({len(cache)} tracks, {hours:.2f} h)"
        rows = []
        for label, kwargs, batches in (
            ("generator, training", {}, None),
            ("generator, training + remix, gain, input dropout",
             dict(augmentation=Augmentation(remix=True, gain=True, input_dropout=0.1)), None),
            ("generator, training + remix, gain, pitch 2, tempo 0.1",
             dict(augmentation=Augmentation(remix=True, gain=True, pitch=2.0, tempo=0.1)), None),
            ("generator, validation", dict(mode="validation"), None),
            *(waveform_modes(args.effect_batches) if cache.format >= 2 else []),
        ):
            gen = dg.PatchSampler(cache, batch_size=args.batch_size, **kwargs)
            rows.append((label, time_generator(gen, batches or args.batches)))
        consumed, note = (None, "skipped") if args.model_steps == 0 else time_model(
            args.batch_size, args.model_steps, cache.params)
        rows.append((f"U-Net train_on_batch ({note})", consumed))

    table = []
    for label, rate in rows:
        if rate is None:
            table.append([label, "n/a", "", ""])
            continue
        table.append([label, f"{rate:,.1f}", f"{1000 * args.batch_size / rate:.1f}",
                      f"{rate / consumed:,.0f}x" if consumed else "n/a"])
    verdict = ""
    if consumed:
        slowest = min(rate for _, rate in rows[:-1])
        verdict = (f"; slowest generator mode {slowest / consumed:,.0f}x training consumption (needs >= {GOAL}x): "
                   f"{'OK' if slowest >= GOAL * consumed else 'TOO SLOW'}")
    print_table("Data generator vs training consumption",
                f"cache: {what}; batch size {args.batch_size}; one process, no workers; CPU: {cpu_summary()}; "
                f"load average {load_start:.1f} at the start, {load_average():.1f} at the end{verdict}",
                ["what", "patches/s", "ms/batch", "x training"], table)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

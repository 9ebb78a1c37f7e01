"""What the ways of using a short track (``train.py --short-tracks``) buy: the share of non-silent frames in training batches.

    .venv/bin/python benchmarks/bench_short_tracks.py [--cache DIR] [--root ../shared/data/musdb18-7] [--batches 20]
        [--batch-size 16]

MUSDB18's 7-second previews are shorter than a patch, so today each patch of them is half
zero padding. This script draws ``--batches`` training batches (``data_generator.PatchSampler``,
seed 0) from the previews' ``train`` split for each way (pad, place, fill) in three modes (no
augmentation; ``--remix``; mixing from waveforms, ``--vocal-level -4 6``) and prints the share of
frames that hold music (mixture) and voice (target). A frame counts when its power (the sum over
bins of its squared magnitude) is within :data:`FLOOR_DB` dB of the loudest mixture frame of its
patch. Without ``--cache`` the ``train`` split of ``--root`` is prepared into a temporary folder
(about a minute); a given cache is read for its ``train`` tracks only (never train on ``test``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, load_average, print_table
from separation import cli, errors
from separation.augment import Augmentation
from separation.cache import Cache, prepare
import data_generator as dg

#: A frame quieter than this, relative to its patch's loudest mixture frame, counts as silent.
FLOOR_DB = -40.0
#: The modes measured: a name and the augmentation settings besides ``short_tracks``.
MODES = (("no augmentation", {}), ("--remix", {"remix": True}), ("--vocal-level -4 6", {"vocal_level": (-4.0, 6.0)}))


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="a cache holding the previews' train split (default: prepared "
                        "from --root into a temporary folder)")
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "musdb18-7",
                        help="the previews as a stems dataset (default ../shared/data/musdb18-7)")
    parser.add_argument("--batches", type=cli.bounded(int, 1), default=20, help="batches drawn per row (default 20)")
    parser.add_argument("--batch-size", type=cli.bounded(int, 1), default=16)
    return parser


def non_silent(patches: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Which frames of ``patches`` (B, n_bins, frames, 1) are within FLOOR_DB of the loudest frame of ``reference``."""
    power = np.square(patches[..., 0], dtype=np.float64).sum(axis=1)  # (B, frames)
    loudest = np.square(reference[..., 0], dtype=np.float64).sum(axis=1).max(axis=1, keepdims=True)
    return power > loudest * 10 ** (FLOOR_DB / 10)


def measure(cache: Cache, tracks: list[str], settings: dict, batches: int, batch_size: int) -> list:
    """``[music %, voice %, ms per batch]`` over ``batches`` training batches drawn with ``settings``."""
    sampler = dg.PatchSampler(cache, tracks, batch_size=batch_size, steps_per_epoch=batches,
                              augmentation=Augmentation(**settings))
    sampler[0]  # untimed: opens the arrays, so that no row pays for the first reads of the files
    music = voice = 0.0
    start = time.perf_counter()
    for index in range(batches):
        mixture, vocals = sampler[index]
        music += non_silent(mixture, mixture).mean() / batches
        voice += non_silent(vocals, mixture).mean() / batches
    return [100 * music, 100 * voice, 1000 * (time.perf_counter() - start) / batches]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.cache
        if path is None:
            path = Path(tmp) / "cache"
            prepare("stems", args.root, path, split="train", progress=False)
        cache = Cache(path)
        tracks = cache.names(split="train")
        if not tracks:
            raise errors.UserError(f"{path}: no tracks of split train; prepare the previews' train split into it")
        seconds = np.median([cache.track(n)["seconds"] for n in tracks])
        rows = []
        for mode, settings in MODES:
            for way in ("pad", "place", "fill"):
                if way == "fill" and "vocal_level" not in settings:
                    continue  # fill needs waveforms
                rows.append([f"{mode}, --short-tracks {way}",
                             *measure(cache, tracks, dict(settings, short_tracks=way), args.batches, args.batch_size)])
    patch = cache.params.patch_frames * cache.params.hop_length / cache.params.sample_rate
    print_table("Short tracks in training batches", f"{len(tracks)} train tracks of {cache.path} (median {seconds:.1f} s; "
                f"a patch is {patch:.0f} s), {args.batches} batches of {args.batch_size}, seed 0; a frame counts within "
                f"{-FLOOR_DB:g} dB of its patch's loudest mixture frame; load {load_average():.1f}",
                ["batches drawn with", "music (% of frames)", "voice (% of frames)", "ms per batch"], rows, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_cli(main))

"""What bfloat16 inference costs in separation quality: the same model's stems in float32 and bfloat16.

    .venv/bin/python benchmarks/bench_precision.py --model runs/NAME/best.keras [--mir1k DATA] [--tracks 10]

Separates ``--tracks`` songs with ``inference.Separator`` twice, the mask computed by
``unet_fast.inference_mask_model`` in float32 (the default) and in bfloat16
(``inference.py --precision bfloat16``), and scores both with
``separation.metrics.score_methods`` (BSS Eval v3, mir_eval, at 8192 Hz mono as ``evaluate.py``
does by default). Songs: MIR-1K's
``--split`` songs with ``--mir1k`` (at 8192 Hz, spread over the singers), else synthetic
30 s songs at 44.1 kHz. Prints one table: mean scores of each precision, their difference
(mean and largest over songs), the largest mask difference, and the model's time per song.
A trained ``--model`` is needed for meaningful scores (an untrained one separates nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import load_average, model_or_untrained, print_table, synthetic_song, cpu_summary

import numpy as np  # noqa: E402

from separation.cli import ArgumentParser, run_cli  # noqa: E402

PRECISIONS = ("float32", "bfloat16")
COLUMNS = ("v3_vocals_SDR", "v3_vocals_NSDR", "v3_accompaniment_SDR", "v3_vocals_SIR", "v3_vocals_SAR")


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model (default: an untrained U-Net: speed and mask "
                                        "difference only)")
    parser.add_argument("--mir1k", help="MIR-1K root: songs of its --split (default: synthetic songs)")
    parser.add_argument("--split", default="test", help="MIR-1K split, one the model was not trained on (default test)")
    parser.add_argument("--tracks", type=int, default=10, help="songs (default 10)")
    return parser


def songs(args):
    """``(name, references, sr)`` of the songs to separate; references as in ``datasets.Track.load``."""
    if args.mir1k:
        from separation import datasets

        found = datasets.find_tracks("mir1k", args.mir1k, split=args.split, unit="track")
        for track in found[:: max(1, len(found) // args.tracks)][: args.tracks]:
            stems, sr = track.load()
            yield track.name, stems, sr
        return
    for i in range(args.tracks):
        vocals, accompaniment = synthetic_song(30.0, seed=300 + i)
        yield f"synthetic{i}", {"mixture": vocals + accompaniment, "vocals": vocals, "accompaniment": accompaniment}, 44100


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from separation import audio
    from separation import metrics
    import inference

    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_precision.") as tmp:
        model, params, _ = model_or_untrained(args.model, Path(tmp))
    separators = {p: inference.Separator(model, params, precision=p) for p in PRECISIONS}
    settings = metrics.Settings(families=("v3",))
    scores = {p: [] for p in PRECISIONS}
    model_s = {p: 0.0 for p in PRECISIONS}
    mask_diff, seconds, names = 0.0, 0.0, []
    for name, refs, sr in songs(args):
        names.append(name)
        seconds += len(refs["mixture"]) / sr
        mono = audio.resample(audio.to_mono(refs["mixture"]), sr, params.sample_rate)[:, 0]
        mix_mag = audio.magnitude(mono, params)
        estimates, masks = {}, {}
        for p in PRECISIONS:
            separators[p].predict(np.zeros((1, params.n_bins, params.patch_frames, 1), np.float32))  # traced before timing
            start = time.perf_counter()
            masks[p] = separators[p].mask(mix_mag)
            model_s[p] += time.perf_counter() - start
            vocals = separators[p].apply_mask(refs["mixture"], sr, masks[p])
            estimates[p] = {"vocals": vocals, "accompaniment": refs["mixture"] - vocals}
        mask_diff = max(mask_diff, float(np.abs(masks["bfloat16"] - masks["float32"]).max()))
        result = metrics.score_methods(refs, estimates, sr, settings)
        for p in PRECISIONS:
            scores[p].append([float(result[p][c]) for c in COLUMNS])
    table = {p: np.array(scores[p]) for p in PRECISIONS}
    rows = [[p] + [float(v) for v in np.nanmean(table[p], axis=0)] + [model_s[p] / len(names)] for p in PRECISIONS]
    difference = table["bfloat16"] - table["float32"]
    rows.append(["bfloat16 - float32, mean"] + [float(v) for v in np.nanmean(difference, axis=0)]
                + [model_s["bfloat16"] / len(names) - model_s["float32"] / len(names)])
    rows.append(["bfloat16 - float32, largest over songs"]
                + [float(difference[np.nanargmax(np.abs(d)), i]) if np.isfinite(d).any() else float("nan")
                   for i, d in enumerate(difference.T)] + [""])
    what = f"{len(names)} MIR-1K {args.split} songs (8192 Hz)" if args.mir1k else f"{len(names)} synthetic 30 s songs (44.1 kHz)"
    print_table(
        "bfloat16 vs float32 inference: separation quality",
        f"{what}, {seconds / 60:.1f} min; model: {args.model or 'untrained full-size U-Net'}; BSS Eval v3 dB "
        f"(separation.metrics.score_methods, 8192 Hz mono); largest mask difference {mask_diff:.2e}; CPU: {cpu_summary()}; "
        f"load average {load_start:.1f} at the start, {load_average():.1f} at the end",
        ["precision"] + [c.replace("v3_", "") for c in COLUMNS] + ["model s/song"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

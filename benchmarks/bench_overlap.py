"""Overlap of the model's patches: its work, how much the mask depends on where patches fall, and the SDR.

    .venv/bin/python benchmarks/bench_overlap.py [--model runs/NAME/best.keras] [--mir1k DATA] [--tracks 4]

For each overlap (0, 0.25, 0.5, 0.75) ``inference.Separator.mask`` masks ``--tracks`` songs
twice, the second time with the patch grid moved by a third of a patch: the mean difference
of the masks where both cover a frame says how much patch boundaries matter (any model).
With a trained ``--model`` the table adds the SDR of the separated stems. Songs: MIR-1K's
``huang-test`` songs with ``--mir1k`` (8192 Hz), else synthetic 60 s songs at 44.1 kHz.
Prints one table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import load_average, model_or_untrained, print_table, sdr, synthetic_song

import numpy as np  # noqa: E402

from separation import audio  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model (default: an untrained U-Net, no SDR)")
    parser.add_argument("--mir1k", help="MIR-1K root: its huang-test songs instead of synthetic ones")
    parser.add_argument("--tracks", type=int, default=4, help="songs (default 4)")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import inference

    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_overlap.") as tmp:
        model, params, _ = model_or_untrained(args.model, Path(tmp))
    trained = bool(args.model)
    if args.mir1k:
        from separation import datasets

        found = datasets.find_tracks("mir1k", args.mir1k, split="huang-test", unit="track")
        tracks, what = [], f"{args.tracks} MIR-1K huang-test songs (8192 Hz)"
        for track in found[:: max(1, len(found) // args.tracks)][: args.tracks]:
            stems, sr = track.load()
            tracks.append((stems["vocals"], stems["accompaniment"], sr))
    else:
        what = f"{args.tracks} synthetic 60 s songs (44.1 kHz)"
        tracks = [synthetic_song(60.0, 44100, seed=200 + s) + (44100,) for s in range(args.tracks)]
    predictor = inference.Separator(model, params).predict  # built once, shared by every overlap
    shift = params.patch_frames // 3
    rows = []
    for overlap in (0.0, 0.25, 0.5, 0.75):
        separator = inference.Separator(predictor, params, overlap=overlap)
        shift_diffs, sdrs, patches, seconds = [], [], 0, 0.0
        for vocals, accompaniment, sr in tracks:
            mixture = vocals + accompaniment
            seconds += len(mixture) / sr
            mix_mag = audio.magnitude(audio.resample(audio.to_mono(mixture), sr, params.sample_rate)[:, 0], params)
            mask = separator.mask(mix_mag)
            # The same song with the patch grid moved by a third of a patch: the frames both
            # cover would get the same mask if patch boundaries did not matter.
            shifted = separator.mask(mix_mag[:, shift:])
            shift_diffs.append(np.abs(mask[:, shift:] - shifted).mean())
            patches += inference.n_segments(mix_mag.shape[1], params.patch_frames, overlap)
            if trained:
                est = separator.apply_mask(mixture, sr, mask)
                sdrs.append([sdr(vocals, est), sdr(accompaniment, mixture - est)])
        rows.append([f"{overlap:g}", patches, f"{np.mean(shift_diffs):.5f}"]
                    + ([float(v) for v in np.mean(sdrs, axis=0)] if trained else []))
    print_table(f"Overlap, {'trained' if trained else 'untrained'} model",
                f"{what}, {seconds / 60:.1f} min; mask change = mean |mask difference| when the patch grid moves by "
                f"{shift} frames; SDR in dB over each whole song; load average {load_start:.1f} at the start, "
                f"{load_average():.1f} at the end",
                ["overlap", "patches", "mask_change"] + (["SDR_voc", "SDR_acc"] if trained else []), rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

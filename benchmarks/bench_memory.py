"""Peak memory of separating a long song: the command line, and separate() with and without chunking.

    .venv/bin/python benchmarks/bench_memory.py [--minutes 60] [--model runs/NAME/best.keras]
    .venv/bin/python benchmarks/bench_memory.py --lengths 0.17,5,15,30,60 [--sr 44100] [--channels 2]

Writes a ``--minutes`` 44.1 kHz stereo song (a synthetic minute repeated), then runs each in a
fresh child process and reports wall seconds and peak resident memory (``ru_maxrss``): the
command line (``python inference.py SONG``), and ``inference.Separator.separate`` with the chunked
full-band STFT (``audio.CHUNK_FRAMES`` frames) and in one piece. Prints one table. A few
minutes for the default hour.

``--lengths`` instead measures the command line's peak for songs of those lengths in minutes
(noise, at ``--sr`` and ``--channels``) beside ``stems.memory_needed``'s estimate, the one
``--max-memory`` is checked against, whose factors were fitted to such rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import load_average, model_or_untrained, print_table, run_measured, synthetic_song

import numpy as np  # noqa: E402

from separation import audio  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the song (default 60)")
    parser.add_argument("--model", help="a .keras model (default: an untrained full-size U-Net)")
    parser.add_argument("--lengths", type=lambda text: [float(x) for x in text.split(",")], default=None,
                        help="comma-separated minutes: the command line's peak per length, and the estimate")
    parser.add_argument("--sr", type=int, default=44100, help="with --lengths: sample rate (default 44100)")
    parser.add_argument("--channels", type=int, default=2, help="with --lengths: channels (default 2)")
    return parser


def estimate_rows(args, work: Path, model_path) -> list[list]:
    """``--lengths``: per length, the command line's measured peak and ``memory_needed``'s estimate."""
    import soundfile as sf

    import inference
    from separation import stems

    separator = inference.Separator(model_path)
    rows = []
    block = (0.1 * np.random.default_rng(0).standard_normal((10 * args.sr, args.channels))).astype(np.float32)
    for minutes in args.lengths:
        frames = int(minutes * 60 * args.sr)
        song = work / f"{minutes:g}min.wav"
        with sf.SoundFile(song, "w", args.sr, args.channels, subtype="PCM_16") as f:
            for start in range(0, frames, len(block)):
                f.write(block[: frames - start])
        result = run_measured([sys.executable, "inference.py", str(song), "-o", str(work / "out"), "--model",
                               str(model_path), "--overwrite", "--max-memory", "1000"])
        estimate = stems.memory_needed(frames, args.channels, args.sr, separator) / 2**20
        rows.append([f"{minutes:g} min", result["wall"], result["rss_mb"], estimate, estimate / result["rss_mb"]])
        song.unlink()
    return rows


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as tmp:
        work = Path(tmp)
        _, _, model_path = model_or_untrained(args.model, work)
        if args.lengths:
            rows = estimate_rows(args, work, model_path)
            print_table(f"Peak memory of python inference.py SONG, {args.sr} Hz, {args.channels} ch, and the estimate",
                        f"each row a fresh process; load average {load_start:.1f} at the start, {load_average():.1f} "
                        "at the end", ["song", "wall_s", "peak_rss_mb", "estimate_mb", "estimate/peak"], rows, digits=2)
            return 0
        sr = 44100
        vocals, accompaniment = synthetic_song(60.0, sr)
        minute = vocals + accompaniment
        song = work / "long.wav"
        repeats = int(np.ceil(args.minutes))
        audio.save_audio(song, np.tile(minute, (repeats, 1))[: int(args.minutes * 60 * sr)], sr)
        size_mb = song.stat().st_size / 2**20
        rows = []
        result = run_measured([sys.executable, "inference.py", str(song), "-o", str(work / "out"), "--model",
                               str(model_path), "--overwrite"])
        rows.append(["python inference.py SONG", result["wall"], result["rss_mb"]])
        code = ("import sys, inference, unet_model; from separation import audio; m, p = unet_model.load_model(sys.argv[1]); "
                "x, sr = audio.load_audio(sys.argv[2]); "
                "s = inference.Separator(m, p, chunk_frames=int(sys.argv[3])).separate(x, sr)")
        for chunk in (audio.CHUNK_FRAMES, 10**9):
            result = run_measured([sys.executable, "-c", code, str(model_path), str(song), str(chunk)])
            rows.append([f"Separator.separate(), chunk_frames={chunk if chunk < 10**9 else 'whole song'}", result["wall"],
                         result["rss_mb"]])
    float_mb = args.minutes * 60 * sr * 2 * 4 / 2**20
    print_table(f"Memory for a {args.minutes:g}-minute 44.1 kHz stereo song",
                f"{size_mb:.0f} MB 16-bit file, {float_mb:.0f} MB as float32; each row a fresh process; load average "
                f"{load_start:.1f} at the start, {load_average():.1f} at the end",
                ["what", "wall_s", "peak_rss_mb"], rows, digits=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

"""Peak memory of separating a long song: the command line, and separate() with and without chunking.

    .venv/bin/python benchmarks/bench_memory.py [--minutes 60] [--model runs/NAME/best.keras]

Writes a ``--minutes`` 44.1 kHz stereo song (a synthetic minute repeated), then runs each in a
fresh child process and reports wall seconds and peak resident memory (``ru_maxrss``): the
command line (``python inference.py SONG``), and ``inference.Separator.separate`` with the chunked
full-band STFT (``inference.CHUNK_FRAMES`` frames) and in one piece. Prints one table. A few
minutes for the default hour.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchlib import load_average, model_or_untrained, print_table, run_measured, synthetic_song

import numpy as np  # noqa: E402

import audio  # noqa: E402
from cli import ArgumentParser, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the song (default 60)")
    parser.add_argument("--model", help="a .keras model (default: an untrained full-size U-Net)")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import inference

    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as tmp:
        work = Path(tmp)
        _, _, model_path = model_or_untrained(args.model, work)
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
        code = ("import sys, audio, inference, unet_model; m, p = unet_model.load_model(sys.argv[1]); "
                "x, sr = audio.load_audio(sys.argv[2]); "
                "s = inference.Separator(m, p, chunk_frames=int(sys.argv[3])).separate(x, sr)")
        for chunk in (inference.CHUNK_FRAMES, 10**9):
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

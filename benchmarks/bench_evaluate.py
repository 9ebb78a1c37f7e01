"""Benchmark of evaluate.py: time to score a 3-minute track, per metric family, serial and in parallel.

    .venv/bin/python benchmarks/bench_evaluate.py [--seconds 180] [--tracks 2] [--native]

Writes ``--tracks`` synthetic 44.1 kHz stereo songs (``synth.synthesize_track``) as a stems
folder, with estimates (vocals + 10% of the accompaniment and the converse) in inference.py's
layout, then times ``evaluate.run_jobs`` over them (reading, resampling to 8192 Hz mono and
scoring, what ``python evaluate.py`` does per track) for BSS Eval v3 (mir_eval) and v4 (museval)
apart, with one process and with ``--jobs 2`` (worker start-up included). ``--native`` adds rows at 44.1 kHz, v4 stereo
(the SiSEC setting), which is much slower. Prints a table. The machine's CPU may be shared:
compare rows within a run rather than across runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_summary, load_average, print_table

from separation import audio  # noqa: E402
from separation import cli
from separation import datasets  # noqa: E402
import evaluate  # noqa: E402
from separation import metrics  # noqa: E402
from separation import synth  # noqa: E402


def write_songs(folder: Path, n: int, seconds: float, sr: int = 44100) -> tuple[Path, Path]:
    """``n`` synthetic songs as ``folder/refs/<song>/...`` and estimates as ``folder/est/<song>/...``."""
    for i in range(n):
        vocals, acc, _ = synth.synthesize_track(i, seconds, sr)
        song = f"song{i:03d}"
        (folder / "refs" / song).mkdir(parents=True)
        (folder / "est" / song).mkdir(parents=True)
        for name, x in (("vocals", vocals), ("accompaniment", acc), ("mixture", vocals + acc)):
            audio.save_audio(folder / "refs" / song / f"{name}.wav", x, sr)
        audio.save_audio(folder / "est" / song / "vocals.wav", vocals + 0.1 * acc, sr)
        audio.save_audio(folder / "est" / song / "accompaniment.wav", acc + 0.1 * vocals, sr)
    return folder / "refs", folder / "est"


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each song (default: %(default)s)")
    parser.add_argument("--tracks", type=int, default=2, help="songs scored per row (default: %(default)s)")
    parser.add_argument("--native", action="store_true", help="also time 44.1 kHz stereo (v4) scoring")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    load_start = load_average()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        refs, est = write_songs(Path(tmp), args.tracks, args.seconds)
        print(f"wrote {args.tracks} songs of {args.seconds:g} s in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        tracks = datasets.find_tracks("stems", refs)
        configs = [("v3 mir_eval", metrics.Settings(families=("v3",))),
                   ("v4 museval", metrics.Settings(families=("v4",))),
                   ("v3 + v4", metrics.Settings())]
        if args.native:
            configs.append(("v4 museval", metrics.Settings(sr=None, stereo=True, families=("v4",))))
        # imports and first calls (mir_eval, museval, soxr) out of the first row; the --jobs 2
        # rows do include starting the worker processes, as a command-line run does
        evaluate.run_jobs([evaluate.Job(tracks[0], est, "est", (), metrics.Settings())], progress=False)
        rows = []
        for label, settings in configs:
            rate = "44100 Hz stereo" if settings.sr is None else f"{settings.sr} Hz mono"
            for workers in (1, 2):
                jobs = [evaluate.Job(t, est, "est", (), settings) for t in tracks]
                start = time.perf_counter()
                evaluate.run_jobs(jobs, workers=workers, progress=False)
                wall = time.perf_counter() - start
                rows.append([label, rate, workers, len(tracks), wall, wall / len(tracks)])
                print(f"{label}, {rate}, jobs {workers}: {wall:.1f} s", file=sys.stderr)
    print_table(f"Evaluation time of {args.seconds:g} s songs",
                f"{args.tracks} synthetic 44.1 kHz stereo songs per row, scored by evaluate.run_jobs (read, resample, "
                f"score); --jobs 2 includes starting the worker processes; CPU: {cpu_summary()}; load average "
                f"{load_start:.1f} at the start, {load_average():.1f} at the end",
                ["metrics", "evaluated at", "jobs", "tracks", "wall s", "s/track"], rows, digits=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

"""The whole coursework in one command: data, training, separation, evaluation.

Runs, in this process, the same five script calls a user can run one by one (each is printed
before it runs, so the README and the terminal show the same commands):

1. ``data_generator.py synthesize``: the built-in dataset (44.1 kHz stereo stems);
2. ``data_generator.py prepare``: its training split as a cache of 512-bin magnitudes;
3. ``train.py``: a short training run of the full-size U-Net;
4. ``inference.py``: separation of the test songs;
5. ``evaluate.py --baselines --report``: BSS Eval of the U-Net beside the mixture, oracle masks,
   HPSS and NMF; the two summary tables on the terminal, the rest in ``results/<name>/``
   (CSVs, museval JSON, box plots and ``report.html`` to look at and listen to).

Every step resumes or skips what is already done, so running the command again is cheap.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from separation.cli import ArgumentParser, run_cli
from separation.errors import UserError


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("."),
                        help="folder holding data/, cache/, runs/, separated/ and results/ (default: here)")
    parser.add_argument("--name", default="builtin", help="name of this run's folders (default: builtin)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training run (default 0)")
    parser.add_argument("--train-songs", type=int, default=24, help="built-in training songs (default 24)")
    parser.add_argument("--test-songs", type=int, default=6, help="built-in test songs (default 6)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each built-in song (default 30)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--steps-per-epoch", type=int, default=40, help="batches per epoch (default 40)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16, as the Keras coursework)")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam learning rate (default 1e-3: a short run needs a faster start than 1e-4)")
    parser.add_argument("--filters", default=None,
                        help="encoder filters, comma-separated (default: the paper's 16,...,512)")
    parser.add_argument("--jobs", type=int, default=2, help="evaluation processes (default 2)")
    return parser


def step(title: str, script: str, main, argv: list[str]) -> None:
    """Print the equivalent shell command, run ``main(argv)`` and fail on a non-zero status."""
    print(f"\n=== {title}\n$ python {script} {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    status = main(argv)
    if status:
        raise UserError(f"step '{title}' failed (exit status {status}); see the message above")
    print(f"({title}: {time.perf_counter() - start:.0f} s)", flush=True)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import data_generator
    import evaluate
    import inference
    import train

    work = args.work
    data = work / "data" / args.name
    cache = work / "cache" / args.name
    run_dir = work / "runs" / args.name
    separated = work / "separated" / args.name
    results = work / "results" / args.name
    started = time.perf_counter()

    step("1/5 built-in dataset", "data_generator.py", data_generator.main, [
        "synthesize", "--out", str(data), "--seed", str(args.seed), "--train", str(args.train_songs),
        "--test", str(args.test_songs), "--seconds", f"{args.seconds:g}"])
    step("2/5 training cache", "data_generator.py", data_generator.main, [
        "prepare", "--dataset", "stems", "--root", str(data), "--split", "train", "--cache", str(cache)])
    train_argv = [
        "--cache", str(cache), "--run-dir", str(run_dir), "--epochs", str(args.epochs),
        "--steps-per-epoch", str(args.steps_per_epoch), "--batch-size", str(args.batch_size),
        "--learning-rate", f"{args.learning_rate:g}", "--seed", str(args.seed), "--verbose", "2"]
    if args.filters:
        train_argv += ["--filters", args.filters]
    step("3/5 training", "train.py", train.main, train_argv)
    step("4/5 separation", "inference.py", inference.main, [
        str(data / "test"), "-o", str(separated), "--model", str(run_dir), "--overwrite"])
    step("5/5 evaluation", "evaluate.py", evaluate.main, [
        "--references", str(data / "test"), "--estimates", str(separated), "--dataset", "stems",
        "--name", "unet", "--baselines", "--jobs", str(args.jobs), "--out", str(results), "--report"])
    print(f"\nDone in {(time.perf_counter() - started) / 60:.1f} min. Results: {results}/ "
          f"(open {results / 'report.html'} in a browser), "
          f"separated songs: {separated}/, model: {run_dir}/best.keras")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

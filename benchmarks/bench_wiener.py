"""Does inference's opt-in Wiener post-filter (``Separator(post_filter="wiener")``, ``--wiener``) help?

    python benchmarks/bench_wiener.py --yardstick results/yardstick/shipped [--devset data/produced-dev]
        [--iterations 1 2] [--model PATH]

Separates the yardstick's songs (the stempeg MUSDB sample, our one real produced song, and the
produced dev set) with ``inference.Separator(post_filter="wiener", wiener_iterations=N)``, as
``inference.py --wiener`` does, in float32 as the yardstick runs it, and scores the stems with
``evaluate.py`` exactly as the yardstick does (BSS Eval v4 vocal SDR at the native rate, stereo,
median over tracks). The row without the filter is the yardstick's own score (its
``stempeg-v4`` and ``dev-v4`` summaries), from the same model and inference.

Time per song: ``Separator.separate`` on a 3-minute 44.1 kHz stereo excerpt (the stempeg sample
looped), with and without the filter: the time users wait, model included.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, cpu_summary, load_average, print_table
from separation import cli  # noqa: E402  (benchlib puts the project on sys.path)


def songs(dataset: str, references: Path):
    """``(name, mixture, sr)`` of each test track."""
    from separation import datasets

    for track in datasets.find_tracks(dataset, references, "test"):
        stems, sr = track.load()
        yield track.name, stems["mixture"], sr


def write_stems(out: Path, name: str, stems: dict[str, np.ndarray], sr: int) -> None:
    import soundfile as sf

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem, audio in stems.items():
        sf.write(folder / f"{stem}.wav", audio, sr, subtype="FLOAT")


def read_median(out: Path) -> float:
    with open(out / "summary.csv", newline="") as f:
        return next(float(r["median"]) for r in csv.DictReader(f) if r["metric"] == "v4_vocals_SDR")


def median_vocal_sdr(references: Path, estimates: Path, extra: list[str], out: Path) -> float:
    """evaluate.py's v4 vocal SDR (median over tracks) at the native rate, stereo: the yardstick's column."""
    cmd = [sys.executable, "evaluate.py", "--references", str(references), "--estimates", str(estimates),
           "--name", "model", "--out", str(out), "--sr", "native", "--stereo", "--metrics", "v4",
           "--no-plots", "--quiet"] + extra
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return read_median(out)


def seconds_per_song(separator, mixture: np.ndarray, sr: int) -> float:
    """Wall time of ``separator.separate`` on 3 minutes of ``mixture`` (looped)."""
    three = np.resize(mixture, (int(180 * sr), mixture.shape[1])).astype(np.float32)
    start = time.perf_counter()
    separator.separate(three, sr)
    return time.perf_counter() - start


def main(argv=None) -> int:
    import inference
    import unet_model

    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yardstick", type=Path, required=True, help="a yardstick.py --work folder")
    parser.add_argument("--devset", type=Path, default=Path("data/produced-dev"))
    parser.add_argument("--model", default=None, help="the yardstick's model (default: the shipped one)")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1], help="EM iterations to try (default: 1)")
    parser.add_argument("--out", type=Path, default=None, help="(default: <yardstick>/wiener)")
    parser.add_argument("--jobs", type=int, default=1, help="evaluate.py --jobs (default: %(default)s)")
    args = parser.parse_args(argv)
    work, devset = args.yardstick.resolve(), args.devset.resolve()
    out = (args.out or work / "wiener").resolve()
    model, params = unet_model.load_model(args.model)
    separators = {"none": inference.Separator(model, params, precision="float32")}
    for n in args.iterations:
        separators[f"wiener, {n} EM"] = inference.Separator(model, params, precision="float32", post_filter="wiener",
                                                            wiener_iterations=n)
    sets = {  # set: (dataset, references, evaluate.py options)
        "stempeg": ("musdb", work / "musdb-sample", ["--dataset", "musdb", "--split", "test"]),
        "dev": ("stems", devset / "test", []),
    }
    scores = {variant: {} for variant in separators}
    first_song = None
    for set_name, (dataset, refs, extra) in sets.items():
        scores["none"][set_name] = read_median(work / f"{set_name}-v4")  # the yardstick's own score
        for name, mixture, sr in songs(dataset, refs):
            first_song = first_song or (mixture, sr)
            for variant, separator in list(separators.items())[1:]:
                write_stems(out / set_name / variant, name, separator.separate(mixture, sr), sr)
        for variant in list(separators)[1:]:
            scores[variant][set_name] = median_vocal_sdr(refs, out / set_name / variant, extra + ["--jobs", str(args.jobs)],
                                                         out / "scores" / set_name / variant.replace(" ", "_").replace(",", ""))
    rows = []
    for variant, separator in separators.items():
        rows.append([variant, scores[variant]["stempeg"], scores[variant]["dev"],
                     scores[variant]["stempeg"] - scores["none"]["stempeg"],
                     scores[variant]["dev"] - scores["none"]["dev"], seconds_per_song(separator, *first_song)])
    print_table("Wiener post-filter (inference.Separator(post_filter=\"wiener\"), norbert)",
                f"{cpu_summary()}; load {load_average():.1f}; model {unet_model.model_file(args.model)}; songs as in "
                f"{work}; v4 vocal SDR median, native rate, stereo (evaluate.py); time: Separator.separate, float32",
                ["variant", "stempeg SDR", "dev SDR", "stempeg change", "dev change", "s per 3-min song"], rows, digits=2)
    shutil.rmtree(out / "stempeg", ignore_errors=True)  # the stems are big; the scores stay
    shutil.rmtree(out / "dev", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

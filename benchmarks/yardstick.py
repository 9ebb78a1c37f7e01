"""The yardstick of issues 18 and 25: one markdown table row of a model's vocal scores on produced and MIR-1K music.

    python benchmarks/yardstick.py --model pretrained/unet_mir1k.keras [--label L] [--skip-mir1k]
        [--parts musdb7,stempeg,dev,dev-low,mir1k] [--musdb7 ../shared/data/musdb18-7]
        [--devset data/produced-dev] [--devset-low data/produced-dev-low] [--mir1k ../shared/data/mir1k]
        [--inference-args "--overlap 0.5"]

Runs the project's command lines (``inference.py``, ``evaluate.py``, ``data_generator.py
export``) as a user would, into ``--work`` (default ``results/yardstick/<label>``), and prints
the row (``--header`` prints the table's header above it). Columns, by part (``--parts``):

* ``musdb7``, the main column: the ``test`` split of MUSDB18's 7-second previews (``--musdb7``,
  45 professionally produced songs, a ``stems`` dataset; never trained on; its README says what
  they are): BSS Eval v4 vocal SDR at 44.1 kHz stereo (``evaluate.py --sr native --stereo``).
  Each track's score is museval's, the median over its 1 s frames; the columns give the
  **median and the mean over tracks** of those, and the silent-voice count "A / S"
  (:func:`voice_summary`): museval scores no frame (NaN) in which a source or an estimate is
  all zeros, which in these songs is a second without voice. A track with some such frames
  enters with the median of its other frames (S counts them); a track with no frame scored
  (A), or one evaluate.py does not score because its voice is silent throughout, is left out of
  the median and the mean.
* ``stempeg``, stempeg's sample (``stempeg.example_stem_path()``, "The Easton Ellises - Falcon
  69", MUSDB's stems, not among the previews): v4 vocal SDR (median over 1 s frames) at 44.1
  kHz stereo, and v3 vocal SDR at 8192 Hz mono (``evaluate.py``'s default rate);
* ``dev``, the synthetic produced-music development set (``python -m separation.production devset
  ...``, a stems folder): v4 vocal SDR, median over tracks, at 44.1 kHz stereo, and v3 vocal
  GNSDR at 8192 Hz;
* ``dev-low``, the same development set with the voices 10 to 0 dB *below* the accompaniment,
  as in produced songs (``python -m separation.production devset ... --levels -10 0 --out
  data/produced-dev-low``: the same excerpts and presets, only the levels differ): v4 vocal SDR,
  median over tracks;
* ``mir1k``, MIR-1K's singer-disjoint test split (195 clips of Ani, davidson, heycat, yifen): v3
  vocal GNSDR at 8192 Hz, the model card's protocol.

Every stage's wall time goes to stderr. Stems already separated in ``--work`` are replaced
(``--overwrite``): the row always describes the model given. The figures are in
``pretrained/README.md`` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from separation import cli  # noqa: E402  (every script's parser: one-line errors, --verbose)

COLUMNS = ("model",
           "MUSDB18-7 test v4 SDR median (45 songs, 44.1k stereo)", "MUSDB18-7 test v4 SDR mean",
           "MUSDB18-7 test tracks with silent voice (all / some frames)",
           "stempeg v4 SDR (44.1k stereo)", "stempeg v3 SDR (8 kHz)",
           "dev v4 SDR median (44.1k stereo)", "dev v3 GNSDR (8 kHz)",
           "dev-low v4 SDR median (44.1k stereo)",
           "MIR-1K test v3 GNSDR (195 clips)")
#: The parts, each giving the columns after "model" in this order (musdb7: 3, stempeg: 2, dev: 2, dev-low: 1, mir1k: 1).
PARTS = ("musdb7", "stempeg", "dev", "dev-low", "mir1k")
#: --musdb7's default: the shared data beside the checkout.
MUSDB7_DEFAULT = ROOT.parent / "shared" / "data" / "musdb18-7"
#: The previews' split scored; the yardstick never reads their train or validation tracks.
MUSDB7_SPLIT = "test"


def run(cmd: list[str], stage: str) -> None:
    """Run a project command line from the project's root; a failure ends the yardstick with its message."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable] + cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise SystemExit(f"error: {stage} failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    print(f"{stage}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def summary_value(out: Path, metric: str, column: str, expected: int) -> float:
    """One number of evaluate.py's summary.csv; warns when fewer tracks than expected were scored."""
    with open(out / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == metric]
    if len(rows) != 1:
        raise SystemExit(f"error: {out / 'summary.csv'} has {len(rows)} rows for {metric}")
    if int(float(rows[0]["n"])) != expected:
        print(f"warning: {out}: {metric} from {rows[0]['n']} tracks, expected {expected}", file=sys.stderr)
    return float(rows[0][column])


def separate(songs: Path, out: Path, args) -> None:
    # float32 as in the card's commands, so that the row does not depend on the CPU's bfloat16
    # support (inference.py's "auto"); --inference-args "--precision auto" overrides it (argparse keeps the last)
    run(["inference.py", str(songs), "-o", str(out), "--model", str(args.model), "--overwrite", "--precision", "float32"]
        + shlex.split(args.inference_args), f"inference {songs}")


def evaluate(references: Path, estimates: Path, out: Path, extra: list[str], args, stage: str) -> None:
    run(["evaluate.py", "--references", str(references), "--estimates", str(estimates), "--name", "model",
         "--out", str(out), "--jobs", str(args.jobs), "--no-plots", "--quiet"] + extra, stage)


@dataclasses.dataclass(frozen=True)
class VoiceSummary:
    """The 45-song column: the ``median`` and ``mean`` over the ``scored`` tracks of their v4
    vocal SDR (each museval's median over the track's frames); ``all_silent`` tracks, with no
    frame scored, left out of both; ``some_silent`` tracks, scored on their other frames."""

    median: float
    mean: float
    scored: int
    all_silent: int
    some_silent: int

    def cells(self) -> list:
        """The row's three cells: median, mean, and "all / some"."""
        return [self.median, self.mean, f"{self.all_silent} / {self.some_silent}"]


def nan_frames(path: Path, source: str = "vocals") -> int:
    """How many frames of museval's per-track JSON (what evaluate.py writes) have no SDR (NaN) for ``source``."""
    targets = json.loads(path.read_text())["targets"]  # Python's json reads museval's NaN
    frames = next((t["frames"] for t in targets if t["name"] == source), [])
    return sum(1 for f in frames if not math.isfinite(float(f["metrics"]["SDR"])))


def voice_summary(out: Path, expected: int, method: str = "model", subset: str = "test") -> VoiceSummary:
    """The 45-song column from evaluate.py's ``--out`` folder: per_track.csv's ``v4_vocals_SDR`` of
    ``method`` (NaN where no frame was scored, or where evaluate.py left a silent track unscored)
    and the NaN frames of museval's JSON (``museval/<method>/<subset>/<track>.json``, absent for
    an unscored track). Warns when the tracks are not the ``expected`` number."""
    with open(out / "per_track.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method]
    if len(rows) != expected:
        print(f"warning: {out}: {len(rows)} tracks, expected {expected}", file=sys.stderr)
    values, all_silent, some_silent = [], 0, 0
    for row in rows:
        value = float(row["v4_vocals_SDR"])
        if not math.isfinite(value):
            all_silent += 1
            continue
        values.append(value)
        frames = out / "museval" / method / subset / f"{row['track']}.json"
        if frames.exists() and nan_frames(frames) > 0:
            some_silent += 1
    if not values:
        raise SystemExit(f"error: {out / 'per_track.csv'}: no track of {method} has a v4 vocal SDR")
    return VoiceSummary(statistics.median(values), statistics.fmean(values), len(values), all_silent, some_silent)


def musdb7_tracks(root: Path) -> tuple[Path, int]:
    """The previews' test split under ``--musdb7`` and its number of tracks; a one-line error without it."""
    tracks = root / MUSDB7_SPLIT
    n = sum(1 for p in tracks.iterdir() if p.is_dir()) if tracks.is_dir() else 0
    if n == 0:
        what = "no such folder" if not root.is_dir() else f"no tracks in its {MUSDB7_SPLIT}/ folder"
        raise SystemExit(f"error: --musdb7 {root}: {what}; give the folder of MUSDB18's 7-second previews "
                         f"(<root>/{MUSDB7_SPLIT}/<track>/{{mixture,vocals}}.m4a), or leave the part out with --parts")
    return tracks, n


def musdb7_scores(work: Path, args) -> list:
    tracks, n = musdb7_tracks(args.musdb7)
    separate(tracks, work / "separated-musdb7", args)
    evaluate(args.musdb7, work / "separated-musdb7", work / "musdb7-v4",
             ["--split", MUSDB7_SPLIT, "--sr", "native", "--stereo", "--metrics", "v4"], args, "evaluate MUSDB18-7 test v4")
    return voice_summary(work / "musdb7-v4", n).cells()


def stempeg_scores(work: Path, args) -> list[float]:
    import stempeg

    sample = work / "musdb-sample" / "test"
    sample.mkdir(parents=True, exist_ok=True)
    link = sample / Path(stempeg.example_stem_path()).name
    if not link.exists():
        try:
            link.symlink_to(stempeg.example_stem_path())
        except OSError:  # no symbolic links here (Windows without the privilege): a copy
            shutil.copyfile(stempeg.example_stem_path(), link)
    separate(sample, work / "separated-stempeg", args)
    common = ["--dataset", "musdb", "--split", "test"]
    evaluate(work / "musdb-sample", work / "separated-stempeg", work / "stempeg-v4",
             common + ["--sr", "native", "--stereo", "--metrics", "v4"], args, "evaluate stempeg v4")
    evaluate(work / "musdb-sample", work / "separated-stempeg", work / "stempeg-v3",
             common + ["--metrics", "v3"], args, "evaluate stempeg v3")
    return [summary_value(work / "stempeg-v4", "v4_vocals_SDR", "median", 1),
            summary_value(work / "stempeg-v3", "v3_vocals_SDR", "mean", 1)]


def devset_tracks(devset: Path, levels: str) -> tuple[Path, int]:
    tracks = devset / "test"
    n = sum(1 for p in tracks.iterdir() if p.is_dir()) if tracks.is_dir() else 0
    if n == 0:
        raise SystemExit(f"error: {tracks}: no tracks; write the dev set first: python -m separation.production devset "
                         f"--mir1k ../shared/data/mir1k --instrumental data/instrumental --out {devset}{levels}")
    return tracks, n


def devset_scores(work: Path, args) -> list[float]:
    tracks, n = devset_tracks(args.devset, "")
    separate(tracks, work / "separated-dev", args)
    evaluate(tracks, work / "separated-dev", work / "dev-v4", ["--sr", "native", "--stereo", "--metrics", "v4"],
             args, "evaluate dev v4")
    evaluate(tracks, work / "separated-dev", work / "dev-v3", ["--metrics", "v3"], args, "evaluate dev v3")
    return [summary_value(work / "dev-v4", "v4_vocals_SDR", "median", n),
            summary_value(work / "dev-v3", "v3_vocals_NSDR", "weighted", n)]


def devset_low_scores(work: Path, args) -> list[float]:
    tracks, n = devset_tracks(args.devset_low, " --levels -10 0")
    separate(tracks, work / "separated-dev-low", args)
    evaluate(tracks, work / "separated-dev-low", work / "dev-low-v4", ["--sr", "native", "--stereo", "--metrics", "v4"],
             args, "evaluate dev-low v4")
    return [summary_value(work / "dev-low-v4", "v4_vocals_SDR", "median", n)]


def mir1k_scores(work: Path, args) -> list[float]:
    clips = work.parent / "mir1k-test"  # shared by every model's yardstick: the export is the same
    run(["data_generator.py", "export", "--dataset", "mir1k", "--root", str(args.mir1k), "--split", "test",
         "--unit", "clip", "--out", str(clips), "--quiet"], "export MIR-1K test clips")
    separate(clips, work / "separated-mir1k", args)
    evaluate(args.mir1k, work / "separated-mir1k", work / "mir1k-v3",
             ["--dataset", "mir1k", "--split", "test", "--metrics", "v3"], args, "evaluate MIR-1K v3")
    return [summary_value(work / "mir1k-v3", "v3_vocals_NSDR", "weighted", 195)]


def cell(value) -> str:
    """A table cell: a score with 2 decimals, empty for NaN (a part not measured); text as it is."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def get_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a .keras model (audio_params.json beside it) or a run folder")
    parser.add_argument("--label", default=None, help="the row's name (default: the model's file or folder name)")
    parser.add_argument("--musdb7", type=Path, default=MUSDB7_DEFAULT,
                        help="MUSDB18's 7-second previews, a stems dataset whose test split is scored "
                             "(default: ../shared/data/musdb18-7 beside the checkout)")
    parser.add_argument("--devset", type=Path, default=Path("data/produced-dev"), help="(default: %(default)s)")
    parser.add_argument("--devset-low", type=Path, default=Path("data/produced-dev-low"), help="(default: %(default)s)")
    parser.add_argument("--mir1k", type=Path, default=Path("../shared/data/mir1k"), help="(default: %(default)s)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated parts to measure, the others' columns left empty (default: %(default)s)")
    parser.add_argument("--skip-mir1k", action="store_true", help="leave the MIR-1K column empty (the slowest part)")
    parser.add_argument("--inference-args", default="", help='extra inference.py options, e.g. "--overlap 0.5"')
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: results/yardstick/<label>)")
    parser.add_argument("--jobs", type=int, default=1, help="evaluate.py --jobs (default: %(default)s)")
    parser.add_argument("--header", action="store_true", help="print the table's header above the row")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    args.model, args.musdb7, args.devset, args.devset_low, args.mir1k = (
        p.resolve() for p in (args.model, args.musdb7, args.devset, args.devset_low, args.mir1k))
    if not args.model.exists():
        raise SystemExit(f"error: --model {args.model}: no such file or folder")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        raise SystemExit(f"error: --parts: unknown {', '.join(sorted(set(parts) - set(PARTS)))}; choose from {', '.join(PARTS)}")
    if args.skip_mir1k:
        parts = [p for p in parts if p != "mir1k"]
    if "musdb7" in parts:
        musdb7_tracks(args.musdb7)  # before any other part's work
    label = args.label or args.model.stem
    work = (args.work or ROOT / "results" / "yardstick" / label).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    measure = {"musdb7": (musdb7_scores, 3), "stempeg": (stempeg_scores, 2), "dev": (devset_scores, 2),
               "dev-low": (devset_low_scores, 1), "mir1k": (mir1k_scores, 1)}
    scores = []
    for part in PARTS:
        function, columns = measure[part]
        scores += function(work, args) if part in parts else [float("nan")] * columns
    print(f"total: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.header:
        print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    print("| " + " | ".join([label] + [cell(s) for s in scores]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

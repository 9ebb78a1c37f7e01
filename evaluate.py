"""Step 4: score separated vocals and accompaniment against references with BSS Eval, baselines alongside.

    python evaluate.py --references PATH --estimates FOLDER [--dataset stems|musdb|musdb-hq|mir1k]
                       [--split SPLIT] [--baselines] [--out results/] [--jobs N]

reads the references through ``datasets.find_tracks`` and the estimates from
``FOLDER/<track>/{vocals,accompaniment}.wav`` (what inference.py writes; other separators' files
with ``--stem-names``, e.g. Demucs' ``vocals=vocals,accompaniment=no_vocals``), and writes
``per_track.csv``, ``summary.csv``, ``settings.json`` (options, library versions, git commit),
museval's per-track JSON (``museval/<method>/test/<track>.json``), one box plot per metric and,
with ``--report``, ``report.html`` to ``--out``. The terminal shows the two summary tables.

The method: each track (:func:`evaluate_track`) is read, its estimates and the baselines'
(``separation.baselines``) are brought to the evaluation rate and channels and scored together
by ``separation.metrics`` with two families of metrics, BSS Eval v3 (mir_eval: SDR, SIR, SAR,
NSDR on the whole track) and v4 (museval: the median over 1-second frames); then the rows are
summarised over tracks: GNSDR, GSIR, GSAR (length-weighted means of v3) and the medians of v4.
``separation.metrics`` defines them, and how silence is handled.

Signals are evaluated by default at 8192 Hz folded to mono (the model's own rate and channel, as
in the coursework). ``--sr native`` evaluates at the references' own rate (44.1 kHz for MUSDB) and
``--stereo`` keeps their channels for v4 (``--sr native --stereo`` is the SiSEC setting); v3
always works on the mono fold.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import sys
import warnings
from pathlib import Path

from separation import audio, cli, metrics
from separation.audio import DEFAULT_PARAMS
from separation.cli import ArgumentParser, bounded
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text

#: Columns of per_track.csv before the metrics.
ROW_FIELDS = ("track", "method", "seconds", "status", "notes")


# --------------------------------------------------------------------------------------------
# One track, in a worker process
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to score one track (picklable)."""

    track: object  # datasets.Track
    estimates: Path | None
    name: str
    baselines: tuple[str, ...]
    settings: metrics.Settings
    stem_names: dict | None = None  # None: metrics.DEFAULT_STEM_NAMES


def evaluate_track(job: Job) -> list[dict]:
    """Load one track, its estimates and baselines, and score them: one row per method.

    Warnings raised on the way (a length mismatch, a resampled estimate) go into the rows'
    notes rather than onto a worker's stderr.
    """
    from separation import baselines

    track = job.track
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        references, sr = track.load()
        settings = job.settings
        refs, rate = metrics.prepare_references(references, sr, settings)
        methods, early = {}, {}
        if job.estimates is not None:
            files, missing = metrics.estimate_files(job.estimates, track.name, job.stem_names)
            if missing:
                where = job.estimates / track.name
                early[job.name] = f"missing estimate: {where / missing[0]}" + (f" (and {', '.join(missing[1:])})" if missing[1:] else "")
            else:
                try:
                    methods[job.name] = metrics.load_estimates(files, references, sr, settings, rate)
                except audio.AudioError as err:
                    methods.pop(job.name, None)
                    early[job.name] = f"unreadable estimate: {err}"
        for name in job.baselines:
            methods[name] = baselines.separate(name, refs["mixture"], rate, refs)
        scores = metrics.score_prepared(refs, methods, rate, settings)
    notes = [str(w.message) for w in caught if not issubclass(w.category, (FutureWarning, DeprecationWarning))]
    rows = []
    order = ([job.name] if job.estimates is not None else []) + list(job.baselines)
    for name in order:
        if name in early:
            row = {"seconds": refs["vocals"].shape[0] / rate, "status": early[name], "notes": "",
                   **{c: math.nan for c in metrics.metric_columns(settings.families)}}
        else:
            row = dict(scores[name])
        row["notes"] = "; ".join(filter(None, [row["notes"], *notes]))
        rows.append({"track": track.name, "method": name, **row})
    return rows


def evaluate_or_report(job: Job) -> list[dict]:
    """:func:`evaluate_track`, or, for a track that cannot be scored (an unreadable or
    inconsistent reference, an estimate with other channels), one row per method whose status
    says why (``failed: ...``) and whose scores are NaN, so that the batch goes on."""
    try:
        return evaluate_track(job)
    except (UserError, ValueError, MemoryError) as err:
        reason = "out of memory" if isinstance(err, MemoryError) else cli.first_line(err)
    methods = ([job.name] if job.estimates is not None else []) + list(job.baselines)
    nan_scores = {c: math.nan for c in metrics.metric_columns(job.settings.families)}
    return [{"track": job.track.name, "method": name, "seconds": math.nan, "status": f"failed: {reason}", "notes": "",
             **nan_scores} for name in methods]


@contextlib.contextmanager
def _single_threaded_workers():
    """Workers inherit one BLAS/OpenMP thread each: --jobs processes, not jobs x cores threads."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ.setdefault(n, "1")
    try:
        yield
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value


def run_jobs(jobs: list[Job], workers: int = 1, progress: bool = True) -> list[dict]:
    """Score every job, ``workers`` processes at a time; rows come back in the jobs' order."""
    from tqdm import tqdm

    results: list[list[dict] | None] = [None] * len(jobs)
    with tqdm(total=len(jobs), unit="track", disable=not progress, mininterval=1.0, file=sys.stderr) as bar:
        if workers <= 1:
            for i, job in enumerate(jobs):
                results[i] = evaluate_or_report(job)
                bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: fresh workers that read the thread limits at start-up and share no state
            with _single_threaded_workers(), ProcessPoolExecutor(
                    max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(evaluate_or_report, job): i for i, job in enumerate(jobs)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
    return [row for rows in results for row in rows]


# --------------------------------------------------------------------------------------------
# Results: CSV, museval's JSON, provenance, box plots
# --------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Write dict rows atomically; floats with 4 decimals (NaN as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def write_museval_json(rows: list[dict], folder: Path, subset: str, settings: metrics.Settings) -> list[Path]:
    """museval's per-track results: ``<folder>/<method>/<subset>/<track>.json`` in its schema
    (``musdb.schema.json``: v4 scores per target and frame), written by museval's own
    ``TrackStore``, so ``museval.MethodStore().add_eval_dir(<folder>/<method>)`` loads a method
    beside SiSEC 2018's results (``add_sisec18()``). Rows without v4 frames are left out."""
    import museval

    paths = []
    for row in rows:
        if not row.get("v4_frames"):
            continue
        store = museval.TrackStore(row["track"], win=settings.window, hop=settings.hop)
        for source, values in row["v4_frames"].items():
            store.add_target(source, values)
        path = folder / row["method"] / subset / f"{row['track']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, store.json + "\n")
        paths.append(path)
    return paths


def provenance() -> dict:
    """What a result needs to be reproduced: library versions and the project's git commit."""
    import platform
    import subprocess
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("mir_eval", "museval", "numpy", "scipy", "soxr", "tensorflow", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit, dirty = None, None
    here = Path(__file__).resolve().parent
    try:
        git = ["git", "-C", str(here)]
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an unpacked release), or no git: the versions still say a lot
    return {"versions": versions, "git_commit": commit, "git_uncommitted_changes": dirty}


def read_csv(path) -> list[dict]:
    """Rows of a per_track.csv or summary.csv, numbers as floats (for notebooks and :func:`metrics.summarize`)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"track", "method", "status", "notes", "metric"}
    return [{k: (v if k in text else float(v)) for k, v in row.items()} for row in rows]


def box_plots(rows: list[dict], folder: Path, families=metrics.FAMILIES) -> list[Path]:
    """One PNG per metric (``<family>_<metric>.png``): a box per method and source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    paths = []
    for family in families:
        for metric in metrics.METRICS[family]:
            fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(methods) * len(metrics.SOURCES), 4.5))
            data, labels, colors = [], [], []
            for method in methods:
                for k, source in enumerate(metrics.SOURCES):
                    values = [float(r[f"{family}_{source}_{metric}"]) for r in rows if r["method"] == method]
                    data.append([v for v in values if math.isfinite(v)])
                    labels.append(f"{method}\n{source}")
                    colors.append(("tab:red", "tab:blue")[k])
            boxes = ax.boxplot(data, patch_artist=True, showfliers=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
            for patch, color in zip(boxes["boxes"], colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.4)
            what = "per track" if family == "v3" else "per-track median over frames"
            ax.set_title(f"{metric} ({'BSS Eval v3, mir_eval' if family == 'v3' else 'BSS Eval v4, museval'}, {what})")
            ax.set_ylabel(f"{metric} (dB)")
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            path = folder / f"{family}_{metric}.png"
            with atomic_output(path, full_disk=True) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
            plt.close(fig)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def get_parser() -> argparse.ArgumentParser:
    from separation.datasets import DATASETS, UNITS

    parser = ArgumentParser(
        description="Score separated vocals/accompaniment against references with BSS Eval v3 (mir_eval: "
                    "SDR, SIR, SAR, NSDR; GNSDR/GSIR/GSAR) and v4 (museval, median over 1 s frames), "
                    "optionally with baselines in the same table. Default: at 8192 Hz, mono.")
    parser.add_argument("--references", required=True, type=Path,
                        help="the dataset's root (or, for stems, one split folder)")
    parser.add_argument("--estimates", type=Path, default=None,
                        help="folder of estimates: <estimates>/<track>/{vocals,accompaniment}.wav "
                             "(inference.py's output); optional with --baselines")
    parser.add_argument("--dataset", choices=DATASETS, default="stems", help="reference layout (default: %(default)s)")
    parser.add_argument("--split", default=None,
                        help="split to score (stems: a folder under --references; musdb: train, validation, test; "
                             "mir1k: test, validation, train, huang-test, huang-train)")
    parser.add_argument("--unit", choices=UNITS, default=None,
                        help="mir1k: score clips (default for mir1k, the Huang et al. protocol) or whole songs")
    parser.add_argument("--name", default=None, help="method name of the estimates in the tables (default: the folder's name)")
    parser.add_argument("--stem-names", type=metrics.parse_stem_names, default=None, metavar="SOURCE=STEM[+STEM],...",
                        help="other separators' estimate files, e.g. vocals=vocals,accompaniment=no_vocals "
                             f"(presets: {', '.join(metrics.STEM_PRESETS)}); a source left out is the mixture minus "
                             "the other estimate, where that is exact (same rate, length, channels)")
    parser.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                        help="also score baselines in the same run: mixture, irm, ibm, hpss, nmf "
                             "(all of them when no name is given)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: %(default)s)")
    parser.add_argument("--sr", default=str(DEFAULT_PARAMS.sample_rate),
                        help="evaluation rate in Hz, or 'native' for the references' own rate (default: %(default)s)")
    parser.add_argument("--stereo", action="store_true",
                        help="keep the references' channels for v4 (default: fold to mono); v3 is always mono")
    parser.add_argument("--metrics", nargs="+", choices=metrics.FAMILIES, default=list(metrics.FAMILIES),
                        help="v3 (mir_eval bss_eval_sources), v4 (museval framewise), or both (default)")
    parser.add_argument("--window", type=bounded(float, 0, low_open=True), default=1.0, help="v4 frame length in seconds (default: %(default)s)")
    parser.add_argument("--hop", type=bounded(float, 0, low_open=True), default=1.0, help="v4 frame hop in seconds (default: %(default)s)")
    parser.add_argument("--jobs", type=bounded(int, 1), default=1, help="tracks scored in parallel processes (default: %(default)s)")
    parser.add_argument("--limit", type=bounded(int, 1), default=None, help="score only the first N tracks (by name), e.g. to time a run")
    parser.add_argument("--no-plots", action="store_true", help="skip the box plots")
    parser.add_argument("--report", action="store_true",
                        help="also write report.html: tables, box plots, a sortable per-track table, and per "
                             "track spectrograms and 10-s excerpts to listen to, worst tracks first")
    parser.add_argument("--report-tracks", type=bounded(int, 0), default=50, metavar="N",
                        help="spectrograms and excerpts for the N worst tracks (default: %(default)s; all tracks "
                             "are in the report's tables)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true",
                        help="also print every metric's n, mean, std and median (always in summary.csv)")
    return parser


def _settings_from(args) -> metrics.Settings:
    if args.sr == "native":
        sr = None
    else:
        try:
            sr = int(args.sr)
        except ValueError:
            sr = 0
        if sr <= 0:
            raise UserError(f"--sr {args.sr}: give a rate in Hz (e.g. 8192) or 'native'")
    return metrics.Settings(sr=sr, stereo=args.stereo, window=args.window, hop=args.hop,
                            families=tuple(f for f in metrics.FAMILIES if f in args.metrics))


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from separation import baselines as baselines_module, datasets

    settings = _settings_from(args)
    chosen = () if args.baselines is None else tuple(args.baselines or baselines_module.BASELINES)
    unknown = [b for b in chosen if b not in baselines_module.BASELINES]
    if unknown:
        raise UserError(f"--baselines {' '.join(unknown)}: unknown; choose from {', '.join(baselines_module.BASELINES)}")
    if args.estimates is None and not chosen:
        raise UserError("nothing to score: pass --estimates FOLDER, --baselines, or both")
    if args.stem_names and args.estimates is None:
        raise UserError("--stem-names names the files of --estimates FOLDER: pass that folder too")
    name = args.name or (args.estimates.resolve().name if args.estimates is not None else None)
    if name in chosen:
        raise UserError(f"the estimates are named {name!r} like a baseline; pass --name to call them something else")

    unit = args.unit or ("clip" if args.dataset == "mir1k" else "track")
    tracks = datasets.find_tracks(args.dataset, args.references, split=args.split, unit=unit)
    if args.limit is not None:
        tracks = tracks[: args.limit]
    notes = metrics.check_estimates(args.estimates, [t.name for t in tracks], args.stem_names) if args.estimates is not None else []
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{args.out}: cannot create the output folder ({err.strerror}); choose another with --out") from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    stem_names = args.stem_names or metrics.DEFAULT_STEM_NAMES
    if args.estimates is not None:
        for source in metrics.SOURCES:
            if source not in stem_names:
                other = next(s for s in metrics.SOURCES if s != source)
                print(f"note: no {source} file named (--stem-names): {source} = mixture - {other} estimate, "
                      "computed exactly at the mixture's rate", file=sys.stderr)
    jobs = [Job(t, args.estimates, name, chosen, settings, stem_names) for t in tracks]
    rows = run_jobs(jobs, workers=min(args.jobs, len(jobs)), progress=not args.quiet)

    columns = metrics.metric_columns(settings.families)
    write_csv(args.out / "per_track.csv", rows, list(ROW_FIELDS) + columns)
    summary = metrics.summarize(rows, columns)
    write_csv(args.out / "summary.csv", summary, ["method", "metric", "n", "mean", "std", "median", "weighted"])
    atomic_write_text(args.out / "settings.json", json.dumps({
        "dataset": args.dataset, "references": str(args.references), "split": args.split, "unit": unit,
        "estimates": str(args.estimates) if args.estimates else None, "methods": list(dict.fromkeys(r["method"] for r in rows)),
        "stem_names": {s: "+".join(stem_names[s]) if s in stem_names else "mixture minus the other" for s in metrics.SOURCES},
        "tracks": len(tracks), **dataclasses.asdict(settings), **provenance()}, indent=2) + "\n")
    written = [args.out / "per_track.csv", args.out / "summary.csv", args.out / "settings.json"]
    if "v4" in settings.families:
        # museval's own layout: MUSDB's train subset holds the validation tracks
        subset = "train" if args.split in ("train", "validation", "huang-train") else "test"
        if write_museval_json(rows, args.out / "museval", subset, settings):
            written.append(args.out / "museval" / "<method>" / subset / "<track>.json")
    plots = [] if args.no_plots else box_plots(rows, args.out, settings.families)
    if plots:
        written.append(args.out / f"{settings.families[0]}_SDR.png ...")
    if args.report:
        from separation.report import write_report

        shown = name if args.estimates is not None else chosen[0]  # the report shows one method: ours, else a baseline
        written.append(write_report(args.out / "report.html", rows, summary, settings, plots, tracks, shown,
                                    args.estimates, stem_names, args.report_tracks))

    report(rows, summary, settings, len(tracks), verbose=args.verbose)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 1 if any(r["status"].startswith(("missing", "unreadable", "failed")) for r in rows) else 0


def report(rows: list[dict], summary: list[dict], settings: metrics.Settings, n_tracks: int, verbose: bool = False) -> None:
    """Print the notes, the unscored tracks, the headline tables and, if ``verbose``, the full summary."""
    for row in rows:
        if row["notes"]:
            print(f"note: {row['track']}: {row['notes']}", file=sys.stderr)
    unscored = [r for r in rows if r["status"] != "ok"]
    for row in unscored:
        print(f"not scored: {row['track']} ({row['method']}): {row['status']}", file=sys.stderr)
    rate = f"{settings.sr} Hz" if settings.sr else "the references' own rate"
    channels = "v4 on the references' channels" if settings.stereo else "mono"
    print(f"\n{n_tracks} tracks at {rate}, {channels}; "
          f"v4 frames {settings.window:g} s, hop {settings.hop:g} s. Summaries use finite values only (n).")
    if verbose:
        header = ["method", "metric", "n", "mean", "std", "median", "len-weighted"]
        print(metrics.format_table(header, [[r["method"], r["metric"], r["n"], r["mean"], r["std"], r["median"],
                                             r["weighted"]] for r in summary]))
    for title, header, table in metrics.headline_tables(summary, settings.families):
        print(f"\n{title}\n{metrics.format_table(header, table)}")
    if unscored:
        print(f"\n{len(unscored)} track/method pair(s) not scored (listed above); the tables leave them out.")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

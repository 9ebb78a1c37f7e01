"""Score separated vocals and accompaniment against references with BSS Eval, baselines alongside.

    python evaluate.py --references PATH --estimates FOLDER [--dataset stems|musdb|musdb-hq|mir1k]
                       [--split SPLIT] [--baselines] [--out results/] [--jobs N]

reads the references through ``datasets.find_tracks`` and the estimates from
``FOLDER/<track>/{vocals,accompaniment}.wav`` (what inference.py writes; other separators' files
with ``--stem-names``, e.g. Demucs' ``vocals=vocals,accompaniment=no_vocals``), and writes
``per_track.csv``, ``summary.csv``, ``settings.json`` (options, library versions, git commit),
museval's per-track JSON (``museval/<method>/test/<track>.json``), one box plot per metric and,
with ``--report``, ``report.html`` to ``--out``. The terminal shows the two summary tables. In a
notebook::

    scores = score_track(references, estimates, sr)   # {"v3_vocals_SDR": ..., ...}
    table = summarize(rows)                            # rows: dicts with "method", "seconds", scores

Two families of metrics, both on vocals and accompaniment scored together (never the vocals
alone, which leaves BSS Eval nothing to call interference and gives SIR = inf):

``v3_*``: BSS Eval v3, ``mir_eval.separation.bss_eval_sources`` (the MIR-1K literature's metric)
    on the whole track: SDR, SIR, SAR per source and NSDR, the SDR gain over the mixture used as
    the estimate of both sources. Summaries give GNSDR, GSIR and GSAR: means over tracks weighted
    by their length, as Huang et al. (2014) report them.
``v4_*``: BSS Eval v4, ``museval.evaluate`` (SiSEC 2018, the MUSDB18 papers): SDR, SIR, SAR and
    ISR on 1-second frames, the median over frames per track; summaries take the median over
    tracks, the number Spleeter, Open-Unmix and Demucs report. v4 fits its distortion filters to
    the whole track, so a frame's ISR, SIR and SAR can fall below its SDR (which does not depend
    on the filters): read v4's SDR, and v3 for SIR and SAR (README, "Honest metrics").

Signals are evaluated by default at 8192 Hz folded to mono (the model's own rate and channel, as
in the coursework): references and estimates are resampled (soxr) and their channels averaged.
``--sr native`` evaluates at the references' own rate (44.1 kHz for MUSDB) and ``--stereo``
keeps their channels for v4 (``--sr native --stereo`` is the SiSEC setting); v3 always works on
the mono fold, the only input ``bss_eval_sources`` defines. Estimates are matched to the source
labels as given (no permutation search: swapped stems must score badly).

Silence, as museval handles it: a frame whose reference (or estimate) is all zeros is NaN and
left out of the medians; a track whose reference vocals or accompaniment are silent
(peak below :data:`SILENCE_PEAK`) is reported and not scored; an all-zero estimate has NaN v3
scores, reported. Summaries use finite values only and give their count ``n``, so no NaN or inf
enters a mean.
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

import numpy as np

from separation import audio, cli
from separation.audio import DEFAULT_PARAMS
from separation.cli import ArgumentParser, UserError, bounded

SOURCES = ("vocals", "accompaniment")
#: Metrics of each family, in table order.
METRICS = {"v3": ("NSDR", "SDR", "SIR", "SAR"), "v4": ("SDR", "SIR", "SAR", "ISR")}
FAMILIES = tuple(METRICS)
#: A reference source whose peak stays below this (-80 dBFS, a few 16-bit steps) is silent.
SILENCE_PEAK = 1e-4
#: Columns of per_track.csv before the metrics.
ROW_FIELDS = ("track", "method", "seconds", "status", "notes")
#: Which estimate files hold each source: ``{source: (file stem, ...)}``, several stems summed.
#: A source left out is derived as the mixture minus the other (see :func:`load_estimates`).
DEFAULT_STEM_NAMES = {source: (source,) for source in SOURCES}
#: ``--stem-names`` presets: other separators' output files.
STEM_PRESETS = {
    "demucs": "vocals=vocals,accompaniment=no_vocals",  # demucs --two-stems vocals
    "spleeter": "vocals=vocals,accompaniment=accompaniment",  # spleeter separate -p spleeter:2stems
    "open-unmix": "vocals=vocals,accompaniment=bass+drums+other",  # umx's four targets (and spleeter:4stems)
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How signals are evaluated: at ``sr`` (None: the references' own rate), folded to mono
    unless ``stereo`` (v4 only), with v4 frames of ``window`` and ``hop`` seconds."""

    sr: int | None = DEFAULT_PARAMS.sample_rate
    stereo: bool = False
    window: float = 1.0
    hop: float = 1.0
    families: tuple[str, ...] = FAMILIES

    def rate(self, references_sr: int) -> int:
        return self.sr or references_sr


DEFAULT_SETTINGS = Settings()


def metric_columns(families=FAMILIES) -> list[str]:
    """Names of the metric columns, e.g. ``v3_vocals_NSDR``, ``v4_accompaniment_ISR``."""
    return [f"{f}_{s}_{m}" for f in families for s in SOURCES for m in METRICS[f]]


# --------------------------------------------------------------------------------------------
# Scoring one track
# --------------------------------------------------------------------------------------------


def to_evaluation_rate(signal: np.ndarray, sr: int, settings: Settings, rate: int) -> np.ndarray:
    """Bring ``(samples, channels)`` audio at ``sr`` to the evaluation ``rate`` and channels."""
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim == 1:
        signal = signal[:, None]
    if not settings.stereo:
        signal = audio.to_mono(signal)
    return audio.resample(signal, sr, rate)


def prepare_references(references: dict, sr: int, settings: Settings) -> tuple[dict, int]:
    """The mixture and sources of a track at the evaluation rate and channels, and that rate."""
    rate = settings.rate(sr)
    return {k: to_evaluation_rate(references[k], sr, settings, rate) for k in ("mixture",) + SOURCES}, rate


def score_track(references: dict, estimates: dict, sr: int, settings: Settings = DEFAULT_SETTINGS,
                estimates_sr: int | None = None) -> dict:
    """Metrics of one track's ``estimates`` against its ``references``.

    ``references`` holds ``"mixture"`` (for NSDR), ``"vocals"`` and ``"accompaniment"``,
    ``estimates`` the two sources; arrays are ``(samples, channels)`` (or 1-D) at ``sr``
    (``estimates_sr`` if the estimates have another rate). Returns ``{"seconds", "status",
    "notes", <metric columns>}``; see :func:`score_methods`.
    """
    return score_methods(references, {"estimates": estimates}, sr, settings, estimates_sr)["estimates"]


def score_methods(references: dict, methods: dict[str, dict], sr: int, settings: Settings = DEFAULT_SETTINGS,
                  estimates_sr: int | None = None) -> dict[str, dict]:
    """Score several methods' estimates of one track, sharing the references' preparation and
    the mixture's SDR (computed once). ``methods`` maps a name to ``{"vocals", "accompaniment"}``."""
    refs, rate = prepare_references(references, sr, settings)
    ests = {name: {s: to_evaluation_rate(e[s], estimates_sr or sr, settings, rate) for s in SOURCES} for name, e in methods.items()}
    return score_prepared(refs, ests, rate, settings)


def score_prepared(refs: dict, methods: dict[str, dict], rate: int, settings: Settings = DEFAULT_SETTINGS) -> dict[str, dict]:
    """The core of :func:`score_methods`, on signals already at the evaluation rate and channels.

    Estimates of another length are cropped or zero-padded at the end (with a note in the
    result). Each result: ``seconds`` (the track's length), ``status`` ("ok", or why it has no
    scores), ``notes`` (warnings, "; "-joined) and one float per metric column (NaN if unscored).
    """
    length = refs["vocals"].shape[0]
    columns = metric_columns(settings.families)
    blank = {"seconds": length / rate, "status": "ok", "notes": "", **{c: math.nan for c in columns}}
    silent = [s for s in SOURCES if float(np.abs(refs[s]).max()) < SILENCE_PEAK]
    if silent:
        status = f"silent reference {' and '.join(silent)}: not scored"
        return {name: {**blank, "status": status} for name in methods}

    ref_mono = np.stack([audio.to_mono(refs[s])[:, 0] for s in SOURCES]).astype(np.float64)
    mix_sdr = None
    if "v3" in settings.families:
        mix = audio.to_mono(refs["mixture"])[:, 0].astype(np.float64)
        mix_sdr = _bss_eval_sources(ref_mono, np.stack([mix, mix]))[0]

    results = {}
    for name, est in methods.items():
        row, notes = dict(blank), []
        aligned = {s: _align(est[s], refs[s].shape, f"{name} {s}", rate, notes) for s in SOURCES}
        if "v3" in settings.families:
            est_mono = np.stack([audio.to_mono(aligned[s])[:, 0] for s in SOURCES]).astype(np.float64)
            if (np.abs(est_mono).max(axis=1) == 0).any():
                notes.append(f"{name}: an estimate is all zeros; v3 scores undefined (NaN)")
            else:
                sdr, sir, sar = _bss_eval_sources(ref_mono, est_mono)
                for i, s in enumerate(SOURCES):
                    row.update({f"v3_{s}_SDR": sdr[i], f"v3_{s}_SIR": sir[i], f"v3_{s}_SAR": sar[i],
                                f"v3_{s}_NSDR": sdr[i] - mix_sdr[i]})
        if "v4" in settings.families:
            row.update(_bss_eval_v4(refs, aligned, rate, settings, name, notes))
        row["notes"] = "; ".join(notes)
        results[name] = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
    return results


def _align(estimate: np.ndarray, shape: tuple, what: str, rate: int, notes: list) -> np.ndarray:
    """Crop or zero-pad an estimate to the reference's length; repeat a mono one to its channels."""
    length, channels = shape
    if estimate.shape[1] != channels:
        if estimate.shape[1] != 1:
            raise UserError(f"{what}: estimate has {estimate.shape[1]} channels, the reference {channels}; "
                            "write estimates with the references' channels, or evaluate without --stereo")
        estimate = np.repeat(estimate, channels, axis=1)
    diff = estimate.shape[0] - length
    # one sample is resampling's rounding, not a different length
    if abs(diff) > 1:
        notes.append(f"{what}: {abs(diff) / rate:.3f} s {'longer' if diff > 0 else 'shorter'} than the reference; "
                     f"{'cropped' if diff > 0 else 'zero-padded'} at the end")
    return audio.fit_length(estimate, length)


def _bss_eval_sources(refs: np.ndarray, ests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mir_eval's BSS Eval v3 of ``(2, samples)`` estimates in the given order: (SDR, SIR, SAR)."""
    import mir_eval

    with warnings.catch_warnings():
        # deprecated in mir_eval 0.8 in favour of museval; kept on purpose: the MIR-1K metric
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs, ests, compute_permutation=False)
    return sdr, sir, sar


def _bss_eval_v4(refs: dict, ests: dict, rate: int, settings: Settings, name: str, notes: list) -> dict:
    """museval's framewise BSS Eval v4, median over frames (NaN frames left out), per source; the
    frames themselves under ``"v4_frames"`` (``{source: {metric: [dB per frame]}}``, for
    :func:`write_museval_json`)."""
    import museval

    reference = np.stack([refs[s] for s in SOURCES]).astype(np.float64)
    estimate = np.stack([ests[s] for s in SOURCES]).astype(np.float64)
    out = {}
    try:
        sdr, isr, sir, sar = museval.evaluate(reference, estimate, win=int(round(settings.window * rate)),
                                              hop=int(round(settings.hop * rate)), mode="v4")
    except ValueError as err:  # museval refuses an all-zero estimate of a whole track
        notes.append(f"{name}: museval could not score it ({err}); v4 scores NaN")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all frames NaN: the median is NaN, as in museval
        for i, s in enumerate(SOURCES):
            for metric, values in (("SDR", sdr), ("SIR", sir), ("SAR", sar), ("ISR", isr)):
                out[f"v4_{s}_{metric}"] = float(np.nanmedian(values[i]))
    out["v4_frames"] = {s: {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(), "SAR": sar[i].tolist(),
                            "ISR": isr[i].tolist()} for i, s in enumerate(SOURCES)}
    return out


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def summarize(rows: list[dict], columns: list[str] | None = None) -> list[dict]:
    """Per method and metric column: ``n`` (finite values), ``mean``, ``std``, ``median`` and
    ``weighted`` (the mean weighted by ``seconds``: G-metrics such as GNSDR).

    ``rows`` are dicts with ``method``, ``seconds`` and metric columns (per_track.csv's rows);
    methods keep their order of first appearance. Returns a list of dicts, one per pair.
    """
    columns = columns or [c for c in metric_columns() if any(c in r for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        for column in columns:
            pairs = [(float(r[column]), float(r["seconds"])) for r in mine
                     if column in r and r[column] is not None and math.isfinite(float(r[column]))]
            values = np.array([v for v, _ in pairs])
            weights = np.array([w for _, w in pairs])
            n = len(values)
            table.append({
                "method": method, "metric": column, "n": n,
                "mean": float(values.mean()) if n else math.nan,
                "std": float(values.std(ddof=1)) if n > 1 else math.nan,
                "median": float(np.median(values)) if n else math.nan,
                "weighted": float(np.average(values, weights=weights)) if n and weights.sum() > 0 else math.nan,
            })
    return table


def headline_tables(summary: list[dict], families=FAMILIES) -> list[tuple[str, list[str], list[list]]]:
    """The tables papers print, from :func:`summarize`'s output: ``(title, header, rows)``.

    v3: GNSDR, GSIR, GSAR (length-weighted means); v4: the median over tracks of SDR, SIR, SAR, ISR.
    """
    index = {(r["method"], r["metric"]): r for r in summary}
    methods = list(dict.fromkeys(r["method"] for r in summary))
    tables = []
    if "v3" in families:
        metrics = ("NSDR", "SIR", "SAR")
        header = ["method"] + [f"{s[:3]} G{m}" for s in SOURCES for m in metrics]
        rows = [[m] + [index.get((m, f"v3_{s}_{x}"), {}).get("weighted", math.nan) for s in SOURCES for x in metrics]
                for m in methods]
        tables.append(("BSS Eval v3 (mir_eval): length-weighted means over tracks (GNSDR, GSIR, GSAR), dB",
                       header, rows))
    if "v4" in families:
        metrics = METRICS["v4"]
        header = ["method"] + [f"{s[:3]} {m}" for s in SOURCES for m in metrics]
        rows = [[m] + [index.get((m, f"v4_{s}_{x}"), {}).get("median", math.nan) for s in SOURCES for x in metrics]
                for m in methods]
        tables.append(("BSS Eval v4 (museval): median over frames, then median over tracks, dB", header, rows))
    return tables


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table: numbers with 2 decimals, columns right-aligned after the first."""
    cells = [[c if isinstance(c, str) else (f"{c:.2f}" if isinstance(c, float) else str(c)) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *cells)]
    lines = [" ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append(" ".join("-" * w for w in widths))
    lines += [" ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def parse_stem_names(text: str) -> dict[str, tuple[str, ...]]:
    """``--stem-names``: ``SOURCE=STEM[+STEM...],...`` or a preset name (:data:`STEM_PRESETS`).

    ``vocals=vocals,accompaniment=no_vocals`` reads Demucs' two-stem output; ``+`` sums several
    files (``accompaniment=bass+drums+other``); a source left out is derived from the mixture.
    Returns ``{source: (file stem, ...)}``; raises ``argparse.ArgumentTypeError`` (one line).
    """
    example = f"e.g. {STEM_PRESETS['demucs']}, or a preset: {', '.join(STEM_PRESETS)}"
    spec = STEM_PRESETS.get(text.strip(), text)
    names: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (i.strip() for i in spec.split(","))):
        source, equals, stems = (x.strip() for x in item.partition("="))
        files = tuple(x.strip() for x in stems.split("+"))
        if not equals or not all(files):
            raise argparse.ArgumentTypeError(f"{item!r} is not SOURCE=STEM[+STEM...]; {example}")
        if source not in SOURCES:
            raise argparse.ArgumentTypeError(f"unknown stem {source!r}: name {' or '.join(SOURCES)}; {example}")
        if source in names:
            raise argparse.ArgumentTypeError(f"{source} named twice; {example}")
        if any("/" in f or f.startswith(".") for f in files):
            raise argparse.ArgumentTypeError(f"{stems!r}: give file names without folders or extensions; {example}")
        names[source] = files
    if not names:
        raise argparse.ArgumentTypeError(f"no stem named; {example}")
    return names


def estimate_files(folder: Path, track: str, stem_names=None) -> tuple[dict[str, list[Path]], list[str]]:
    """``folder/<track>/<stem>.*`` (wav preferred) of each source's stems in ``stem_names``
    (default: ``vocals``, ``accompaniment``): ``({source: [paths]}, missing file names)``."""
    found, missing = {}, []
    for source, stems in (stem_names or DEFAULT_STEM_NAMES).items():
        for stem in stems:
            candidates = sorted((folder / track).glob(f"{stem}.*"), key=lambda p: p.suffix.lower() != ".wav")
            candidates = [p for p in candidates if audio.is_audio_file(p)]
            if candidates:
                found.setdefault(source, []).append(candidates[0])
            else:
                missing.append(f"{stem}.wav")
    return found, missing


def load_estimates(files: dict[str, list[Path]], references: dict, sr: int, settings: Settings, rate: int) -> dict:
    """Read a track's estimate files (:func:`estimate_files`) at the evaluation ``rate``.

    A source's several files are summed. A source with no files is the mixture minus the other
    source's estimate, computed sample by sample at the mixture's own rate: exact only when the
    estimate has the mixture's rate, length and channels, so anything else raises AudioError.
    """
    signals = {}
    for source, paths in files.items():
        parts = [audio.load_audio(p) for p in paths]
        if len({r for _, r in parts}) > 1 or len({x.shape for x, _ in parts}) > 1:
            raise audio.AudioError(f"{paths[0].parent}: {' + '.join(p.name for p in paths)} differ in rate, "
                                   "length or channels; they cannot be summed")
        signals[source] = (sum(x for x, _ in parts), parts[0][1], paths[0])
    for source in SOURCES:
        if source not in signals:
            (other, (est, est_sr, path)), = signals.items()
            mixture = references["mixture"]
            if est_sr != sr or est.shape != mixture.shape:
                raise audio.AudioError(
                    f"{path}: cannot derive {source} exactly as the mixture minus {other}: the estimate has "
                    f"{est.shape[0]} samples x {est.shape[1]} at {est_sr} Hz, the mixture {mixture.shape[0]} x "
                    f"{mixture.shape[1]} at {sr} Hz; give the {source} file too with --stem-names")
            signals[source] = (mixture - est, sr, None)
    ests = {}
    for source in SOURCES:
        est, est_sr, path = signals[source]
        if est_sr != sr:
            warnings.warn(f"{path}: {est_sr} Hz where the references are {sr} Hz; resampled", stacklevel=2)
        ests[source] = to_evaluation_rate(est, est_sr, settings, rate)
    return ests


def estimate_layout(stem_names=None) -> str:
    """The expected estimates layout in words, for error messages: the stems ``--stem-names`` names."""
    files = [f"<estimates>/<track>/{'+'.join(stems)}.wav" for stems in (stem_names or DEFAULT_STEM_NAMES).values()]
    return "expected " + " and ".join(files)


def check_estimates(folder: Path, names: list[str], stem_names=None) -> list[str]:
    """Refuse an estimates folder that matches none of the reference tracks (a wrong layout),
    showing the expected one (``stem_names`` as :func:`estimate_files` takes them); returns notes
    on the ones that do not match."""
    layout = estimate_layout(stem_names)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such estimates folder; {layout}")
    present = {p.name for p in folder.iterdir() if p.is_dir()}
    if not present & set(names):
        listing = sorted(p.name for p in folder.iterdir())[:5]
        first = next(iter((stem_names or DEFAULT_STEM_NAMES).values()))[0]
        raise UserError(
            f"{folder}: none of the {len(names)} reference tracks has an estimate folder here; {layout}, "
            f"e.g. {folder / names[0] / (first + '.wav')} (found: {', '.join(listing) or 'nothing'})")
    extra = sorted(present - set(names))
    if extra:
        return [f"{len(extra)} estimate folder(s) match no reference track and are ignored: {', '.join(extra[:5])}"
                + (" ..." if len(extra) > 5 else "")]
    return []


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Write dict rows atomically; floats with 4 decimals (NaN as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    cli.atomic_write_text(path, buffer.getvalue())


def write_museval_json(rows: list[dict], folder: Path, subset: str, settings: Settings) -> list[Path]:
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
        cli.atomic_write_text(path, store.json + "\n")
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
    """Rows of a per_track.csv or summary.csv, numbers as floats (for notebooks and :func:`summarize`)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"track", "method", "status", "notes", "metric"}
    return [{k: (v if k in text else float(v)) for k, v in row.items()} for row in rows]


def box_plots(rows: list[dict], folder: Path, families=FAMILIES) -> list[Path]:
    """One PNG per metric (``<family>_<metric>.png``): a box per method and source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    paths = []
    for family in families:
        for metric in METRICS[family]:
            fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(methods) * len(SOURCES), 4.5))
            data, labels, colors = [], [], []
            for method in methods:
                for k, source in enumerate(SOURCES):
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
            with cli.atomic_output(path, full_disk=True) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
            plt.close(fig)
            paths.append(path)
    return paths


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
    settings: Settings
    stem_names: dict | None = None  # None: DEFAULT_STEM_NAMES


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
        refs, rate = prepare_references(references, sr, settings)
        methods, early = {}, {}
        if job.estimates is not None:
            files, missing = estimate_files(job.estimates, track.name, job.stem_names)
            if missing:
                where = job.estimates / track.name
                early[job.name] = f"missing estimate: {where / missing[0]}" + (f" (and {', '.join(missing[1:])})" if missing[1:] else "")
            else:
                try:
                    methods[job.name] = load_estimates(files, references, sr, settings, rate)
                except audio.AudioError as err:
                    methods.pop(job.name, None)
                    early[job.name] = f"unreadable estimate: {err}"
        for name in job.baselines:
            methods[name] = baselines.separate(name, refs["mixture"], rate, refs)
        scores = score_prepared(refs, methods, rate, settings)
    notes = [str(w.message) for w in caught if not issubclass(w.category, (FutureWarning, DeprecationWarning))]
    rows = []
    order = ([job.name] if job.estimates is not None else []) + list(job.baselines)
    for name in order:
        if name in early:
            row = {"seconds": refs["vocals"].shape[0] / rate, "status": early[name], "notes": "",
                   **{c: math.nan for c in metric_columns(settings.families)}}
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
    nan_scores = {c: math.nan for c in metric_columns(job.settings.families)}
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
    parser.add_argument("--stem-names", type=parse_stem_names, default=None, metavar="SOURCE=STEM[+STEM],...",
                        help="other separators' estimate files, e.g. vocals=vocals,accompaniment=no_vocals "
                             f"(presets: {', '.join(STEM_PRESETS)}); a source left out is the mixture minus "
                             "the other estimate, where that is exact (same rate, length, channels)")
    parser.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                        help="also score baselines in the same run: mixture, irm, ibm, hpss, nmf "
                             "(all of them when no name is given)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: %(default)s)")
    parser.add_argument("--sr", default=str(DEFAULT_PARAMS.sample_rate),
                        help="evaluation rate in Hz, or 'native' for the references' own rate (default: %(default)s)")
    parser.add_argument("--stereo", action="store_true",
                        help="keep the references' channels for v4 (default: fold to mono); v3 is always mono")
    parser.add_argument("--metrics", nargs="+", choices=FAMILIES, default=list(FAMILIES),
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


def _settings_from(args) -> Settings:
    if args.sr == "native":
        sr = None
    else:
        try:
            sr = int(args.sr)
        except ValueError:
            sr = 0
        if sr <= 0:
            raise UserError(f"--sr {args.sr}: give a rate in Hz (e.g. 8192) or 'native'")
    return Settings(sr=sr, stereo=args.stereo, window=args.window, hop=args.hop,
                    families=tuple(f for f in FAMILIES if f in args.metrics))


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
    notes = check_estimates(args.estimates, [t.name for t in tracks], args.stem_names) if args.estimates is not None else []
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{args.out}: cannot create the output folder ({err.strerror}); choose another with --out") from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    stem_names = args.stem_names or DEFAULT_STEM_NAMES
    if args.estimates is not None:
        for source in SOURCES:
            if source not in stem_names:
                other = next(s for s in SOURCES if s != source)
                print(f"note: no {source} file named (--stem-names): {source} = mixture - {other} estimate, "
                      "computed exactly at the mixture's rate", file=sys.stderr)
    jobs = [Job(t, args.estimates, name, chosen, settings, stem_names) for t in tracks]
    rows = run_jobs(jobs, workers=min(args.jobs, len(jobs)), progress=not args.quiet)

    columns = metric_columns(settings.families)
    write_csv(args.out / "per_track.csv", rows, list(ROW_FIELDS) + columns)
    summary = summarize(rows, columns)
    write_csv(args.out / "summary.csv", summary, ["method", "metric", "n", "mean", "std", "median", "weighted"])
    cli.atomic_write_text(args.out / "settings.json", json.dumps({
        "dataset": args.dataset, "references": str(args.references), "split": args.split, "unit": unit,
        "estimates": str(args.estimates) if args.estimates else None, "methods": list(dict.fromkeys(r["method"] for r in rows)),
        "stem_names": {s: "+".join(stem_names[s]) if s in stem_names else "mixture minus the other" for s in SOURCES},
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
        from separation import html_report

        written.append(html_report.write_report(args.out / "report.html", rows, summary, settings, plots,
                                                jobs, args.report_tracks))

    report(rows, summary, settings, len(tracks), verbose=args.verbose)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 1 if any(r["status"].startswith(("missing", "unreadable", "failed")) for r in rows) else 0


def report(rows: list[dict], summary: list[dict], settings: Settings, n_tracks: int, verbose: bool = False) -> None:
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
        print(format_table(header, [[r["method"], r["metric"], r["n"], r["mean"], r["std"], r["median"], r["weighted"]]
                                    for r in summary]))
    for title, header, table in headline_tables(summary, settings.families):
        print(f"\n{title}\n{format_table(header, table)}")
    if unscored:
        print(f"\n{len(unscored)} track/method pair(s) not scored (listed above); the tables leave them out.")


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))

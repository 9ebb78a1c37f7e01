"""BSS Eval scores of separated vocals and accompaniment, their summaries, and the estimate files.

The toolbox of evaluate.py (step 4), also used by notebooks, benchmarks and the PyTorch side::

    from separation import metrics
    scores = metrics.score_track(references, estimates, sr)   # {"v3_vocals_SDR": ..., ...}
    table = metrics.summarize(rows)                            # rows: dicts with "method", "seconds", scores

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
    on the filters): read v4's SDR, and v3 for SIR and SAR (docs/model.md, "Honest metrics").

Signals are evaluated at the rate and channels of :class:`Settings`: by default 8192 Hz folded
to mono (the model's own rate and channel, as in the coursework); references and estimates are
resampled (soxr) and their channels averaged. v3 always works on the mono fold, the only input
``bss_eval_sources`` defines. Estimates are matched to the source labels as given (no
permutation search: swapped stems must score badly).

Silence, as museval handles it: a frame whose reference (or estimate) is all zeros is NaN and
left out of the medians; a track whose reference vocals or accompaniment are silent
(peak below :data:`SILENCE_PEAK`) is reported and not scored; an all-zero estimate has NaN v3
scores, reported. Summaries use finite values only and give their count ``n``, so no NaN or inf
enters a mean.

Estimate files: ``<estimates>/<track>/{vocals,accompaniment}.wav`` (what inference.py writes), or
other separators' files named by ``--stem-names`` (:func:`parse_stem_names`); a source with no
file is the mixture minus the other estimate (:func:`load_estimates`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from separation import audio
from separation.audio import DEFAULT_PARAMS
from separation.errors import UserError

SOURCES = ("vocals", "accompaniment")
#: Metrics of each family, in table order.
METRICS = {"v3": ("NSDR", "SDR", "SIR", "SAR"), "v4": ("SDR", "SIR", "SAR", "ISR")}
FAMILIES = tuple(METRICS)
#: A reference source whose peak stays below this (-80 dBFS, a few 16-bit steps) is silent.
SILENCE_PEAK = 1e-4
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
        """The evaluation rate for references at ``references_sr``."""
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
    museval's per-track JSON, which evaluate.py writes)."""
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
# Estimate files
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

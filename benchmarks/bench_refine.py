"""Inference's second, finer mask (``inference.py --refine``, issue 25): where it helps, and by how much.

    python benchmarks/bench_refine.py probe [--musdb7 ../shared/data/musdb18-7] [--model PATH] [--tracks N]
    python benchmarks/bench_refine.py compare none=results/yardstick/none refine=results/yardstick/refine ...
    python benchmarks/bench_refine.py speed [--windows 0 2048 4096 8192] [--rounds 3]

``probe`` separates the 45 ``test`` songs of MUSDB18's 7-second previews once (the shipped
model's mask, float32) and applies variants of the refinement to each song's first vocals
(``inference.refine_vocals``): windows, hops, the ratio unclipped, and, as a control, the first
mask applied on a denser STFT with no refinement. It scores them against the reference vocals
with a quick stand-in for museval: the whole track's SDR, ``10 log10(|s|^2 / |s - v|^2)`` over
both channels (the SiSEC 2021 "global SDR"; no distortion filter, no 1 s frames). A second table
says where in frequency the 4096-point refinement acts: per band, the share of the first
vocals' energy it removes, and how much the vocals' error energy changes there.

``compare`` reads yardstick work folders (``benchmarks/yardstick.py --work``, their
``musdb7-v4/per_track.csv``) and prints the table of RESULTS.md: each variant's median and mean
v4 vocal SDR over tracks, and its per-track paired difference against the first folder.

``speed`` times ``Separator.separate`` (the shipped model, float32) on 3 minutes of 44.1 kHz
stereo noise with each refinement window (0: none), the best of ``--rounds``.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

import numpy as np

from benchlib import ROOT, cpu_summary, load_average, print_table
from separation import cli  # noqa: E402  (benchlib puts the project on sys.path)

#: Frequency bands of the where-table, Hz (the first mask is interpolated below 3840 Hz, one
#: value per frame above it: inference.PASSBAND).
BANDS = ((0, 3840), (3840, 8000), (8000, 16000), (16000, 22050))


def global_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(|s|^2 / |s - v|^2)`` over all samples and channels, dB."""
    error = np.sum((reference - estimate) ** 2, dtype=np.float64)
    return 10 * math.log10(np.sum(reference**2, dtype=np.float64) / max(error, 1e-20))


def band_energy(x: np.ndarray, sr: int, n_fft: int = 4096) -> np.ndarray:
    """Energy of ``(samples, channels)`` audio in each of :data:`BANDS`, from an STFT."""
    from separation import audio

    power = np.abs(audio.stft(x, n_fft=n_fft, hop_length=n_fft // 4)) ** 2  # (bins, frames, channels)
    freqs = np.arange(power.shape[0]) * sr / n_fft
    return np.array([power[(freqs >= lo) & (freqs < hi)].sum(dtype=np.float64) for lo, hi in BANDS])


def variants(separator, mixture: np.ndarray, sr: int, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Each variant's vocals of one song, from the model's mask ``mask`` (model rate)."""
    import inference
    from separation import audio

    first = separator.apply_mask(mixture, sr, mask)
    out = {"none (the first mask)": first}
    for window, hop in ((2048, 0.25), (4096, 0.25), (8192, 0.25), (4096, 0.5), (4096, 0.125)):
        n_fft, _ = inference.refine_grid(sr, window)
        label = f"refine {window}, hop {hop:g}" if hop != inference.REFINE_HOP else f"refine {window}"
        out[label] = inference.refine_vocals(mixture, first, n_fft, max(1, round(n_fft * hop)))
    n_fft, hop = inference.refine_grid(sr, 4096)
    out["refine 4096 twice"] = inference.refine_vocals(mixture, out["refine 4096"], n_fft, hop)
    out["refine 4096 three times"] = inference.refine_vocals(mixture, out["refine 4096 twice"], n_fft, hop)
    grid = inference.frame_grid(sr, separator.params)
    out["refine on the first mask's own STFT"] = inference.refine_vocals(mixture, first, *grid)

    def unclipped(spec, _, vocals_spec):  # the ratio without its ceiling: is it the clip that helps?
        return spec * (np.abs(vocals_spec) / np.maximum(np.abs(spec), np.finfo(np.float32).tiny))

    out["refine 4096, ratio not clipped"] = audio.masked_istft(mixture, None, n_fft, hop, apply=unclipped, guide=first)
    # Controls: the first mask itself on an STFT with half or a quarter of its hop, no second mask.
    for label, divide in (("first mask on a 50 %-overlap STFT", 2), ("first mask on a 75 %-overlap STFT", 4)):
        dense = (grid[0], max(1, round(grid[1] / divide)))
        out[label] = audio.masked_istft(
            mixture, lambda frames, dense=dense: inference.full_band_mask(mask, sr, frames, separator.params, grid=dense),
            *dense)
    out["75 %-overlap first mask, then refine 4096"] = inference.refine_vocals(
        mixture, out["first mask on a 75 %-overlap STFT"], n_fft, hop)
    return out


def probe(args) -> int:
    import inference
    from separation import audio, datasets

    tracks = datasets.find_tracks("stems", args.musdb7, "test")[:args.tracks]
    if not tracks:
        raise SystemExit(f"error: --musdb7 {args.musdb7}: no test tracks")
    separator = inference.Separator(args.model, precision="float32", refine=None)
    scores: dict[str, list[float]] = {}
    louder: dict[str, list[float]] = {}  # each variant's vocal energy against the first vocals', dB
    removed, error_before, error_after, reference_energy = (np.zeros(len(BANDS)) for _ in range(4))
    clipped_cells, cells = 0, 0
    for i, track in enumerate(tracks):
        stems, sr = track.load()
        mixture, vocals = stems["mixture"].astype(np.float32), stems["vocals"].astype(np.float32)
        mono = audio.resample(audio.to_mono(mixture), sr, separator.params.sample_rate)[:, 0]
        mask = separator.mask(audio.magnitude(mono, separator.params))
        estimates = variants(separator, mixture, sr, mask)
        for label, estimate in estimates.items():
            scores.setdefault(label, []).append(global_sdr(vocals, estimate))
            louder.setdefault(label, []).append(10 * math.log10(np.sum(estimate**2, dtype=np.float64)
                                                                / np.sum(estimates["none (the first mask)"]**2)))
        first, refined = estimates["none (the first mask)"], estimates["refine 4096"]
        removed += band_energy(first - refined, sr)
        error_before += band_energy(vocals - first, sr)
        error_after += band_energy(vocals - refined, sr)
        reference_energy += band_energy(vocals, sr)
        n_fft, hop = inference.refine_grid(sr, 4096)
        first_spec, mix_spec = (np.abs(audio.stft(x, n_fft=n_fft, hop_length=hop)) for x in (first, mixture))
        clipped_cells += int((first_spec > mix_spec).sum())
        cells += first_spec.size
        print(f"{i + 1}/{len(tracks)} {track.name}", file=sys.stderr, flush=True)
    base = scores["none (the first mask)"]
    rows = []
    for label, values in scores.items():
        gains = [v - b for v, b in zip(values, base)]
        rows.append([label, statistics.median(values), statistics.fmean(values), statistics.median(gains),
                     statistics.fmean(gains), f"{sum(g > 0 for g in gains)} / {len(gains)}",
                     statistics.median(louder[label])])
    notes = (f"{len(tracks)} songs of {args.musdb7 / 'test'}, model {args.model or 'pretrained'} (float32); "
             f"{cpu_summary()}, load average {load_average():.1f}")
    print_table("The refinement's variants, global vocal SDR (quick stand-in for museval)", notes,
                ["variant", "median", "mean", "median gain", "mean gain", "tracks that gain",
                 "vocal energy vs first, dB (median)"], rows)
    band_rows = []
    for (lo, hi), r, b, a, s in zip(BANDS, removed, error_before, error_after, reference_energy):
        band_rows.append([f"{lo / 1000:g}-{hi / 1000:g} kHz", 100 * s / reference_energy.sum(),
                          100 * r / max(b, 1e-20), 10 * math.log10(b / max(a, 1e-20))])
    print_table("Where the 4096-point refinement acts (all songs pooled)",
                f"{100 * clipped_cells / cells:.1f} % of the cells (bins x frames x channels) of the first vocals' "
                "4096-point STFT are louder than the mixture's: the clip sets them to the mixture's.",
                ["band", "% of the reference vocals' energy", "energy removed, % of the first error there",
                 "error reduction, dB"], band_rows, digits=2)
    return 0


def per_track(folder: Path) -> dict[str, float]:
    """``{track: v4 vocal SDR}`` of a yardstick work folder (NaN tracks left out)."""
    path = folder / "musdb7-v4" / "per_track.csv"
    if not path.exists():
        raise SystemExit(f"error: {path}: no such file; run benchmarks/yardstick.py --parts musdb7 --work {folder}")
    with open(path, newline="") as f:
        values = {r["track"]: float(r["v4_vocals_SDR"]) for r in csv.DictReader(f) if r["method"] == "model"}
    return {t: v for t, v in values.items() if math.isfinite(v)}


def compare(args) -> int:
    runs = []
    for item in args.folders:
        label, _, folder = item.rpartition("=")
        runs.append((label or Path(folder).name, per_track(Path(folder))))
    base_label, base = runs[0]
    rows = []
    for label, values in runs:
        common = sorted(set(values) & set(base))
        gains = [values[t] - base[t] for t in common]
        rows.append([label, statistics.median(values.values()), statistics.fmean(values.values()),
                     f"{sum(g > 0 for g in gains)} / {len(gains)}", statistics.median(gains), statistics.fmean(gains),
                     min(gains), max(gains)])
    print_table("Paired per-track v4 vocal SDR", f"against {base_label}",
                ["variant", "median", "mean", "tracks that gain", "median gain", "mean gain", "worst", "best"], rows,
                digits=2)
    return 0


def speed(args) -> int:
    import time

    import inference

    x = (0.1 * np.random.default_rng(0).standard_normal((180 * 44100, 2))).astype(np.float32)
    rows = []
    for window in args.windows:
        separator = inference.Separator(None, precision="float32", refine=window or None)
        separator.separate(x[:44100], 44100)  # warm-up: the model's first call
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            separator.separate(x, 44100)
            times.append(time.perf_counter() - start)
        rows.append([f"refine {window}" if window else "none", min(times)])
    print_table("Seconds per 3-minute 44.1 kHz stereo song, Separator.separate (float32)",
                f"{cpu_summary()}, load average {load_average():.1f}; best of {args.rounds}",
                ["variant", "seconds"], rows, digits=2)
    return 0


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("probe", help="variants in process, a quick score")
    p.add_argument("--musdb7", type=Path, default=ROOT.parent / "shared" / "data" / "musdb18-7")
    p.add_argument("--model", default=None, help="default: the shipped model")
    p.add_argument("--tracks", type=cli.bounded(int, 1), default=None, help="the first N test songs (default: all)")
    c = commands.add_parser("compare", help="paired table of yardstick work folders")
    c.add_argument("folders", nargs="+", metavar="[LABEL=]FOLDER", help="the first is the reference")
    t = commands.add_parser("speed", help="seconds per 3-minute song")
    t.add_argument("--windows", type=int, nargs="+", default=[0, 2048, 4096, 8192], help="0: no refinement")
    t.add_argument("--rounds", type=cli.bounded(int, 1), default=3)
    args = parser.parse_args(argv)
    return {"probe": probe, "compare": compare, "speed": speed}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

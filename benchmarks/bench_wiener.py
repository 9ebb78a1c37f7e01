"""Does a multichannel Wiener post-filter (norbert, as Open-Unmix uses it) improve separated stems?

    python benchmarks/bench_wiener.py --yardstick results/yardstick/shipped [--devset data/produced-dev]

Takes the stems a model already separated for the yardstick (``benchmarks/yardstick.py`` leaves
them in ``<work>/separated-stempeg`` and ``<work>/separated-dev``) and the mixtures, refines the
two estimates with ``norbert.wiener`` at the song's own rate and channels (STFT n_fft 4096, hop
1024, Hann, as Open-Unmix), writes each variant's stems, and scores them with ``evaluate.py``
exactly as the yardstick does (BSS Eval v4 vocal SDR at the native rate, stereo, median over
tracks). Variants:

* ``none``: the stems as inference.py wrote them (mask x mixture, accompaniment = rest), scored
  by the yardstick itself (its ``stempeg-v4`` and ``dev-v4`` summaries are read back);
* ``power softmask``: Wiener gains |V|^2 / (|V|^2 + |A|^2), no EM iteration;
* ``power softmask + 1 EM``: the same, then one expectation-maximisation iteration of the
  multichannel model (spatial covariances per source);
* ``magnitudes + 1 EM``: Open-Unmix's default (estimates with the mixture phase, 1 iteration).

Time per song is measured on a 3-minute 44.1 kHz stereo excerpt (the stempeg sample looped).
EM runs on blocks of 300 frames (Open-Unmix's ``wiener_win_len``) to bound memory.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, cpu_summary, load_average, print_table

N_FFT, HOP = 4096, 1024
BLOCK = 300
VARIANTS = {  # name: (power of the estimates' magnitudes, softmask, EM iterations)
    "none": None,
    "power softmask": (2, True, 0),
    "power softmask + 1 EM": (2, True, 1),
    "magnitudes + 1 EM": (1, False, 1),
}


def stft(x: np.ndarray) -> np.ndarray:
    """``(samples, channels)`` -> ``(frames, bins, channels)`` complex128, norbert's layout."""
    import librosa

    return np.stack([librosa.stft(x[:, c].astype(np.float64), n_fft=N_FFT, hop_length=HOP).T
                     for c in range(x.shape[1])], axis=-1)


def istft(spec: np.ndarray, length: int) -> np.ndarray:
    import librosa

    return np.stack([librosa.istft(spec[..., c].T, hop_length=HOP, n_fft=N_FFT, length=length)
                     for c in range(spec.shape[-1])], axis=1).astype(np.float32)


def refine(mixture: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, variant) -> dict[str, np.ndarray]:
    """The two stems after norbert's Wiener filter ``variant`` (power, softmask, iterations)."""
    import norbert

    if variant is None:
        return {"vocals": vocals, "accompaniment": accompaniment}
    power, softmask, iterations = variant
    x = stft(mixture)
    v = np.stack([np.abs(stft(vocals)), np.abs(stft(accompaniment))], axis=-1) ** power
    y = np.zeros(x.shape + (2,), dtype=np.complex128)
    for start in range(0, len(x), BLOCK):
        block = slice(start, start + BLOCK)
        y[block] = norbert.wiener(v[block], x[block].copy(), iterations, use_softmask=softmask)
    return {"vocals": istft(y[..., 0], len(mixture)), "accompaniment": istft(y[..., 1], len(mixture))}


def songs(dataset: str, references: Path, separated: Path):
    """``(name, mixture, vocals, accompaniment, sr)`` of each track with its separated stems."""
    import datasets
    from audio import load_audio

    for track in datasets.find_tracks(dataset, references, "test"):
        stems, sr = track.load()
        est = {s: load_audio(separated / track.name / f"{s}.wav")[0] for s in ("vocals", "accompaniment")}
        yield track.name, stems["mixture"], est["vocals"], est["accompaniment"], sr


def write_variant(out: Path, name: str, stems: dict[str, np.ndarray], sr: int) -> None:
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


def seconds_per_song(mixture: np.ndarray, sr: int, variant) -> float:
    """Wall time of :func:`refine` on 3 minutes of ``mixture`` (looped), stems = half each."""
    three = np.resize(mixture, (int(180 * sr), mixture.shape[1])).astype(np.float32)
    start = time.perf_counter()
    refine(three, 0.5 * three, 0.5 * three, variant)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yardstick", type=Path, required=True, help="a yardstick.py --work folder")
    parser.add_argument("--devset", type=Path, default=Path("data/produced-dev"))
    parser.add_argument("--out", type=Path, default=None, help="(default: <yardstick>/wiener)")
    parser.add_argument("--jobs", type=int, default=1, help="evaluate.py --jobs (default: %(default)s)")
    args = parser.parse_args(argv)
    work, devset = args.yardstick.resolve(), args.devset.resolve()
    out = (args.out or work / "wiener").resolve()
    sets = {  # set: (dataset, references for find_tracks, references for evaluate.py, evaluate.py options, separated)
        "stempeg": ("musdb", work / "musdb-sample", work / "musdb-sample", ["--dataset", "musdb", "--split", "test"],
                    work / "separated-stempeg"),
        "dev": ("stems", devset / "test", devset / "test", [], work / "separated-dev"),
    }
    scores = {v: {} for v in VARIANTS}
    first_song = None
    for set_name, (dataset, refs, eval_refs, extra, separated) in sets.items():
        for name, mixture, vocals, accompaniment, sr in songs(dataset, refs, separated):
            first_song = first_song or (mixture, sr)
            for variant, settings in VARIANTS.items():
                if settings is None:
                    continue
                write_variant(out / set_name / variant, name, refine(mixture, vocals, accompaniment, settings), sr)
        scores["none"][set_name] = read_median(work / f"{set_name}-v4")  # the yardstick's own score
        for variant in list(VARIANTS)[1:]:
            scores[variant][set_name] = median_vocal_sdr(eval_refs, out / set_name / variant, extra + ["--jobs", str(args.jobs)],
                                                         out / "scores" / set_name / variant.replace(" ", "_"))
    rows = []
    for variant, settings in VARIANTS.items():
        seconds = seconds_per_song(*first_song, settings) if settings else 0.0
        rows.append([variant, scores[variant]["stempeg"], scores[variant]["dev"],
                     scores[variant]["stempeg"] - scores["none"]["stempeg"],
                     scores[variant]["dev"] - scores["none"]["dev"], seconds])
    print_table("Wiener post-filter (norbert) on separated stems",
                f"{cpu_summary()}; load {load_average():.1f}; stems from {work}; STFT {N_FFT}/{HOP}; "
                "v4 vocal SDR median, native rate, stereo (evaluate.py)",
                ["variant", "stempeg SDR", "dev SDR", "stempeg change", "dev change", "s per 3-min song"], rows, digits=2)
    shutil.rmtree(out / "stempeg", ignore_errors=True)  # the stems are big; the scores stay
    shutil.rmtree(out / "dev", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

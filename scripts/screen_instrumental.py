"""Flag instrumental tracks in which the shipped model hears a voice (a screen, not a listen).

    python scripts/screen_instrumental.py [--root data/instrumental] [--work /tmp/screen] [--model M]

Each track under ROOT is decoded by ffmpeg to mono at the model's 8192 Hz, separated with the
``inference.py`` command line, and scored by the share of its energy that the model gives to the
vocals, over the whole track and in the loudest-vocal 10-second window. The table, sorted by the
window share, is printed as markdown; tracks above ``--flag`` in either column are marked for a
look (spectrogram PNGs are written beside the work files). pretrained/DATA.md records the rule,
the thresholds and what was excluded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from separation.audio import DEFAULT_PARAMS  # noqa: E402

WINDOW_S = 10.0


def decode(src: Path, dst: Path, sr: int) -> None:
    """Decode an audio file to a mono 16-bit wav at ``sr`` (libsndfile reads ogg, opus and mp3)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    audio, file_sr = sf.read(src, dtype="float32", always_2d=True)
    tmp = dst.with_suffix(".part.wav")
    sf.write(tmp, soxr.resample(audio.mean(axis=1), file_sr, sr), sr, subtype="PCM_16")
    tmp.rename(dst)


def shares(mixture: np.ndarray, vocals: np.ndarray, sr: int) -> tuple[float, float, int]:
    """Vocal energy / mixture energy over the whole track and in its highest 10-second window (and that window's start)."""
    n = int(WINDOW_S * sr)
    floor = 1e-3 * np.mean(mixture ** 2)  # skip near-silent windows
    windows = [(np.sum(vocals[i:i + n] ** 2) / np.sum(mixture[i:i + n] ** 2), i)
               for i in range(0, len(mixture), n) if np.mean(mixture[i:i + n] ** 2) > floor]
    share, start = max(windows, default=(0.0, 0))
    return float(np.sum(vocals ** 2) / max(np.sum(mixture ** 2), 1e-12)), float(share), start


def spectrogram_png(x: np.ndarray, sr: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.specgram(x + 1e-9, NFFT=512, Fs=sr, noverlap=384, cmap="magma")
    ax.set_title(title)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/instrumental"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "screen")
    parser.add_argument("--model", default=None, help="passed to inference.py --model (default: the shipped model)")
    parser.add_argument("--flag", type=float, nargs=2, default=(0.15, 0.35), metavar=("TRACK", "WINDOW"),
                        help="vocal-energy shares above which a track is flagged (default: %(default)s)")
    args = parser.parse_args(argv)
    sr = DEFAULT_PARAMS.sample_rate
    tracks = sorted(p for p in args.root.glob("*/*/*") if p.is_file())
    if not tracks:
        print(f"error: no tracks under {args.root}; run scripts/fetch_debian_music.sh first", file=sys.stderr)
        return 2
    mono = args.work / "mono"
    for t in tracks:
        decode(t, mono / t.parent.name / (t.stem + ".wav"), sr)
    out = args.work / "separated"
    cmd = [sys.executable, "inference.py", str(mono), "-o", str(out), "--overwrite", "--precision", "float32"]
    subprocess.run(cmd + (["--model", args.model] if args.model else []), check=True)
    rows = []
    for t in tracks:
        mixture, _ = sf.read(mono / t.parent.name / (t.stem + ".wav"), dtype="float32")
        vocals, _ = sf.read(out / t.stem / "vocals.wav", dtype="float32")
        vocals = vocals if vocals.ndim == 1 else vocals.mean(axis=1)
        track, window, start = shares(mixture, vocals, sr)
        flagged = track > args.flag[0] or window > args.flag[1]
        if flagged:  # the estimated vocals of the loudest-vocal window, where a voice would show
            excerpt = vocals[start:start + int(WINDOW_S * sr)]
            spectrogram_png(excerpt, sr, args.work / f"{t.parent.name}--{t.stem}.png",
                            f"{t.parent.name}/{t.name}: estimated vocals from {start / sr:.0f} s")
        rows.append((window, track, f"{t.parent.parent.name}/{t.parent.name}/{t.name}", flagged))
    print("| track | vocal share (track) | vocal share (loudest 10 s) | flagged |\n|---|---|---|---|")
    for window, track, name, flagged in sorted(rows, reverse=True):
        print(f"| {name} | {track:.3f} | {window:.3f} | {'yes' if flagged else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

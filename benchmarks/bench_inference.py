"""Benchmark of inference.py: speed, memory, the full-band choice and the overlap. Prints tables.

    .venv/bin/python benchmarks/bench_inference.py [--model runs/NAME/best.keras] [--skip-long]

Sections (each a table):

1. Where the time goes, in-process, model loaded and warmed up: separating a ``--seconds``
   (180) 44.1 kHz stereo synthetic song (``synth.synthesize_track``), split into load,
   resample, model-rate STFT, model, full-rate STFT, mask mapping, inverse STFT and write,
   for several overlaps and batch sizes (best of ``--repeats``).
2. The whole CLI process (``python inference.py SONG``): wall time and peak memory
   (``ru_maxrss`` of a child process), with the import and model-loading costs on their own.
3. Memory for a ``--long-minutes`` (60) song: peak RSS of the CLI, and of ``separate()`` with
   and without the chunked full-band STFT.
4. Full band vs separating at 8192 Hz and upsampling: SDR at 44.1 kHz of synthetic test songs,
   whole band and above 4 kHz, and the vocals' energy above 4 kHz against the truth's. The mask
   is the oracle ratio mask at 8192 Hz (the best a model could give), or the ``--model``'s.
5. Overlap: the model's work and how much the mask depends on where the patch boundaries fall
   (any model), and the SDR per overlap with a trained ``--model``.

Untrained weights are fine for 1-3 (timing and memory do not depend on the weights). The
machine's CPU may be shared: compare rows within a run rather than across runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import audio  # noqa: E402
import inference  # noqa: E402
from audio import DEFAULT_PARAMS  # noqa: E402

STAGES = ("load", "resample", "model_stft", "model", "stft", "mask", "istft", "write")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model (default: an untrained full-size U-Net)")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the timed song (default 180)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the best is shown (default 3)")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the memory test song (default 60)")
    parser.add_argument("--skip-long", action="store_true", help="skip section 3 (a few minutes)")
    parser.add_argument("--quality-tracks", type=int, default=4, help="synthetic songs in sections 4-5 (default 4)")
    parser.add_argument("--mir1k", help="MIR-1K root: section 5 uses its huang-test songs instead of synthetic ones")
    parser.add_argument("--sections", default="12345", help="which sections to run (default 12345)")
    return parser


def table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a plain-text table with right-aligned columns."""
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def song(seconds: float, sr: int = 44100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic song's ``(vocals, accompaniment)``, each ``(samples, 2)`` float32 at ``sr``."""
    import synth

    vocals, accompaniment, _ = synth.synthesize_track(seed, seconds=seconds, sr=sr)
    return vocals, accompaniment


def load_or_build(model_path: str | None, folder: Path):
    """``(model, params, path)``: the given model, or an untrained full-size U-Net saved to ``folder``."""
    import unet_model

    if model_path:
        model, params = unet_model.load_model(model_path)
        return model, params, Path(model_path)
    model = unet_model.build_unet()
    model.save(folder / "best.keras")
    DEFAULT_PARAMS.save(folder / "audio_params.json")
    return model, DEFAULT_PARAMS, folder / "best.keras"


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh child and report ``(wall seconds, peak RSS in MB, stderr tail)``.

    A wrapper process runs it so that ``RUSAGE_CHILDREN`` covers this command alone.
    """
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
               "r.returncode); sys.stderr.write(r.stderr[-2000:])")
    proc = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True, cwd=ROOT)
    wall, rss, code = proc.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {proc.stderr}")
    return float(wall), float(rss), proc.stderr


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-distortion ratio in dB over the whole signal (no allowed filter, as BSS Eval v4's
    SDR would give for a well-aligned estimate)."""
    return 10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-20))


def highpass(x: np.ndarray, sr: int, cutoff: float = 4096.0) -> np.ndarray:
    """``x`` with everything below ``cutoff`` Hz removed (FFT brick wall, for measuring only)."""
    spec = np.fft.rfft(x, axis=0)
    spec[np.fft.rfftfreq(len(x), 1 / sr) < cutoff] = 0
    return np.fft.irfft(spec, n=len(x), axis=0).astype(np.float32)


def oracle_mask(vocals: np.ndarray, accompaniment: np.ndarray, sr: int) -> np.ndarray:
    """The ideal ratio mask |V| / (|V| + |A|) at the model's rate, from the stems' mono folds."""
    mags = [audio.magnitude(audio.resample(audio.to_mono(s), sr, DEFAULT_PARAMS.sample_rate)) for s in
            (vocals, accompaniment)]
    return mags[0] / np.maximum(mags[0] + mags[1], 1e-8)


# --------------------------------------------------------------------------------------------


def section_speed(args, model, params, model_path: Path, work: Path) -> Path:
    sr = 44100
    vocals, accompaniment = song(args.seconds, sr)
    mixture = vocals + accompaniment
    path = work / "song.wav"
    audio.save_audio(path, mixture, sr)
    seconds = len(mixture) / sr
    (work / "out").mkdir()

    t = time.perf_counter()
    import unet_model

    unet_model.load_model(model_path)
    load_model_s = time.perf_counter() - t
    t = time.perf_counter()
    inference.separate(mixture[: sr * 20], sr, model, params)  # builds and traces the mask model
    first_call_s = time.perf_counter() - t

    rows = []
    configs = [(o, 32) for o in (0.0, 0.25, 0.5, 0.75)] + [(inference.DEFAULT_OVERLAP, b) for b in (8, 16, 64)]
    for overlap, batch in configs:
        best = None
        for _ in range(args.repeats):
            timings = {}
            start = time.perf_counter()
            with inference._timed(timings, "load"):
                x, x_sr = audio.load_audio(path)
            v = inference.separate_vocals(x, x_sr, model, params, overlap, batch, timings=timings)
            with inference._timed(timings, "write"):
                inference.write_stems({"vocals": v, "accompaniment": x - v}, x_sr, work / "out" / "song")
            timings["total"] = time.perf_counter() - start
            if best is None or timings["total"] < best["total"]:
                best = timings
        mag_frames = audio.n_frames(round(seconds * params.sample_rate), params)
        patches = inference.n_segments(mag_frames, params.patch_frames, overlap)
        separate_s = best["total"] - best["load"] - best["write"]
        rows.append([overlap, batch, patches] + [best.get(s, 0.0) for s in STAGES]
                    + [separate_s, best["total"], f"{seconds / separate_s:.0f}x"])
    table(f"1. Separating a {seconds:.0f} s 44.1 kHz stereo song in-process (seconds, best of {args.repeats}; "
          f"model load {load_model_s:.2f} s and first call {first_call_s:.2f} s not included)",
          ["overlap", "batch", "patches"] + list(STAGES) + ["separate", "total", "realtime"], rows)
    return path


def section_cli(args, model_path: Path, song_path: Path, work: Path) -> None:
    rows = []
    t, rss, _ = peak_rss_mb([sys.executable, "-c", "import tensorflow, keras"])
    rows.append(["python -c 'import tensorflow, keras'", t, rss])
    t, rss, _ = peak_rss_mb([sys.executable, "-c", f"import unet_model; unet_model.load_model({str(model_path)!r})"])
    rows.append(["import + load_model", t, rss])
    cmd = [sys.executable, "inference.py", str(song_path), "-o", str(work / "cli"), "--model", str(model_path),
           "--overwrite"]
    for _ in range(2):
        t, rss, _ = peak_rss_mb(cmd)
        rows.append(["python inference.py SONG (3 min, 44.1 kHz stereo)", t, rss])
    table("2. Whole process (wall seconds, peak RSS MB)", ["command", "wall", "peak_rss_mb"], rows)


def section_memory(args, model_path: Path, song_path: Path, work: Path) -> None:
    minutes = args.long_minutes
    x, sr = audio.load_audio(song_path)
    repeats = int(np.ceil(minutes * 60 * sr / len(x)))
    long_path = work / "long.wav"
    audio.save_audio(long_path, np.tile(x, (repeats, 1))[: int(minutes * 60 * sr)], sr)
    del x
    size_mb = long_path.stat().st_size / 2**20
    rows = []
    cmd = [sys.executable, "inference.py", str(long_path), "-o", str(work / "long"), "--model", str(model_path),
           "--overwrite"]
    t, rss, _ = peak_rss_mb(cmd)
    rows.append(["CLI", t, rss])
    for chunk in (inference.CHUNK_FRAMES, 10**9):
        code = ("import sys, audio, inference, unet_model; m, p = unet_model.load_model(sys.argv[1]); "
                "x, sr = audio.load_audio(sys.argv[2]); s = inference.separate(x, sr, m, p, chunk_frames=int(sys.argv[3]))")
        t, rss, _ = peak_rss_mb([sys.executable, "-c", code, str(model_path), str(long_path), str(chunk)])
        rows.append([f"separate(), chunk_frames={chunk if chunk < 10**9 else 'whole song'}", t, rss])
    float_mb = minutes * 60 * sr * 2 * 4 / 2**20
    table(f"3. Memory for a {minutes:.0f}-minute 44.1 kHz stereo song ({size_mb:.0f} MB 16-bit file; "
          f"{float_mb:.0f} MB as float32)", ["what", "wall_s", "peak_rss_mb"], rows)


def section_quality(args, model, params, trained: bool) -> None:
    sr = 44100
    rows = []
    results: dict[str, list] = {}
    for seed in range(args.quality_tracks):
        vocals, accompaniment = song(30.0, sr, seed=100 + seed)
        mixture = vocals + accompaniment
        if trained:
            mix_mag = audio.magnitude(audio.resample(audio.to_mono(mixture), sr, params.sample_rate), params)
            mask = inference.predict_mask(mix_mag, inference.mask_predictor(model, params), params)
        else:
            mask = oracle_mask(vocals, accompaniment, sr)
        candidates = {
            "full band, above 3.84 kHz: mean of 2.88-3.84 kHz (default)":
                inference.apply_vocal_mask(mixture, sr, mask, params),
            "full band, above 3.84 kHz: (mean of 2.88-3.84 kHz)^2":
                inference.apply_vocal_mask(mixture, sr, mask, params, high_band="shrunk"),
            "full band, above 3.84 kHz: mask at 3.84 kHz":
                inference.apply_vocal_mask(mixture, sr, mask, params, high_band="edge"),
            "full band, above 4.09 kHz: model's top bin (4088 Hz)":
                inference.apply_vocal_mask(mixture, sr, mask, params, high_band="top"),
            "at 8192 Hz, vocals upsampled (nothing above 4 kHz)":
                inference.apply_vocal_mask(mixture, sr, mask, params, full_band=False),
        }
        for name, est in candidates.items():
            acc = mixture - est
            hv, he = highpass(vocals, sr), highpass(est, sr)
            results.setdefault(name, []).append([
                sdr(vocals, est), sdr(accompaniment, acc), sdr(hv, he), sdr(highpass(accompaniment, sr), highpass(acc, sr)),
                10 * np.log10(max(np.sum(he**2), 1e-20) / np.sum(hv**2)),
            ])
    for name, values in results.items():
        rows.append([name] + [float(v) for v in np.mean(values, axis=0)])
    which = "the --model's mask" if trained else "the oracle ratio mask at 8192 Hz"
    table(f"4. Full band vs 8192 Hz, {which}, {args.quality_tracks} synthetic 30 s songs at 44.1 kHz "
          "(mean dB; 'above 4k' = both signals high-passed at 4096 Hz)",
          ["method", "SDR_voc", "SDR_acc", "SDR_voc>4k", "SDR_acc>4k", "voc_energy>4k_vs_true"], rows)


def section_overlap(args, model, params, trained: bool) -> None:
    if args.mir1k:
        import datasets

        found = datasets.find_tracks("mir1k", args.mir1k, split="huang-test", unit="track")
        step = max(1, len(found) // args.quality_tracks)
        tracks, what = [], f"{args.quality_tracks} MIR-1K huang-test songs (8192 Hz)"
        for track in found[::step][: args.quality_tracks]:
            stems, sr = track.load()
            tracks.append((stems["vocals"], stems["accompaniment"], sr))
    else:
        sr, what = 44100, f"{args.quality_tracks} synthetic 60 s songs (44.1 kHz)"
        tracks = [song(60.0, sr, seed=200 + s) + (sr,) for s in range(args.quality_tracks)]
    predictor = inference.mask_predictor(model, params)
    shift = params.patch_frames // 3
    rows = []
    for overlap in (0.0, 0.25, 0.5, 0.75):
        shift_diffs, sdrs, patches, seconds = [], [], 0, 0.0
        for vocals, accompaniment, sr in tracks:
            mixture = vocals + accompaniment
            seconds += len(mixture) / sr
            mix_mag = audio.magnitude(audio.resample(audio.to_mono(mixture), sr, params.sample_rate)[:, 0], params)
            start = time.perf_counter()
            mask = inference.predict_mask(mix_mag, predictor, params, overlap)
            # The same song with the patch grid moved by a third of a patch: the frames both
            # cover would get the same mask if patch boundaries did not matter.
            shifted = inference.predict_mask(mix_mag[:, shift:], predictor, params, overlap)
            shift_diffs.append(np.abs(mask[:, shift:] - shifted).mean())
            patches += inference.n_segments(mix_mag.shape[1], params.patch_frames, overlap)
            if trained:
                est = inference.apply_vocal_mask(mixture, sr, mask, params)
                sdrs.append([sdr(vocals, est), sdr(accompaniment, mixture - est)])
        rows.append([overlap, patches, f"{np.mean(shift_diffs):.5f}"]
                    + ([float(v) for v in np.mean(sdrs, axis=0)] if trained else []))
    table(f"5. Overlap, {what}, {seconds / 60:.1f} min, {'trained' if trained else 'untrained'} model (mask change: "
          f"mean |mask difference| when the patch grid moves by {shift} frames)",
          ["overlap", "patches", "mask_change"] + (["SDR_voc", "SDR_acc"] if trained else []), rows)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_inference.") as tmp:
        work = Path(tmp)
        model, params, model_path = load_or_build(args.model, work)
        print(f"model: {args.model or 'untrained full-size U-Net'} ({model.count_params():,} parameters); "
              f"CPU cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.1f}")
        song_path = work / "song.wav"
        if "1" in args.sections:
            song_path = section_speed(args, model, params, model_path, work)
        elif {"2", "3"} & set(args.sections):
            v, a = song(args.seconds)
            audio.save_audio(song_path, v + a, 44100)
        if "2" in args.sections:
            section_cli(args, model_path, song_path, work)
        if "3" in args.sections and not args.skip_long:
            section_memory(args, model_path, song_path, work)
        if "4" in args.sections:
            section_quality(args, model, params, trained=bool(args.model))
        if "5" in args.sections:
            section_overlap(args, model, params, trained=bool(args.model))
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

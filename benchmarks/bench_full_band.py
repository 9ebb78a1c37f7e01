"""Full band vs separating at 8192 Hz: the quality of inference.py's full-band mask mapping.

    .venv/bin/python benchmarks/bench_full_band.py [--model runs/NAME/best.keras] [--tracks 4]

Separates synthetic 30 s 44.1 kHz songs (``synth.synthesize_track``) with
``inference.apply_vocal_mask`` under each way of filling the band above what the model sees
(``inference.full_band_mask``'s ``high_band`` choices) and by separating at 8192 Hz and
upsampling, and prints one table: SDR at 44.1 kHz over the whole band and above 4 kHz (both
signals high-passed at 4096 Hz), and the vocals' energy above 4 kHz against the truth's. The
mask is the oracle ratio mask at 8192 Hz (the best a model could give), or the ``--model``'s.
"""

from __future__ import annotations

import argparse
import sys

from benchlib import load_average, print_table, sdr, synthetic_song

import numpy as np  # noqa: E402

import audio  # noqa: E402
from audio import DEFAULT_PARAMS, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained .keras model (default: the oracle ratio mask)")
    parser.add_argument("--tracks", type=int, default=4, help="synthetic songs (default 4)")
    return parser


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


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import inference

    load_start = load_average()
    params, model = DEFAULT_PARAMS, None
    if args.model:
        import unet_model

        model, params = unet_model.load_model(args.model)
    sr = 44100
    results: dict[str, list] = {}
    for seed in range(args.tracks):
        vocals, accompaniment = synthetic_song(30.0, sr, seed=100 + seed)
        mixture = vocals + accompaniment
        if model is not None:
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
    rows = [[name] + [float(v) for v in np.mean(values, axis=0)] for name, values in results.items()]
    which = "the --model's mask" if model is not None else "the oracle ratio mask at 8192 Hz"
    print_table(f"Full band vs 8192 Hz, {which}",
                f"{args.tracks} synthetic 30 s songs at 44.1 kHz; mean dB; 'above 4k' = both signals high-passed at "
                f"4096 Hz; load average {load_start:.1f} at the start, {load_average():.1f} at the end",
                ["method", "SDR_voc", "SDR_acc", "SDR_voc>4k", "SDR_acc>4k", "voc_energy>4k_vs_true"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

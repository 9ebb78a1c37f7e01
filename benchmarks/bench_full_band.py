"""Full band vs separating at 8192 Hz: the quality of inference.py's full-band mask mapping.

    .venv/bin/python benchmarks/bench_full_band.py [--model runs/NAME/best.keras] [--tracks 4]

Separates synthetic 30 s 44.1 kHz songs (``synth.synthesize_track``) with
``inference.Separator.apply_mask`` (above 3.84 kHz: the mean mask of 2.88-3.84 kHz), with the
alternatives defined here for ``inference.full_band_mask``'s ``high_band`` (:data:`HIGH_BANDS`),
and by separating at 8192 Hz and upsampling (:func:`telephone`), and prints one table: SDR at 44.1 kHz over the whole band and above 4 kHz (both
signals high-passed at 4096 Hz), and the vocals' energy above 4 kHz against the truth's. The
mask is the oracle ratio mask at 8192 Hz (the best a model could give), or the ``--model``'s.
"""

from __future__ import annotations

import argparse
import sys

from benchlib import load_average, print_table, sdr, synthetic_song

import numpy as np  # noqa: E402

from separation import audio  # noqa: E402
from separation.audio import DEFAULT_PARAMS  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
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


def shrunk_high_band(in_time: np.ndarray, nyquist: float):
    """The default's mean squared: shrunk towards 0 unless the band is clearly vocal."""
    import inference

    row, edge = inference.mean_high_band(in_time, nyquist)
    return row**2, edge


def edge_high_band(in_time: np.ndarray, nyquist: float):
    """The mask at the passband's edge (3840 Hz), repeated upwards."""
    import inference

    edge = inference.PASSBAND * nyquist
    return in_time[int(edge):int(edge) + 1], edge


def top_high_band(in_time: np.ndarray, nyquist: float):
    """Every model bin up to 4088 Hz, then the top one repeated (as ``audio.extend_mask`` does)."""
    edge = min(in_time.shape[0] - 1, nyquist)
    return in_time[int(edge):int(edge) + 1], edge


HIGH_BANDS = {"shrunk": shrunk_high_band, "edge": edge_high_band, "top": top_high_band}


def with_high_band(mixture: np.ndarray, sr: int, mask: np.ndarray, high_band, params=DEFAULT_PARAMS) -> np.ndarray:
    """The vocals under ``mask`` mapped to the full band with another ``high_band`` rule."""
    import inference

    n_fft, hop = inference.frame_grid(sr, params)
    return audio.masked_istft(mixture, lambda frames: inference.full_band_mask(mask, sr, frames, params,
                                                                               high_band=high_band), n_fft, hop)


def telephone(separator, mixture: np.ndarray, sr: int, mask: np.ndarray) -> np.ndarray:
    """The vocals separated at the model's rate and upsampled: nothing above 4 kHz."""
    rate = separator.params.sample_rate
    vocals = separator.apply_mask(audio.resample(mixture, sr, rate), rate, mask)
    return audio.fit_length(audio.resample(vocals, rate, sr), mixture.shape[0])


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    import inference

    load_start = load_average()
    params, model = DEFAULT_PARAMS, None
    if args.model:
        import unet_model

        model, params = unet_model.load_model(args.model)
    separator = inference.Separator(model if model is not None else (lambda patches: patches), params)
    sr = 44100
    results: dict[str, list] = {}
    for seed in range(args.tracks):
        vocals, accompaniment = synthetic_song(30.0, sr, seed=100 + seed)
        mixture = vocals + accompaniment
        if model is not None:
            mix_mag = audio.magnitude(audio.resample(audio.to_mono(mixture), sr, params.sample_rate), params)
            mask = separator.mask(mix_mag)
        else:
            mask = oracle_mask(vocals, accompaniment, sr)
        candidates = {
            "full band, above 3.84 kHz: mean of 2.88-3.84 kHz (default)":
                separator.apply_mask(mixture, sr, mask),
            "full band, above 3.84 kHz: (mean of 2.88-3.84 kHz)^2": with_high_band(mixture, sr, mask, shrunk_high_band, params),
            "full band, above 3.84 kHz: mask at 3.84 kHz": with_high_band(mixture, sr, mask, edge_high_band, params),
            "full band, above 4.09 kHz: model's top bin (4088 Hz)": with_high_band(mixture, sr, mask, top_high_band, params),
            "at 8192 Hz, vocals upsampled (nothing above 4 kHz)": telephone(separator, mixture, sr, mask),
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

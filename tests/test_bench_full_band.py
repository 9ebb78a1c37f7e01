"""The alternatives benchmarks/bench_full_band.py compares with inference.py's full-band mask
(moved there from inference.py): what each fills the band above the model's with."""

import sys
from pathlib import Path

import numpy as np
import pytest

import inference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_full_band  # noqa: E402


def noise(seconds, sr, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def test_high_band_alternatives():
    """A mask linear in frequency and time: each rule's value above its edge, frame by frame."""
    sr, frames = 44100, 40
    bins_hz = np.arange(512) * 8.0  # model bin j is 8j Hz
    times = np.arange(frames) * 768 / 8192
    mask = (bins_hz[:, None] / 4096 + times[None, :] / 100).astype(np.float32)
    n_fft, hop = inference.frame_grid(sr)
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    full_times = np.arange(frames - 2) * hop / sr
    expected = freqs[:, None] / 4096 + full_times[None, :] / 100
    high = freqs > 3840

    def mapped(rule):
        return inference.full_band_mask(mask, sr, range(frames - 2), high_band=bench_full_band.HIGH_BANDS[rule])

    band_mean = bins_hz[(bins_hz >= 2880) & (bins_hz <= 3840)].mean() / 4096 + full_times / 100
    shrunk = mapped("shrunk")
    np.testing.assert_allclose(shrunk[high], np.broadcast_to(band_mean**2, shrunk[high].shape), atol=1e-4)
    edge = mapped("edge")
    np.testing.assert_allclose(edge[high], np.broadcast_to(3840 / 4096 + full_times / 100, edge[high].shape), atol=1e-4)
    top = mapped("top")
    below_top = freqs <= 4088
    np.testing.assert_allclose(top[below_top], expected[below_top], atol=1e-5)
    np.testing.assert_allclose(top[~below_top], np.broadcast_to(4088 / 4096 + full_times / 100,
                                                                top[~below_top].shape), atol=1e-4)


def test_the_telephone_route_loses_everything_above_4khz():
    sr = 44100
    t = np.arange(8 * sr) / sr
    x = (noise(8.0, sr, 2) + 0.2 * np.sin(2 * np.pi * 9000 * t)[:, None]).astype(np.float32)
    separator = inference.Separator(lambda patches: np.full(patches.shape, 0.5, np.float32))
    mix_mag = inference.audio.magnitude(inference.audio.resample(inference.audio.to_mono(x), sr, 8192))
    vocals = bench_full_band.telephone(separator, x, sr, separator.mask(mix_mag))
    spec = np.abs(np.fft.rfft(vocals, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(vocals), 1 / sr)
    mix = np.abs(np.fft.rfft(x, axis=0)) ** 2
    assert vocals.shape == x.shape
    assert spec[freqs > 4200].sum() / mix[freqs > 4200].sum() < 1e-3
    assert spec[freqs < 3000].sum() / mix[freqs < 3000].sum() == pytest.approx(0.25, rel=0.05)

"""The audio core: parameters, I/O, resampling, the STFT pair and normalisation."""

import json
import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from separation import audio
from separation.audio import AudioError, AudioParams
from separation.errors import UserError

SR = 8192


def tone(freq=440.0, seconds=1.0, sr=SR, channels=2, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def noise(seconds=3.0, sr=SR, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def error_db(x, y):
    return 10 * np.log10(np.sum((x - y) ** 2) / np.sum(x**2))


# ---------------------------------------------------------------------------- parameters


def test_default_params_are_the_papers():
    p = audio.DEFAULT_PARAMS
    assert (p.sample_rate, p.n_fft, p.hop_length, p.patch_frames, p.n_bins) == (8192, 1024, 768, 128, 512)
    assert p.patch_seconds == pytest.approx(12.0, abs=0.1)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_bins": 576}, r"n_fft/2\+1=513"),
        ({"patch_frames": 100}, "use 64"),
        ({"n_bins": 500}, "use 448"),
        ({"hop_length": 2048}, "at most n_fft"),
        ({"n_fft": 1023}, "even"),
        ({"sample_rate": 0}, "positive integer"),
        ({"sample_rate": 8192.0}, "positive integer"),
    ],
)
def test_bad_params_say_how_to_fix(kwargs, words):
    with pytest.raises(UserError, match=words):
        AudioParams(**kwargs)


def test_params_json_round_trip_and_refusals(tmp_path):
    p = AudioParams(n_fft=256, hop_length=192, n_bins=128, patch_frames=64)
    p.save(tmp_path / "audio_params.json")
    assert AudioParams.load(tmp_path / "audio_params.json") == p
    (tmp_path / "bad.json").write_text(json.dumps({**p.to_dict(), "window": "hann"}))
    with pytest.raises(UserError, match="unknown audio parameter.*window"):
        AudioParams.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        AudioParams.load(tmp_path / "missing.json")
    with pytest.raises(UserError, match="n_fft: 1024 vs 256.*retrain"):
        audio.DEFAULT_PARAMS.check_same(p, "the model", "retrain")
    audio.DEFAULT_PARAMS.check_same(AudioParams(), "the model", "retrain")


# ---------------------------------------------------------------------------- reading


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_load_soundfile_formats(tmp_path, ext):
    rate = 8000 if ext == "mp3" else SR  # MPEG has no 8192 Hz rate
    x = tone(seconds=1.0, sr=rate)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, rate)
    y, sr = audio.load_audio(path)
    assert sr == rate and y.dtype == np.float32 and y.ndim == 2 and y.shape[1] == 2
    assert abs(len(y) - len(x)) < 0.1 * SR  # mp3 pads with encoder delay
    if ext in ("wav", "flac"):
        np.testing.assert_allclose(y, x, atol=1e-4)


def test_load_m4a_through_ffmpeg(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg missing: the README's install command installs it")
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(seconds=2.0, sr=44100), 44100)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    y, sr = audio.load_audio(m4a)
    assert sr == 44100 and y.shape[1] == 2 and abs(len(y) - 2 * 44100) < 4096
    half, _ = audio.load_audio(m4a, offset=0.5, duration=1.0, mono=True)
    assert half.shape[1] == 1 and abs(len(half) - 44100) < 2048


def test_offset_duration_mono_and_resampling(tmp_path):
    x = tone(seconds=2.0)
    sf.write(tmp_path / "a.wav", x, SR)
    y, _ = audio.load_audio(tmp_path / "a.wav", offset=0.5, duration=1.0)
    np.testing.assert_allclose(y, x[SR // 2: SR // 2 + SR], atol=1e-4)
    m, _ = audio.load_audio(tmp_path / "a.wav", mono=True)
    np.testing.assert_allclose(m[:, 0], x.mean(axis=1), atol=1e-4)
    r, sr = audio.load_audio(tmp_path / "a.wav", sr=44100)
    assert sr == 44100 and abs(len(r) - 2 * 44100) <= 1
    # the 440 Hz tone stays at 440 Hz after resampling
    spectrum = np.abs(np.fft.rfft(r[:, 0]))
    assert np.argmax(spectrum) * 44100 / len(r) == pytest.approx(440, abs=1)


def test_resample_round_trip_keeps_a_band_limited_signal():
    x = tone(freq=1000, seconds=1.0, sr=44100)
    y = audio.resample(audio.resample(x, 44100, 8192), 8192, 44100)
    assert y.shape == x.shape
    assert error_db(x[2000:-2000], y[2000:-2000]) < -40


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("this is not audio"), "cannot read as audio"),
        (lambda p: sf.write(p, np.zeros((0, 2), np.float32), SR), "no audio samples"),
        (lambda p: sf.write(p, np.full((100, 1), np.nan, np.float32), SR, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: sf.write(p, np.full((100, 1), np.inf, np.float32), SR, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: p.write_bytes(open_wav_head()), "cannot read as audio"),
    ],
    ids=["missing", "text", "empty", "nan", "inf", "truncated"],
)
def test_bad_files_name_the_file(tmp_path, make, words):
    path = tmp_path / "bad song.wav"
    make(path)
    with pytest.raises(AudioError, match=words) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def open_wav_head():
    """The first 30 bytes of a WAV file: a header cut off in the middle."""
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(), SR, format="WAV")
    return buf.getvalue()[:30]


def test_corrupt_m4a_names_the_file(tmp_path):
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(AudioError, match="song.m4a"):
        audio.load_audio(path)


# ---------------------------------------------------------------------------- writing


def test_save_is_atomic_and_never_clips(tmp_path):
    path = tmp_path / "out.wav"
    audio.save_audio(path, tone(), SR)
    assert sf.info(path).subtype == "PCM_16"
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    loud = tone(amp=1.5)
    with pytest.warns(UserWarning, match="exceeds full scale"):
        audio.save_audio(path, loud, SR)
    back, _ = audio.load_audio(path)
    np.testing.assert_allclose(back, loud, atol=1e-6)
    with pytest.raises(AudioError, match="FLAC cannot hold it"):
        audio.save_audio(tmp_path / "out.flac", loud, SR)
    assert not (tmp_path / "out.flac").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temporary files left


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.wav"
    audio.save_audio(path, tone(), SR)
    before = path.read_bytes()
    with pytest.raises(AudioError, match="NaN"):
        audio.save_audio(path, np.full((10, 1), np.nan, np.float32), SR)
    with pytest.raises(ValueError):
        audio.save_audio(path, np.zeros((2, 2, 2), np.float32), SR)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_save_into_missing_or_read_only_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        audio.save_audio(tmp_path / "nope" / "a.wav", tone(), SR)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")  # root ignores permissions: nothing to test then
            probe.unlink()
        except PermissionError:
            with pytest.raises(UserError, match="not writable"):
                audio.save_audio(locked / "a.wav", tone(), SR)
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------- STFT


def test_fast_fft_length_is_the_next_even_length_of_small_primes():
    """5512.5 samples (the model's window at 44.1 kHz) round up to 5544 = 2^3 3^2 7 11, not 5514 = 2 3 919."""
    assert audio.fast_fft_length(5513) == 5544 and audio.fast_fft_length(1024) == 1024
    for n in (2, 3, 97, 1025, 4097, 6001):
        length, rest = audio.fast_fft_length(n), audio.fast_fft_length(n)
        for prime in (2, 3, 5, 7, 11):
            while rest % prime == 0:
                rest //= prime
        assert length >= n and length % 2 == 0 and rest == 1


def test_stft_shapes_follow_the_layout():
    x = noise(seconds=3.0)
    spec = audio.stft(x)
    assert spec.shape == (513, audio.n_frames(len(x)), 2)
    assert audio.stft(x[:, 0]).shape == (513, audio.n_frames(len(x)))
    assert audio.magnitude(x[:, :1]).shape == (512, audio.n_frames(len(x)))
    with pytest.raises(ValueError, match="mono"):
        audio.magnitude(x)


@pytest.mark.parametrize("extra", [0, 100, 384, 600, 767], ids=lambda e: f"len%hop={e}")
def test_stft_round_trip_below_minus_60_db(extra):
    """Whatever the length, the last samples too (hop 768 > n_fft/2 leaves ends uncovered unless padded)."""
    x = noise(seconds=5.0)[: 50 * 768 + extra]
    y = audio.istft(audio.stft(x), len(x))
    assert y.shape == x.shape and y.dtype == np.float32
    assert error_db(x, y) < -60
    assert error_db(x[-200:], y[-200:]) < -60


def test_512_bin_round_trip_restores_the_nyquist_bin():
    """Drop the Nyquist bin, apply a unit mask of the model's 512 bins, reconstruct: exact."""
    x = noise(seconds=5.0)
    spec = audio.stft(x)
    mask = np.ones_like(np.abs(audio.model_bins(spec)), dtype=np.float32)
    assert mask.shape[0] == 512
    y = audio.istft(audio.apply_mask(spec, mask), len(x))
    assert error_db(x, y) < -60
    # the restored Nyquist row takes the mask of bin 511
    ramp = np.linspace(0, 1, 512, dtype=np.float32)[:, None, None] * np.ones_like(mask)
    masked = audio.apply_mask(spec, ramp)
    np.testing.assert_allclose(masked[512], spec[512] * ramp[511])


def test_stft_overrides_for_other_rates():
    x = noise(seconds=2.0, sr=44100, channels=1)[:, 0]
    spec = audio.stft(x, n_fft=5512, hop_length=4134)
    assert spec.shape[0] == 5512 // 2 + 1
    assert error_db(x, audio.istft(spec, len(x), n_fft=5512, hop_length=4134)) < -60


@pytest.mark.parametrize("n_fft,hop", [(1024, 768), (5512, 4134), (1024, 256)])
@pytest.mark.parametrize("samples", [100, 1023, 8192 * 3 + 17, 300 * 128 + 5], ids=lambda n: f"n={n}")
@pytest.mark.parametrize("channels", [None, 1, 2], ids=lambda c: f"ch={c}")
def test_stft_pair_equals_librosa(n_fft, hop, samples, channels):
    """The scipy.fft STFT pair is librosa's (centred, zero-padded, periodic Hann) on the end-padded signal.

    Covers signals shorter than a window and longer than one FFT block (300 * 128 samples at hop
    256 is 152 frames > audio.FFT_BLOCK), mono 1-D, one and two channels.
    """

    import librosa

    rng = np.random.default_rng(samples)
    x = rng.standard_normal(samples if channels is None else (samples, channels)).astype(np.float32)
    spec = audio.stft(x, n_fft=n_fft, hop_length=hop)
    padded = np.pad(x, [(0, hop)] + [(0, 0)] * (x.ndim - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about signals shorter than a window
        ref = librosa.stft(padded.T, n_fft=n_fft, hop_length=hop, window="hann", center=True)
        ref = ref if x.ndim == 1 else np.moveaxis(ref, 0, -1)
        assert spec.shape == ref.shape and spec.dtype == np.complex64
        assert np.abs(spec - ref).max() < 1e-5 * np.abs(ref).max()
        y = audio.istft(spec, samples, n_fft=n_fft, hop_length=hop)
        ref_y = librosa.istft(spec if x.ndim == 1 else np.moveaxis(spec, -1, 0), n_fft=n_fft, hop_length=hop,
                              window="hann", center=True, length=samples)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref_y.T, atol=1e-5)

# ---------------------------------------------------------------------------- normalisation


def test_normalize_patches_shares_one_factor_per_patch():
    rng = np.random.default_rng(1)
    mix = rng.uniform(0, 50, (3, 8, 4, 1)).astype(np.float32)
    mask = rng.uniform(0, 1, mix.shape).astype(np.float32)
    vocals = mask * mix
    mix[2] = 0  # a silent patch is not blown up
    n_mix, n_voc = audio.normalize_patches(mix, vocals)
    np.testing.assert_allclose(n_mix[:2].max(axis=(1, 2, 3)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(n_voc[:2], mask[:2] * n_mix[:2], rtol=1e-5)  # target is still mask x input
    assert np.all(n_mix[2] == 0)


# ---------------------------------------------------------------------------- CLI errors

"""production.py: each effect does what its name says, deterministically, and the dev set is exact."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from separation import production
from separation.production import EFFECTS, produce

SR = 8192


def sine(freq: float, seconds: float = 2.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def voice_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Harmonic notes (200 Hz fundamental, 10 harmonics) in 0.25 s bursts separated by gaps."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 11))
    gate = (np.floor(t * 4) % 2 == 0).astype(float)
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.2 * x * gate + noise).astype(np.float32)


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(freqs >= low) & (freqs < high)].sum())


def crest(x: np.ndarray, frame: int = SR // 20) -> float:
    """Crest factor of the 50 ms RMS envelope: loudest frame over the mean (what a compressor evens out)."""
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    return float(rms.max() / np.sqrt(np.mean(rms ** 2)))


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_effect_keeps_shape_dtype_level_and_is_deterministic(effect):
    x = voice_like()
    a = produce(x, SR, np.random.default_rng(3), (effect,))
    b = produce(x, SR, np.random.default_rng(3), (effect,))
    c = produce(x, SR, np.random.default_rng(4), (effect,))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.allclose(a, x, atol=1e-3)
    assert np.sqrt(np.mean(a ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-3)


def test_full_chain_is_deterministic_and_finite():
    x = voice_like(seconds=12.0)
    a = produce(x, SR, np.random.default_rng(0), EFFECTS)
    np.testing.assert_array_equal(a, produce(x, SR, np.random.default_rng(0), EFFECTS))
    assert a.shape == x.shape and np.isfinite(a).all()


def test_settings_of_an_effect_do_not_depend_on_the_others_named():
    x = voice_like()
    rng = np.random.default_rng(1)
    alone = production.effect_chain(("reverb",), SR, rng, 1.0)[0]
    with_more = production.effect_chain(("highpass", "reverb"), SR, np.random.default_rng(1), 1.0)[-1]
    assert alone.room_size == with_more.room_size and alone.wet_level == with_more.wet_level
    assert x.size  # the input is not needed to draw settings


def test_highpass_removes_energy_below_its_cutoff():
    x = (sine(20) + sine(1000)).astype(np.float32)
    y = produce(x, SR, np.random.default_rng(0), ("highpass",))
    assert production.HIGHPASS_HZ[0] >= 60
    assert band_energy(y, 15, 25) < 0.05 * band_energy(x, 15, 25)  # 12 dB/octave, >= 1.58 octaves below
    assert band_energy(y, 900, 1100) > 0.8 * band_energy(x, 900, 1100)


def test_compressor_lowers_the_crest_factor():
    x = voice_like()
    x[: SR // 4] *= 4  # one loud note over quieter ones
    y = produce(x, SR, np.random.default_rng(0), ("compressor",))
    assert crest(y) < 0.9 * crest(x)


def test_reverb_lengthens_the_decay_after_a_burst():
    x = np.zeros(2 * SR, dtype=np.float32)
    x[SR // 2: SR // 2 + SR // 10] = sine(500, 0.1)
    y = produce(x, SR, np.random.default_rng(0), ("reverb",))
    after = slice(SR // 2 + SR // 10 + SR // 20, SR)  # 50 ms after the burst ends
    assert np.sum(y[after] ** 2) > 1e-4 * np.sum(y ** 2)
    assert np.sum(x[after] ** 2) == 0


def test_saturation_adds_harmonics_to_a_sine():
    x = sine(300)
    y = produce(x, SR, np.random.default_rng(0), ("saturation",))
    assert band_energy(y, 850, 950) > 1e-3 * band_energy(y, 250, 350)  # the 3rd harmonic (odd: tanh)
    assert band_energy(x, 850, 950) < 1e-6 * band_energy(x, 250, 350)


def test_eq_boosts_presence_against_low_mids():
    x = (sine(300) + sine(3000)).astype(np.float32)
    y = produce(x, SR, np.random.default_rng(0), ("eq",))
    ratio_in = band_energy(x, 2900, 3100) / band_energy(x, 250, 350)
    ratio_out = band_energy(y, 2900, 3100) / band_energy(y, 250, 350)
    assert ratio_out > 1.5 * ratio_in


def test_pitch_moves_a_sine_by_the_drawn_semitones():
    rng = np.random.default_rng(5)
    semitones = production.effect_chain(("pitch",), SR, np.random.default_rng(5), 1.0)[0].semitones
    y = produce(sine(440, 3.0), SR, rng, ("pitch",))
    spec = np.abs(np.fft.rfft(y[SR // 2: -SR // 2]))
    peak = np.fft.rfftfreq(len(y) - SR, 1 / SR)[np.argmax(spec)]
    assert peak == pytest.approx(440 * 2 ** (semitones / 12), rel=0.02)
    assert abs(semitones) > 0.1


def test_doubling_spreads_a_sine_into_sidebands():
    x = sine(1000, 3.0)
    y = produce(x, SR, np.random.default_rng(0), ("doubling",))
    def spread(z):  # energy near but not at the tone, against the tone
        return (band_energy(z, 960, 995) + band_energy(z, 1005, 1040)) / band_energy(z, 995, 1005)
    assert spread(y) > 10 * spread(x) + 1e-4


def test_silence_stays_silent_for_every_effect():
    x = np.zeros(SR, dtype=np.float32)
    y = produce(x, SR, np.random.default_rng(0), EFFECTS)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all() and not y.any()


def test_unknown_effect_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="flanger.*highpass"):
        produce(voice_like(), SR, np.random.default_rng(0), ("flanger",))


def test_stereo_input_is_refused():
    with pytest.raises(ValueError, match="mono"):
        produce(np.zeros((SR, 2), np.float32), SR, np.random.default_rng(0), ("reverb",))


def test_dev_song_stems_add_up_exactly_and_do_not_clip():
    rng = np.random.default_rng(0)
    sr = production.DEV_SR
    t = np.arange(2 * sr) / sr
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    acc = (0.8 * np.random.default_rng(1).standard_normal((2 * sr, 2))).astype(np.float32)
    song = production.make_song(voice, acc, production.DEV_PRESETS["rock"], 3.0, rng)
    assert song["vocals"].shape == (2 * sr, 2)
    np.testing.assert_array_equal(song["mixture"], song["vocals"] + song["accompaniment"])
    assert np.max(np.abs(song["mixture"])) == pytest.approx(production.DEV_PEAK, abs=1e-6)
    level = 10 * np.log10(np.mean(song["vocals"] ** 2) / np.mean(song["accompaniment"] ** 2))
    assert level == pytest.approx(3.0, abs=0.01)


@pytest.mark.slow
def test_devset_command_writes_exact_stems_deterministically(tmp_path):
    mir1k = tmp_path / "mir1k" / "Wavfile"
    mir1k.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for singer in ("Ani", "yifen", "amy"):  # amy is a training singer: must not appear
        for clip in (1, 2):
            sf.write(mir1k / f"{singer}_1_{clip:02d}.wav", 0.1 * rng.standard_normal((SR, 2)), SR)
    music = tmp_path / "music" / "test" / "pkg"
    music.mkdir(parents=True)
    sf.write(music / "song.ogg", 0.1 * rng.standard_normal((35 * 44100, 2)), 44100)
    sf.write(music / "short.ogg", 0.1 * rng.standard_normal((5 * 44100, 2)), 44100)  # too short: never used
    out = tmp_path / "dev"
    argv = ["devset", "--mir1k", str(mir1k.parent), "--instrumental", str(tmp_path / "music"), "--out", str(out)]
    assert production.main(argv) == 0
    tracks = sorted(p.name for p in (out / "test").iterdir())
    assert [t.split("--")[0] for t in tracks] == ["Ani_1", "yifen_1"]
    assert all(t.endswith("--song") for t in tracks)
    first = {p.name: p.read_bytes() for p in (out / "test" / tracks[0]).iterdir()}
    mix, sr = sf.read(out / "test" / tracks[0] / "mixture.wav", dtype="float64")
    voc, _ = sf.read(out / "test" / tracks[0] / "vocals.wav", dtype="float64")
    acc, _ = sf.read(out / "test" / tracks[0] / "accompaniment.wav", dtype="float64")
    assert sr == 44100 and mix.shape == (2 * SR * 44100 // SR, 2)
    np.testing.assert_array_equal(mix, voc + acc)
    assert production.main(argv) == 0  # again, over the existing folder: same bytes
    assert {p.name: p.read_bytes() for p in (out / "test" / tracks[0]).iterdir()} == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dev")]
    # --levels: the same excerpts and presets, only the vocal level moves (here to exactly -10 dB)
    low = tmp_path / "dev-low"
    assert production.main(argv[:-1] + [str(low), "--levels", "-10", "-10"]) == 0
    assert sorted(p.name for p in (low / "test").iterdir()) == tracks
    voc_low, _ = sf.read(low / "test" / tracks[0] / "vocals.wav", dtype="float64")
    acc_low, _ = sf.read(low / "test" / tracks[0] / "accompaniment.wav", dtype="float64")
    assert 10 * np.log10(np.mean(voc_low**2) / np.mean(acc_low**2)) == pytest.approx(-10.0, abs=0.01)
    assert np.corrcoef(acc_low.ravel(), acc.ravel())[0, 1] > 0.999  # the same accompaniment excerpt


def test_devset_levels_low_above_high_is_one_line_error(tmp_path, capsys):
    from separation import cli

    argv = ["devset", "--mir1k", str(tmp_path), "--instrumental", str(tmp_path), "--out", str(tmp_path / "dev"),
            "--levels", "2", "-10"]
    assert cli.run_cli(production.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --levels 2 -10") and "\n" not in err
    assert not (tmp_path / "dev").exists()


def test_devset_without_instrumental_test_split_is_one_line_error(tmp_path, capsys):
    from separation import cli

    (tmp_path / "mir1k").mkdir()
    (tmp_path / "music").mkdir()
    argv = ["devset", "--mir1k", str(tmp_path / "nowhere"), "--instrumental", str(tmp_path / "music"),
            "--out", str(tmp_path / "dev")]
    assert cli.run_cli(production.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mir1k") and "\n" not in err
    assert not (tmp_path / "dev").exists()

"""Tests of inference.py: overlap-add, full-band masking, the Separator and the CLI's files and errors.

Models are tiny untrained two-level U-Nets (a few hundred weights, the default 512 x 128 patches);
where a test needs to know the mask, a constant-mask callable stands in for the model.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separation import audio, cli
import inference
from separation.stems import STEMS, song_name
import unet_model
from separation.audio import AudioParams, DEFAULT_PARAMS
from separation.errors import UserError



def noise(seconds, sr, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def constant_mask(value):
    """A stand-in for the model: the same mask everywhere (normalised patches -> mask)."""
    return lambda patches: np.full(patches.shape, value, dtype=np.float32)


def band_energy(x, sr, lo, hi=None):
    """Energy of ``(samples, channels)`` audio between ``lo`` and ``hi`` Hz (rfft of each channel)."""
    spec = np.abs(np.fft.rfft(x, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return spec[(freqs >= lo) & (freqs < (hi or sr))].sum()


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    """The U-Net of conftest.tiny_model_dir."""
    return unet_model.load_model(tiny_model_dir)[0]


@pytest.fixture(scope="module")
def separator(tiny_model):
    return inference.Separator(tiny_model)


def write(path, x, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr)
    return path


# ---------------------------------------------------------------------------- overlap-add


@pytest.mark.parametrize("frames", [1, 50, 128, 129, 300, 1000])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_overlap_add_covers_every_frame_and_crops(frames, overlap):
    x = np.random.default_rng(frames).random((3, frames), dtype=np.float32)
    calls = []

    def identity(batch):
        calls.append(len(batch))
        assert batch.shape[1:] == (3, 128)
        return batch

    y = inference.overlap_add(x, identity, 128, overlap=overlap, batch_size=4)
    # weighted means of identical copies give the input back only if every frame got weight
    np.testing.assert_allclose(y, x, rtol=1e-6)
    assert sum(calls) == inference.n_segments(frames, 128, overlap)
    assert max(calls) <= 4


def test_overlap_add_weights_favour_segment_centres():
    """Each segment returns its own number; a frame's result leans to the segment whose centre
    is nearest (triangular weights), and it is a convex mix of the covering segments."""
    x = np.zeros((1, 256), dtype=np.float32)
    starts = []

    def segment_id(batch):
        out = np.empty_like(batch)
        for i in range(len(batch)):
            out[i] = len(starts)
            starts.append(len(starts))
        return out

    y = inference.overlap_add(x, segment_id, 128, overlap=0.5, batch_size=1)[0]
    assert len(starts) == 3  # segments at 0, 64, 128
    assert y[0] == 0 and y[-1] == 2  # the ends are covered by one segment only
    # at a segment's centre, that segment dominates; midway between two centres they weigh alike
    assert y[64] == pytest.approx(0, abs=0.02) and y[128] == pytest.approx(1, abs=0.02)
    assert y[96] == pytest.approx(0.5, abs=0.02) and y[160] == pytest.approx(1.5, abs=0.02)
    assert (np.diff(y) >= -1e-6).all() and y.min() >= 0 and y.max() <= 2


def test_overlap_add_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        inference.overlap_add(np.zeros((1, 10)), lambda b: b, 8, overlap=1.0)


# ---------------------------------------------------------------------------- full-band mask


def test_frame_grid_keeps_the_models_frame_duration():
    assert inference.frame_grid(8192) == (1024, 768)
    assert inference.frame_grid(16384) == (2048, 1536)
    n_fft, hop = inference.frame_grid(44100)
    assert n_fft % 2 == 0 and (n_fft, hop) == (5544, 4134)  # 5544 = 2^3 3^2 7 11: a fast FFT size
    assert hop / 44100 == pytest.approx(768 / 8192, rel=1e-4)
    assert n_fft / 44100 == pytest.approx(1024 / 8192, rel=0.01)
    for sr in (11025, 22050, 48000, 96000):
        n_fft, hop = inference.frame_grid(sr)
        assert n_fft % 2 == 0 and 0 <= n_fft / sr - 1024 / 8192 < 0.01 * 1024 / 8192


def test_full_band_mask_maps_time_and_frequency():
    """A mask that is a linear function of frequency (below the passband) and of time comes out
    as the same function of the full-rate bins' frequencies and frames' times."""
    sr, frames = 44100, 40
    bins_hz = np.arange(512) * 8.0  # model bin j is 8j Hz
    times = np.arange(frames) * 768 / 8192
    mask = (bins_hz[:, None] / 4096 + times[None, :] / 100).astype(np.float32)
    out = inference.full_band_mask(mask, sr, range(frames - 2))
    n_fft, hop = inference.frame_grid(sr)
    assert out.shape == (n_fft // 2 + 1, frames - 2)
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    full_times = np.arange(frames - 2) * hop / sr
    expected = freqs[:, None] / 4096 + full_times[None, :] / 100
    low, high = freqs <= 3840, freqs > 3840
    np.testing.assert_allclose(out[low], expected[low], atol=1e-5)
    # above the passband: the mean of the 2880-3840 Hz band, frame by frame
    band_mean = bins_hz[(bins_hz >= 2880) & (bins_hz <= 3840)].mean() / 4096 + full_times / 100
    np.testing.assert_allclose(out[high], np.broadcast_to(band_mean, out[high].shape), atol=1e-4)


def test_full_band_mask_below_the_models_rate():
    """At 6000 Hz every bin lies under the model's band: mapped by frequency up to the passband."""
    mask = np.tile(np.linspace(0, 1, 512, dtype=np.float32)[:, None], (1, 10))
    out = inference.full_band_mask(mask, 6000, range(5))
    n_fft, _ = inference.frame_grid(6000)
    freqs = np.arange(n_fft // 2 + 1) * 6000 / n_fft
    low = freqs <= 0.9375 * 3000
    np.testing.assert_allclose(out[low, 0], freqs[low] / 8 / 511, atol=1e-5)
    assert np.isfinite(out).all() and out.max() <= 1


def test_chunked_masking_equals_one_piece():
    x = noise(20.0, 22050, channels=2)
    n_fft, hop = inference.frame_grid(22050)
    mask = np.random.default_rng(1).random((n_fft // 2 + 1, 2000), dtype=np.float32)

    def mask_for(frames):
        return mask[:, frames]

    whole = audio.masked_istft(x, mask_for, n_fft, hop, chunk_frames=10_000)
    chunked = audio.masked_istft(x, mask_for, n_fft, hop, chunk_frames=7)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


@pytest.mark.parametrize("remainder", [0, 1000, 2800, 4133])
def test_unit_mask_gives_the_mixture_back_to_the_last_sample(remainder):
    """Also when the signal's end lies past the last centred frame's window: with hop 4134 >
    n_fft/2 = 2756, a remainder of more than 2756 samples after the last frame centre."""
    n_fft, hop = inference.frame_grid(44100)
    x = noise(5.0, 44100, channels=1)[:50 * hop + remainder]
    y = audio.masked_istft(x, lambda f: np.ones((n_fft // 2 + 1, len(f)), np.float32), n_fft, hop)
    np.testing.assert_allclose(y, x, atol=1e-5)


# ---------------------------------------------------------------------------- Separator


@pytest.mark.parametrize("sr, seconds, channels", [
    (44100, 13.0, 2), (22050, 3.0, 1), (8192, 30.0, 1), (48000, 0.3, 3), (16000, 0.0001, 2), (11025, 1.0, 2),
])
def test_separate_keeps_rate_channels_length_and_sums_to_the_mixture(separator, sr, seconds, channels):
    x = noise(seconds, sr, channels)
    stems = separator.separate(x, sr)
    assert set(stems) == {"vocals", "accompaniment"}
    for stem in stems.values():
        assert stem.shape == x.shape and stem.dtype == np.float32 and np.isfinite(stem).all()
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], x, atol=1e-6)
    # an untrained sigmoid mask lies strictly inside (0, 1): both stems carry part of the song
    assert 0 < np.abs(stems["vocals"]).sum() < np.abs(x).sum() * 1.5


def test_separate_accepts_1d_mono(separator):
    x = noise(2.0, 16000, 1)[:, 0]
    stems = separator.separate(x, 16000)
    assert stems["vocals"].shape == x.shape


@pytest.mark.parametrize("x, sr, words", [
    (np.zeros((0, 2), np.float32), 44100, "non-empty"),
    (np.zeros((10, 2, 2), np.float32), 44100, "non-empty"),
    (np.full((100, 1), np.nan, np.float32), 44100, "NaN"),
    (np.zeros((100, 1), np.float32), 0, "sample rate"),
])
def test_separate_rejects_bad_arrays(separator, x, sr, words):
    with pytest.raises(ValueError, match=words):
        separator.separate(x, sr)


def test_a_constant_mask_scales_the_whole_band():
    """Mask 0.3 everywhere: vocals = 0.3 x mixture at every frequency, up to 22 kHz."""
    x = noise(10.0, 44100, 2)
    vocals = inference.Separator(constant_mask(0.3)).separate(x, 44100)["vocals"]
    np.testing.assert_allclose(vocals, 0.3 * x, atol=1e-5)


def test_vocals_keep_energy_above_4khz():
    sr = 44100
    t = np.arange(8 * sr) / sr
    high = 0.2 * np.sin(2 * np.pi * 9000 * t)[:, None] * np.ones((1, 2))
    x = (noise(8.0, sr, 2) + high).astype(np.float32)
    full = inference.Separator(constant_mask(0.5)).separate(x, sr)
    assert band_energy(full["vocals"], sr, 4200) / band_energy(x, sr, 4200) == pytest.approx(0.25, rel=0.02)
    np.testing.assert_allclose(full["vocals"] + full["accompaniment"], x, atol=1e-6)


def test_vocals_keep_energy_above_4khz_with_a_model(separator):
    x = noise(6.0, 44100, 2)
    vocals = separator.separate(x, 44100)["vocals"]
    assert band_energy(vocals, 44100, 4500) / band_energy(x, 44100, 4500) > 0.01


def test_overlap_changes_only_the_blend(tiny_model):
    x = noise(40.0, 8192, 1)
    a = inference.Separator(tiny_model, overlap=0.0).separate(x, 8192)["vocals"]
    b = inference.Separator(tiny_model, overlap=0.75, batch_size=3).separate(x, 8192)["vocals"]
    assert a.shape == b.shape
    assert 0 < np.abs(a - b).max() < np.abs(x).max()


def test_separator_refuses_a_model_that_does_not_match_the_params(tiny_model):
    with pytest.raises(ValueError, match=r"patch_frames=64.*audio_params.json"):
        inference.Separator(tiny_model, AudioParams(patch_frames=64))


@pytest.mark.parametrize("options, words", [({"overlap": 1.0}, "overlap"), ({"batch_size": 0}, "batch_size"),
                                            ({"precision": "int8"}, "precision"),
                                            ({"post_filter": "median"}, "post_filter"),
                                            ({"post_filter": "wiener", "wiener_iterations": 0}, "wiener_iterations")])
def test_separator_refuses_values_out_of_range(tiny_model, options, words):
    with pytest.raises(ValueError, match=words):
        inference.Separator(tiny_model, **options)


@pytest.mark.parametrize("post_filter", [None, "wiener"])
@pytest.mark.slow
def test_progress_reaches_its_total_once_per_step(tiny_model, post_filter):
    calls = []
    separator = inference.Separator(tiny_model, post_filter=post_filter)
    separator.separate(noise(30.0, 22050, 2), 22050, progress=lambda done, total: calls.append((done, total)))
    totals = {total for _, total in calls}
    assert len(totals) == 1 and calls[-1][0] == totals.pop()
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})  # strictly increasing


def test_separate_file_writes_both_stems_and_refuses_to_overwrite(separator, tmp_path):
    song = write(tmp_path / "in" / "My Song.wav", noise(2.0, 22050, 2), 22050)
    paths = separator.separate_file(song, tmp_path / "out")
    folder = tmp_path / "out" / "My Song"
    assert paths == {stem: folder / f"{stem}.wav" for stem in STEMS}
    mixture, _ = audio.load_audio(song)
    stems = {stem: audio.load_audio(folder / f"{stem}.wav")[0] for stem in STEMS}
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], mixture, atol=2.5 / 32768)
    with pytest.raises(UserError, match="already exists"):
        separator.separate_file(song, tmp_path / "out")
    assert separator.separate_file(song, tmp_path / "out", overwrite=True) == paths


# ---------------------------------------------------------------------------- names and files


@pytest.mark.parametrize("path, name", [
    ("songs/Artist - Title.mp3", "Artist - Title"),
    ("test/Some Track/mixture.wav", "Some Track"),
    ("musdb/A Song.stem.mp4", "A Song"),
    ("a.b.flac", "a.b"),
])
def test_song_names_follow_the_contract(path, name):
    assert song_name(path) == name


def test_cli_separates_files_and_folders(tmp_path, tiny_model_dir, capsys):
    songs = tmp_path / "in"
    write(songs / "b_stereo44k.wav", noise(3.0, 44100, 2), 44100)
    write(songs / "Track One" / "mixture.flac", noise(2.0, 22050, 1), 22050)
    # a stems folder: only its mixture is a song, its stems are not separated
    write(songs / "Track One" / "vocals.flac", noise(2.0, 22050, 1), 22050)
    write(songs / "Track One" / "accompaniment.wav", noise(2.0, 22050, 1), 22050)
    write(songs / "sub" / "c.ogg", noise(1.5, 48000, 2), 48000)
    (songs / "notes.txt").write_text("not audio")
    single = write(tmp_path / "a_mono8k.wav", noise(20.0, 8192, 1), 8192)
    out = tmp_path / "separated"
    assert inference.main([str(single), str(songs), "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    expected = {"a_mono8k": (8192, 1, 20.0), "b_stereo44k": (44100, 2, 3.0), "Track One": (22050, 1, 2.0),
                "c": (48000, 2, 1.5)}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, (sr, channels, seconds) in expected.items():
        mix_path = {"a_mono8k": single, "b_stereo44k": songs / "b_stereo44k.wav",
                    "Track One": songs / "Track One" / "mixture.flac", "c": songs / "sub" / "c.ogg"}[name]
        mixture, _ = audio.load_audio(mix_path)
        stems = {}
        for stem in ("vocals", "accompaniment"):
            info = sf.info(str(out / name / f"{stem}.wav"))
            assert (info.samplerate, info.channels, info.frames) == (sr, channels, round(seconds * sr))
            stems[stem], _ = audio.load_audio(out / name / f"{stem}.wav")
        # 16-bit files: each stem is rounded to 1/32768
        np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], mixture, atol=2.5 / 32768)
    printed = capsys.readouterr().out
    assert printed.count(" -> ") == 4 and str(out / "Track One") in printed


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_cli_reads_a_stem_mp4_mixture(tmp_path, tiny_model_dir):
    """A .stem.mp4's first stream is the mixture; the name drops .stem."""
    path = tmp_path / "Song.stem.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100",
                    "-f", "lavfi", "-i", "sine=frequency=880:duration=2:sample_rate=44100",
                    "-map", "0:a", "-map", "1:a", "-c:a", "aac", str(path)], check=True)
    out = tmp_path / "out"
    assert inference.main([str(path), "-o", str(out), "--model", str(tiny_model_dir / "best.keras")]) == 0
    info = sf.info(str(out / "Song" / "vocals.wav"))
    assert info.samplerate == 44100 and abs(info.frames - 2 * 44100) < 2048  # aac priming/padding


def test_cli_loads_the_model_once_for_many_files(tmp_path, tiny_model_dir, monkeypatch):
    calls = []
    load = unet_model.load_model
    monkeypatch.setattr(unet_model, "load_model", lambda path: calls.append(path) or load(path))
    for i in range(3):
        write(tmp_path / "in" / f"s{i}.wav", noise(1.0, 8192, 1, seed=i), 8192)
    assert inference.main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)]) == 0
    assert len(calls) == 1 and len(list((tmp_path / "out").iterdir())) == 3


# ---------------------------------------------------------------------------- Wiener post-filter


def panned_sources(sr, channels, seconds=10.0):
    """Vocals and accompaniment that overlap in time and frequency (white noise with alternating
    envelopes) and, in stereo, sit at different places in the stereo image."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    vocals = (rng.standard_normal(len(t)) * (0.5 + 0.5 * np.sin(np.pi * t)) ** 2)[:, None] * [1.0, 0.4][:channels]
    accompaniment = (rng.standard_normal(len(t)) * ((0.5 + 0.5 * np.cos(np.pi * t)) ** 2 + 0.2))[:, None] * [0.3, 1.0][:channels]
    return (0.1 * vocals).astype(np.float32), (0.1 * accompaniment).astype(np.float32)


def sdr(reference, estimate):
    return 10 * np.log10((reference**2).sum() / ((reference - estimate) ** 2).sum())


@pytest.mark.parametrize("channels, gain_db", [(2, 3.0), (1, 0.3)])
@pytest.mark.slow
def test_wiener_filter_beats_the_mask_it_starts_from(channels, gain_db):
    """An oracle ratio mask of the mono fold (what the model estimates) applied to every channel
    cannot separate sources that differ in place; the Wiener filter's spatial covariances can
    (in mono it still gains from re-estimating the sources' power spectrograms)."""
    sr = 44100
    vocals, accompaniment = panned_sources(sr, channels)
    mixture = vocals + accompaniment
    mags = [audio.magnitude(audio.resample(audio.to_mono(s), sr, DEFAULT_PARAMS.sample_rate)[:, 0])
            for s in (vocals, accompaniment)]
    mask = mags[0] / (mags[0] + mags[1] + 1e-9)
    masked = inference.Separator(constant_mask(0.5)).apply_mask(mixture, sr, mask)
    wiener = inference.Separator(constant_mask(0.5), post_filter="wiener").apply_mask(mixture, sr, mask)
    assert sdr(vocals, wiener) > sdr(vocals, masked) + gain_db
    assert sdr(accompaniment, mixture - wiener) > sdr(accompaniment, mixture - masked) + gain_db


@pytest.mark.parametrize("sr, seconds, channels", [(44100, 20.0, 2), (22050, 3.0, 1), (8192, 5.0, 2), (16000, 0.01, 2)])
@pytest.mark.slow
def test_wiener_filter_keeps_rate_channels_length_and_sums_to_the_mixture(sr, seconds, channels):
    x = noise(seconds, sr, channels)
    by_patch = inference.Separator(lambda patches: np.clip(patches, 0, 1))  # a mask that varies with the song
    wiener = inference.Separator(by_patch.predict, post_filter="wiener", wiener_iterations=2, chunk_frames=100)
    stems = wiener.separate(x, sr)
    for stem in stems.values():
        assert stem.shape == x.shape and stem.dtype == np.float32 and np.isfinite(stem).all()
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], x, atol=1e-6)
    assert not np.allclose(stems["vocals"], by_patch.separate(x, sr)["vocals"], atol=1e-4)  # it did filter
    assert wiener.separate(x[:, 0], sr)["vocals"].shape == (len(x),)  # 1-D mono in, 1-D out


def test_wiener_stft_at_the_models_rate_takes_the_models_own_mask():
    """At 8192 Hz the filter's denser STFT gets the model's mask interpolated in time only: a
    mask that is constant in time gives exactly its own bins (top one up to Nyquist)."""
    mask = np.repeat(np.linspace(0.1, 0.9, DEFAULT_PARAMS.n_bins, dtype=np.float32)[:, None], 20, axis=1)
    seen = []
    separator = inference.Separator(constant_mask(0.5), post_filter="wiener")
    original = inference.wiener_vocals
    try:
        inference.wiener_vocals = lambda spec, m, **kw: seen.append(m) or spec
        separator.apply_mask(noise(1.0, 8192, 1), 8192, mask)
    finally:
        inference.wiener_vocals = original
    expected = audio.extend_mask(mask[:, :1], DEFAULT_PARAMS.n_fft // 2 + 1)
    assert seen and seen[0].shape[1] >= 1 + 8192 // 192  # a quarter of the hop: frames every 192 samples
    np.testing.assert_allclose(seen[0], np.broadcast_to(expected, seen[0].shape), atol=1e-6)


def test_wiener_vocals_with_a_unit_mask_are_the_mixture():
    spec = audio.stft(noise(3.0, 8192, 2))
    mask = np.ones(spec.shape[:2], np.float32)
    np.testing.assert_allclose(inference.wiener_vocals(spec, mask, iterations=2, block_frames=7), spec, atol=1e-5)


def test_cli_wiener_separates_a_file(tmp_path, tiny_model_dir, capsys):
    song = write(tmp_path / "song.wav", noise(4.0, 22050, 2), 22050)
    outputs = {}
    for name, options in (("plain", []), ("wiener", ["--wiener", "--wiener-iterations", "2"])):
        assert inference.main([str(song), "-o", str(tmp_path / name), "--model", str(tiny_model_dir)] + options) == 0
        assert f"{song} -> {tmp_path / name / 'song'}/vocals.wav, " in capsys.readouterr().out
        outputs[name] = {stem: sf.read(str(tmp_path / name / "song" / f"{stem}.wav"))[0] for stem in STEMS}
    x = sf.read(str(song))[0]
    np.testing.assert_allclose(outputs["wiener"]["vocals"] + outputs["wiener"]["accompaniment"], x, atol=1e-4)
    assert not np.allclose(outputs["wiener"]["vocals"], outputs["plain"]["vocals"], atol=1e-4)


# ---------------------------------------------------------------------------- bad input


def run(argv, capsys):
    """The CLI as users run it: exit status and stderr (never a traceback)."""
    status = cli.run_cli(inference.main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_no_model_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(unet_model, "PRETRAINED", tmp_path / "pretrained")
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    status, err = run([str(song), "-o", str(tmp_path / "out")], capsys)
    assert status == 2 and "no pretrained model" in err and "train.py" in err and "--model" in err
    status, err = run([str(song), "--model", str(tmp_path / "nope.keras")], capsys)
    assert status == 2 and "nope.keras" in err and "train.py" in err
    assert not (tmp_path / "out").exists()


def test_the_pretrained_folder_is_the_default(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(unet_model, "PRETRAINED", tiny_model_dir)
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    assert inference.main([str(song), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "s" / "vocals.wav").is_file()


def test_model_saved_with_other_params_is_refused(tmp_path, tiny_model_dir, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tiny_model_dir / "best.keras", other / "best.keras")
    AudioParams(patch_frames=64).save(other / "audio_params.json")
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    status, err = run([str(song), "-o", str(tmp_path / "out"), "--model", str(other)], capsys)
    assert status == 2 and "audio_params.json" in err and "(512, 128, 1)" in err
    assert not (tmp_path / "out" / "s").exists()


def test_unreadable_input_is_skipped_and_reported(tmp_path, tiny_model_dir, capsys):
    good = write(tmp_path / "good.wav", noise(1.0, 8192, 1), 8192)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    missing = tmp_path / "missing.mp3"
    out = tmp_path / "out"
    status, err = run([str(bad), str(missing), str(good), "-o", str(out), "--model", str(tiny_model_dir)], capsys)
    assert status == 1
    assert "bad.wav" in err and "missing.mp3" in err and "2 of 3 inputs failed" in err
    assert (out / "good" / "vocals.wav").is_file() and (out / "good" / "accompaniment.wav").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good"]  # nothing for the bad ones, no temp folders


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, tiny_model_dir, capsys):
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    out = tmp_path / "out"
    (out / "s").mkdir(parents=True)
    (out / "s" / "vocals.wav").write_bytes(b"old")
    status, err = run([str(song), "-o", str(out), "--model", str(tiny_model_dir)], capsys)
    assert status == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "s" / "vocals.wav").read_bytes() == b"old"
    assert not (out / "s" / "accompaniment.wav").exists()
    status, _ = run([str(song), "-o", str(out), "--model", str(tiny_model_dir), "--overwrite"], capsys)
    assert status == 0 and sf.info(str(out / "s" / "vocals.wav")).frames == 8192


def test_unwritable_output_folder(tmp_path, tiny_model_dir, capsys):
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    status, err = run([str(song), "-o", str(blocker), "--model", str(tiny_model_dir)], capsys)
    assert status == 2 and "not a folder" in err and "-o" in err
    status, err = run([str(song), "-o", str(blocker / "sub"), "--model", str(tiny_model_dir)], capsys)
    assert status == 2 and "cannot create the output folder" in err


def test_a_failed_write_leaves_no_partial_stems(tmp_path, tiny_model_dir, monkeypatch, capsys):
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    save = audio.save_audio

    def failing_save(path, x, sr, *args, **kwargs):
        if "accompaniment" in str(path):
            raise audio.AudioError(f"{path}: disk full (simulated)")
        save(path, x, sr, *args, **kwargs)

    monkeypatch.setattr(audio, "save_audio", failing_save)
    out = tmp_path / "out"
    status, err = run([str(song), "-o", str(out), "--model", str(tiny_model_dir)], capsys)
    assert status == 1 and "disk full" in err
    assert list(out.iterdir()) == []  # neither vocals.wav nor the temporary folder


def test_two_songs_with_one_name_are_refused(tmp_path, tiny_model_dir, capsys):
    a = write(tmp_path / "x" / "Song" / "mixture.wav", noise(1.0, 8192, 1), 8192)
    b = write(tmp_path / "y" / "Song.wav", noise(1.0, 8192, 1), 8192)
    status, err = run([str(a), str(b), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)], capsys)
    assert status == 2 and "both be written" in err


@pytest.mark.parametrize("option, words", [(["--overlap", "1"], "--overlap"), (["--batch-size", "0"], "--batch-size"),
                                           (["--wiener", "--wiener-iterations", "0"], "--wiener-iterations"),
                                           (["--wiener", "--wiener-iterations", "two"], "--wiener-iterations"),
                                           (["--wiener-iterations", "2"], "only with --wiener")])
def test_bad_options(tmp_path, tiny_model_dir, capsys, option, words):
    song = write(tmp_path / "s.wav", noise(1.0, 8192, 1), 8192)
    with pytest.raises(SystemExit) as exit_info:  # argparse: one line, exit 2, before any work
        inference.main([str(song), "--model", str(tiny_model_dir)] + option)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and words in err[-1] and "Traceback" not in "".join(err)


def test_a_separator_prepares_its_model_once(tiny_model, monkeypatch):
    """The fast mask model is built (and traced) when the Separator is made, not per song."""
    import keras

    from separation import unet_fast

    built = []
    build = unet_fast.inference_mask_model
    monkeypatch.setattr(unet_fast, "inference_mask_model", lambda *a, **k: built.append(1) or build(*a, **k))
    separator = inference.Separator(tiny_model)
    for seconds in (1.0, 2.0):
        separator.separate(noise(seconds, 8192, 1), 8192)
    assert built == [1]
    plain = keras.Sequential([keras.Input((512, 128, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    with pytest.raises(ValueError, match="no layer named 'mask'"):
        inference.Separator(plain)


# ---------------------------------------------------------------------------- the command line as a process

@pytest.mark.slow
def test_command_line_process_writes_the_stems_and_its_exit_status(tmp_path, tiny_model_dir, capsys):
    """`python inference.py` as a whole process (Keras' optional imports hidden, TensorFlow's
    start-up log kept out): the same stems as the in-process main(), the device on the first line,
    no oneDNN notice, absl or CUDA lines; and exit status 2 when the stems exist already."""
    song = write(tmp_path / "song.wav", noise(2.0, 44100, 2, seed=9), 44100)
    command = [sys.executable, inference.__file__, str(song), "-o", str(tmp_path / "cli"), "--model", str(tiny_model_dir)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Separating 1 song on ")
    assert "song.wav -> " in proc.stdout and "Traceback" not in proc.stderr
    for noise_word in ("oneDNN", "absl", "cuInit", "cuda", "I0000", "E0000", "W0000"):
        assert noise_word not in proc.stderr, proc.stderr
    assert run([str(song), "-o", str(tmp_path / "api"), "--model", str(tiny_model_dir)], capsys)[0] == 0
    for stem in STEMS:
        np.testing.assert_array_equal(sf.read(tmp_path / "cli" / "song" / f"{stem}.wav")[0],
                                      sf.read(tmp_path / "api" / "song" / f"{stem}.wav")[0])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_importing_inference_hides_nothing():
    """Only the command line hides Keras' optional imports: a program or notebook that imports
    inference can still import scikit-learn, pandas and matplotlib."""
    code = "import importlib, inference\nfor name in ('sklearn', 'pandas', 'matplotlib'): importlib.import_module(name)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(inference.__file__).parent, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]

"""Instrumental music and produced-sounding mixtures: the ``instrumental`` dataset, its streamed
prepare, cache format 2 (waveforms) and the generator's mixing options (instrumental share,
vocal level, vocal effects)."""

import json
import shutil
import subprocess
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest

import separation

import data_generator as dg
from separation import audio, cli, datasets
from separation.augment import AUGMENTATION_OPTIONS, Augmentation, AugmentationError, level_gain
from separation.cache import CACHE_FORMAT, PARTS, Cache, magnitude_blocks, prepare
from separation.errors import UserError
from helpers import write_stems

P = audio.DEFAULT_PARAMS
SR = P.sample_rate
VOICE_HZ, MUSIC_HZ = 496.0, 1504.0  # at bin centres (8 Hz per bin)
VOICE_BIN, MUSIC_BIN = 62, 188


def write_music(path: Path, seconds: float, freq: float = MUSIC_HZ, sr: int = SR, channels: int = 1,
                amplitude: float = 0.3) -> np.ndarray:
    """A sine as a piece of instrumental music (wav or flac by the suffix); returns what was written."""
    t = np.arange(int(seconds * sr)) / sr
    music = np.repeat((amplitude * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.save_audio(path, music, sr)
    return music


def encode(src: Path, dst: Path) -> Path:
    """``src`` re-encoded by ffmpeg (opus, ogg/vorbis or mp3, by ``dst``'s suffix)."""
    codec = {".opus": "libopus", ".ogg": "libvorbis", ".mp3": "libmp3lame"}[dst.suffix]
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([audio.ffmpeg_binary(), "-v", "error", "-y", "-i", str(src), "-c:a", codec, str(dst)], check=True)
    return dst


# --------------------------------------------------------------------------------------------
# the instrumental dataset
# --------------------------------------------------------------------------------------------


def test_split_folders_rule(tmp_path):
    root = tmp_path / "music"
    write_music(root / "train" / "pkg" / "one.wav", 1.0)
    write_music(root / "train" / "pkg" / "deep" / "two.flac", 1.0)
    write_music(root / "test" / "three.wav", 1.0)
    write_music(root / "beside.wav", 1.0)  # beside the split folders: not read
    write_music(root / "train" / ".hidden" / "four.wav", 1.0)
    (root / "train" / "notes.txt").write_text("not audio")
    tracks = datasets.find_tracks("instrumental", root)
    assert [(t.name, t.split) for t in tracks] == [("pkg__deep__two", "train"), ("pkg__one", "train"), ("three", "test")]
    assert [t.name for t in datasets.find_tracks("instrumental", root, "test")] == ["three"]
    with pytest.raises(UserError, match=r"no split folder 'validation' \(found: train, test\)"):
        datasets.find_tracks("instrumental", root, "validation")
    # no split folders: one split, named by --split, else by the folder when it is a split name, else train
    assert {t.split for t in datasets.find_tracks("instrumental", root / "train" / "pkg")} == {"train"}
    assert {t.split for t in datasets.find_tracks("instrumental", root / "test")} == {"test"}
    assert {t.split for t in datasets.find_tracks("instrumental", root / "train" / "pkg", "validation")} == {"validation"}


def test_load_gives_silent_vocals_and_the_file_as_accompaniment(tmp_path):
    music = write_music(tmp_path / "a.wav", 1.0, channels=2)
    (track,) = datasets.find_tracks("instrumental", tmp_path)
    assert track.vocals_silent and track.source == str(tmp_path / "a.wav")
    parts, sr = track.load()
    assert sr == SR and parts["vocals"].shape == music.shape and not parts["vocals"].any()
    np.testing.assert_allclose(parts["accompaniment"], music, atol=1e-4)
    np.testing.assert_array_equal(parts["mixture"], parts["accompaniment"])


def test_bad_layouts(tmp_path):
    with pytest.raises(UserError, match="no instrumental tracks found"):
        (tmp_path / "empty").mkdir()
        datasets.find_tracks("instrumental", tmp_path / "empty")
    write_music(tmp_path / "dup" / "song.wav", 0.5)
    write_music(tmp_path / "dup" / "song.flac", 0.5)
    with pytest.raises(UserError, match="song.wav: has the track name 'song' of .*song.flac; rename one"):
        datasets.find_tracks("instrumental", tmp_path / "dup")


# --------------------------------------------------------------------------------------------
# streaming: audio.stream_mono and the blockwise magnitudes
# --------------------------------------------------------------------------------------------


def test_stream_mono_matches_load_audio(tmp_path):
    write_music(tmp_path / "a.wav", 3.0, sr=44100, channels=2)
    for path in (tmp_path / "a.wav", encode(tmp_path / "a.wav", tmp_path / "a.opus"), encode(tmp_path / "a.wav", tmp_path / "a.ogg")):
        whole, _ = audio.load_audio(path, sr=SR, mono=True)
        streamed = np.concatenate(list(audio.stream_mono(path, SR, block=5000)))
        assert abs(len(streamed) - len(whole)) <= 1, path
        n = min(len(streamed), len(whole))
        np.testing.assert_allclose(streamed[:n], whole[:n, 0], atol=2e-3, err_msg=str(path))


def test_stream_mono_refuses_bad_files(tmp_path):
    (tmp_path / "bad.mp3").write_text("not audio")
    (tmp_path / "bad.opus").write_text("not audio")
    for path in (tmp_path / "bad.mp3", tmp_path / "bad.opus", tmp_path / "missing.wav"):
        with pytest.raises(audio.AudioError, match=str(path.name)):
            list(audio.stream_mono(path, SR))


@pytest.mark.parametrize("length", [100, 768 * 7, 768 * 7 + 5, 30_000])
def test_magnitude_blocks_equal_the_one_shot_magnitude(length):
    wave = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    whole = audio.magnitude(wave)
    out = np.full_like(whole, np.nan)
    magnitude_blocks(wave, P, out, block=3)
    np.testing.assert_allclose(out, whole, atol=1e-5 * whole.max())


# --------------------------------------------------------------------------------------------
# prepare --dataset instrumental, cache format 2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory):
    """A format-2 cache of one stems track with vocals (a 496 Hz sine over quiet noise) and one
    instrumental track (a 1504 Hz sine, 44.1 kHz stereo), both 20 s long, in split train."""
    root = tmp_path_factory.mktemp("mixed")
    write_stems(root / "stems" / "train" / "voice", seconds=20.0, freq=VOICE_HZ)
    write_music(root / "music" / "train" / "pkg" / "tune.wav", 20.0, sr=44100, channels=2)
    cache = root / "cache"
    for dataset, folder in (("stems", "stems"), ("instrumental", "music")):
        assert dg.main(["prepare", "--dataset", dataset, "--root", str(root / folder), "--split", "train",
                        "--cache", str(cache), "--quiet"]) == 0
    return cache


def test_prepare_stores_waveforms_and_no_silent_vocals(mixed_cache):
    cache = Cache(mixed_cache)
    assert cache.format == CACHE_FORMAT == 2 and cache.names() == ["pkg__tune", "voice"]
    tune, voice = cache.track("pkg__tune"), cache.track("voice")
    assert tune["vocals_silent"] and tune["stored"] == ["accompaniment", "accompaniment.wave"]
    assert sorted(p.name.split(".", 1)[1] for p in (mixed_cache / "tracks").glob(f"{tune['file']}.*")) == [
        "accompaniment.npy", "accompaniment.wave.npy"]
    assert not voice["vocals_silent"] and len(voice["stored"]) == 5
    assert tune["samples"] == 20 * SR and tune["frames"] == audio.n_frames(20 * SR)
    wave = cache.wave("pkg__tune", "accompaniment")
    assert wave.dtype == np.float32 and wave.shape == (20 * SR,) and isinstance(wave, np.memmap)
    expected, _ = audio.load_audio(mixed_cache.parent / "music" / "train" / "pkg" / "tune.wav", sr=SR, mono=True)
    np.testing.assert_allclose(wave, expected[:, 0], atol=2e-3)
    np.testing.assert_allclose(cache.array("pkg__tune", "accompaniment"), audio.magnitude(wave), atol=1e-3)
    # silent vocals read as zeros, the mixture as the accompaniment
    assert not cache.array("pkg__tune", "vocals").any() and cache.array("pkg__tune", "vocals").shape == (P.n_bins, tune["frames"])
    assert not cache.wave("pkg__tune", "vocals").any() and cache.wave("pkg__tune", "vocals").shape == (20 * SR,)
    assert cache.array("pkg__tune", "mixture") is cache.array("pkg__tune", "accompaniment")
    voice_wave, _ = audio.load_audio(mixed_cache.parent / "stems" / "train" / "voice" / "vocals.wav", mono=True)
    np.testing.assert_allclose(cache.wave("voice", "vocals"), voice_wave[:, 0], atol=1e-6)


def test_prepare_rerun_skips_and_unreadable_files(tmp_path, capsys):
    root = tmp_path / "music"
    write_music(root / "good.wav", 2.0)
    (root / "broken.ogg").write_text("not audio")
    argv = ["prepare", "--dataset", "instrumental", "--root", str(root), "--cache", str(tmp_path / "c"), "--quiet"]
    assert dg.main(argv) == 0
    out, err = capsys.readouterr()
    assert "warning: skipping track broken" in err and "skipped 1 unreadable track(s): broken" in out
    assert "silent vocals" not in out  # expected of instrumental music, not news
    assert Cache(tmp_path / "c").names() == ["good"] and "broken" in Cache(tmp_path / "c").skipped
    assert dg.main(argv) == 0
    assert "added 0 track(s), 1 already there" in capsys.readouterr().out
    assert cli.run_cli(dg.main, [*argv[:-1], "--cache", str(tmp_path / "strict"), "--strict", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.ogg: cannot read as audio" in err and "--strict" in err
    assert err.count("error:") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_prepare_streams_a_long_file_in_bounded_memory(tmp_path):
    """Five minutes of 44.1 kHz stereo (53 MB as float32 whole) are prepared with a small peak."""
    sr, seconds = 44100, 300
    path = tmp_path / "music" / "long.wav"
    path.parent.mkdir()
    import soundfile as sf

    with sf.SoundFile(str(path), "w", sr, 2, "PCM_16") as f:  # written in pieces, too
        t = np.arange(sr * 10) / sr
        for i in range(seconds // 10):
            block = 0.2 * np.sin(2 * np.pi * (200 + 10 * i) * t)
            f.write(np.stack([block, block], axis=1))
    tracemalloc.start()
    prepare("instrumental", tmp_path / "music", tmp_path / "c", progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 25e6, f"peak {peak / 1e6:.1f} MB"
    entry = Cache(tmp_path / "c").track("long")
    assert entry["samples"] == seconds * SR and entry["frames"] == audio.n_frames(seconds * SR)


def format1(cache: Path, into: Path) -> Path:
    """A copy of ``cache`` as the previous version wrote it: format 1, three magnitudes per track, no waveforms."""
    shutil.copytree(cache, into)
    index = json.loads((into / "index.json").read_text())
    index["format"] = 1
    for entry in index["tracks"]:
        for part in entry.pop("stored"):
            if part not in PARTS:
                (into / "tracks" / f"{entry['file']}.{part}.npy").unlink()
        for part in PARTS:  # format 1 stored every part
            path = into / "tracks" / f"{entry['file']}.{part}.npy"
            if not path.is_file():
                np.save(path, Cache(cache).array(entry["name"], part))
    (into / "index.json").write_text(json.dumps(index))
    return into


def test_format1_cache_trains_without_waveforms_and_refuses_them(mixed_cache, tmp_path):
    old = Cache(format1(mixed_cache, tmp_path / "old"))
    assert old.format == 1
    batch = dg.PatchSampler(old, batch_size=4, augmentation=Augmentation(instrumental_share=0.5, remix=True))[0]
    # magnitudes only: fine
    assert batch[0].shape == (4, P.n_bins, P.patch_frames, 1)
    for kwargs in ({"vocal_level": (0, 0)}, {"effects": ("double",)}):
        with pytest.raises(UserError, match=r"format 1 holds no waveforms .*re-run prepare into a new --cache folder"):
            dg.PatchSampler(old, batch_size=4, augmentation=Augmentation(**kwargs))
    with pytest.raises(UserError, match="a cache of format 1 .*prepare into a new --cache folder"):
        prepare("instrumental", mixed_cache.parent / "music", tmp_path / "old", progress=False)


# --------------------------------------------------------------------------------------------
# the mixing options
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def stand_in_production(monkeypatch):
    """A stand-in production.py with two effects: "double" (x2) and "noise" (adds a draw from rng)."""

    def produce(vocals, sr, rng, effects):
        assert vocals.dtype == np.float32 and vocals.ndim == 1 and sr == SR
        out = vocals.copy()
        for name in effects:
            if name == "double":
                out *= 2
            elif name == "noise":
                out += (0.01 * rng.standard_normal(len(out))).astype(np.float32)
        return out

    module = types.SimpleNamespace(EFFECTS=("double", "noise"), produce=produce)
    monkeypatch.setitem(sys.modules, "separation.production", module)
    monkeypatch.setattr(separation, "production", module, raising=False)
    return module


def peaks(batch_part: np.ndarray, b: int) -> tuple[float, float]:
    """A patch's summed magnitude at the voice's and the music's bins."""
    x = batch_part[b, :, :, 0].sum(axis=1)
    return float(x[VOICE_BIN]), float(x[MUSIC_BIN])


def batches(sampler, n=4):
    return [sampler[i] for i in range(n)]


def test_vocals_only_from_tracks_with_vocals_accompaniment_from_any(mixed_cache):
    for kwargs in ({"instrumental_share": 0.0}, {"vocal_level": (0.0, 0.0)}):
        sampler = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=8, augmentation=Augmentation(**kwargs))
        music_used = 0
        for mix, vocals in batches(sampler):
            for b in range(len(mix)):
                v, m = peaks(vocals, b)
                assert v > 0.5 * vocals[b].sum(axis=(1, 2)).max() and m < 1e-3 * v  # the voice, never the tune
                music_used += peaks(mix, b)[1] > 0.3 * peaks(mix, b)[0]
        assert 0 < music_used < 32, kwargs  # the accompaniment comes from both tracks
    # without the mixing options, the instrumental track is drawn like any other (as before)
    plain = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=8)
    assert any(not vocals[b].any() for _, vocals in batches(plain) for b in range(8))


@pytest.mark.parametrize("waveform", [False, True])
def test_instrumental_share(mixed_cache, waveform):
    extra = {"vocal_level": (0.0, 0.0)} if waveform else {}
    everything = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=8,
                                 augmentation=Augmentation(instrumental_share=1.0, **extra))
    for mix, vocals in batches(everything, 2):
        assert not vocals.any() and (mix.max(axis=(1, 2, 3)) == 1).all()  # accompaniment alone, a zero target
    half = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=16,
                           augmentation=Augmentation(instrumental_share=0.5, **extra))
    silent = [not vocals[b].any() for _, vocals in batches(half) for b in range(16)]
    assert 0.3 < np.mean(silent) < 0.7


def test_vocal_level_sets_the_rms_ratio(mixed_cache):
    for level in (-4.0, 6.0):
        sampler = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=8,
                                  augmentation=Augmentation(vocal_level=(level, level)))
        checked = 0
        for mix, vocals in batches(sampler):
            for b in range(8):
                v, m = peaks(mix, b)
                if m > 0.3 * v:  # accompaniment from the tune (quiet noise otherwise): two sines, their RMS ratio is their peak ratio
                    assert v / m == pytest.approx(10 ** (level / 20), rel=0.02)
                    assert peaks(vocals, b)[0] == pytest.approx(v, rel=1e-3)  # target = |STFT(vocals)|
                    checked += 1
        assert checked


def test_level_gain_guards_silence():
    rng = np.random.default_rng(0)
    v, a = rng.standard_normal(1000), 0.1 * rng.standard_normal(1000)
    g = level_gain(v, a, 6.0)
    assert 20 * np.log10(np.sqrt(np.mean((g * v) ** 2)) / np.sqrt(np.mean(a**2))) == pytest.approx(6.0)
    assert level_gain(np.zeros(1000), a, 6.0) == 1.0 and level_gain(v, np.zeros(1000), 6.0) == 1.0
    assert level_gain(v[:0], a, 6.0) == 1.0


def test_effects_process_the_vocals_and_the_target(mixed_cache):
    doubled = dg.PatchSampler(mixed_cache, steps_per_epoch=4, batch_size=8, augmentation=Augmentation(effects=("double",)))
    checked = 0
    for mix, vocals in batches(doubled):
        for b in range(8):
            v, m = peaks(mix, b)
            if m > 0.05 * v:  # the voice (0.3) doubled over the tune (0.3)
                assert v / m == pytest.approx(2.0, rel=0.02) and peaks(vocals, b)[0] == pytest.approx(v, rel=1e-3)
                checked += 1
    assert checked


def test_waveform_batches_depend_only_on_seed_epoch_index(mixed_cache):
    augmentation = Augmentation(instrumental_share=0.25, vocal_level=(-4, 6), effects=("noise", "double"), input_dropout=0.1)
    a, b = (dg.PatchSampler(mixed_cache, batch_size=4, seed=3, steps_per_epoch=4, augmentation=augmentation) for _ in range(2))
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], a[1][0])
    first = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(first, a[0][0])
    mix, vocals = a[0]
    assert mix.dtype == vocals.dtype == np.float32 and mix.shape == (4, P.n_bins, P.patch_frames, 1)
    assert np.isfinite(mix).all() and mix.max() <= 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"effects": ("reverb",)}, r"unknown effect\(s\) 'reverb'; choose from double, noise"),
    ({"instrumental_share": 1.5}, r"instrumental_share must be in \[0, 1\], got 1.5"),
    ({"instrumental_share": float("nan")}, r"instrumental_share must be in \[0, 1\]"),
    ({"vocal_level": (0, float("nan"))}, r"vocal_level must be two finite levels \(low, high\) in dB, got \(0.0, nan\)"),
    ({"vocal_level": (6, -4)}, "vocal_level 6 -4: give LO HI in dB with LO <= HI, e.g. -4 6"),
    ({"vocal_level": (0, 0), "gain": True}, "vocal_level sets the vocal-to-accompaniment level; drop gain"),
    ({"effects": ("double",), "pitch": 2.0}, "pitch/tempo act on magnitudes and cannot be combined with "
                                             "vocal_level/effects"),
    ({"vocal_level": (0, 0), "tempo": 0.1}, "pitch/tempo act on magnitudes"),
])
def test_bad_mixing_options(kwargs, message):
    with pytest.raises(AugmentationError, match=message) as err:
        Augmentation(**kwargs)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"vocal_level": (6, -4)}, "--vocal-level 6 -4: give LO HI in dB with LO <= HI, e.g. -4 6"),
    ({"vocal_level": (0, 0), "gain": True}, "--vocal-level sets the vocal-to-accompaniment level; drop --gain"),
    ({"effects": ("double",), "tempo": 0.1}, "--pitch/--tempo act on magnitudes and cannot be combined with "
                                             "--vocal-level/--vocal-fx; use --vocal-fx pitch (a time-domain pitch "
                                             "shift) instead"),
    ({"pitch": 13.0}, "--pitch must be in [0, 12] semitones, got 13.0"),
])
def test_a_refusal_names_the_options_of_a_command_line(kwargs, message):
    """One check, two wordings: train.py names its options where the library names the fields."""
    with pytest.raises(AugmentationError) as err:
        Augmentation(**kwargs)
    assert err.value.worded(AUGMENTATION_OPTIONS) == message


def test_augmentation_settings_are_normalised_and_say_what_they_turn_on():
    off = Augmentation()
    assert not off.active and not off.mixing and not off.waveform
    level = Augmentation(vocal_level=[-4, 6], effects=["double"], accompaniment_tracks=["pkg__tune"])
    assert level.vocal_level == (-4.0, 6.0) and level.effects == ("double",) and level.accompaniment_tracks == ("pkg__tune",)
    assert level.active and level.mixing and level.waveform
    assert Augmentation(instrumental_share=0.0).mixing and not Augmentation(instrumental_share=0.0).waveform
    assert Augmentation(input_dropout=0.1).active and not Augmentation(remix=True).mixing
    assert Augmentation(remix=1) == Augmentation(remix=True)  # frozen and compared by value


def test_validation_takes_no_mixing(mixed_cache):
    with pytest.raises(ValueError, match="are for training; validation mode takes none"):
        dg.PatchSampler(mixed_cache, mode="validation", augmentation=Augmentation(instrumental_share=0.1))


def test_mixing_needs_a_track_with_vocals(mixed_cache):
    with pytest.raises(UserError, match="none of the training tracks has vocals"):
        dg.PatchSampler(mixed_cache, tracks=["pkg__tune"], batch_size=4, augmentation=Augmentation(instrumental_share=0.1))


def test_effects_without_production_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "separation.production", None)  # import fails as if the file were absent
    monkeypatch.delattr(separation, "production", raising=False)
    with pytest.raises(UserError, match="the vocal effects need production.py, which is not in this checkout"):
        Augmentation(effects=("reverb",))


def test_with_the_real_production_effects(mixed_cache, monkeypatch):
    """production.py itself (helper C's pedalboard chain): every effect, deterministic, the target processed."""
    monkeypatch.delitem(sys.modules, "separation.production")
    monkeypatch.delattr(separation, "production", raising=False)
    from separation import production

    kwargs = dict(batch_size=2, steps_per_epoch=1, seed=5)
    mixing = dict(instrumental_share=0.0, vocal_level=(0.0, 0.0))
    dry = dg.PatchSampler(mixed_cache, augmentation=Augmentation(**mixing), **kwargs)[0]
    wet, again = (dg.PatchSampler(mixed_cache, augmentation=Augmentation(effects=production.EFFECTS, **mixing), **kwargs)[0]
                  for _ in range(2))
    for x, y in zip(wet, again):
        np.testing.assert_array_equal(x, y)
    assert all(np.isfinite(x).all() for x in wet) and wet[1].any()
    assert not np.allclose(wet[1], dry[1], atol=1e-3)  # the same segments (same draws before the effects), processed


def test_accompaniment_from_chosen_tracks(mixed_cache):
    sampler = dg.PatchSampler(mixed_cache, steps_per_epoch=2, batch_size=8,
                              augmentation=Augmentation(accompaniment_tracks=["pkg__tune"]))
    for mix, vocals in batches(sampler, 2):
        for b in range(8):
            assert peaks(mix, b)[1] > 0.5 * peaks(mix, b)[0] and peaks(vocals, b)[1] < 1e-3 * peaks(vocals, b)[0]
    for names in (["nosuch"], []):
        with pytest.raises(ValueError, match="accompaniment_tracks must be some of the training tracks"):
            dg.PatchSampler(mixed_cache, batch_size=4, augmentation=Augmentation(accompaniment_tracks=names))

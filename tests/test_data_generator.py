"""data_generator.py and separation/cache.py, separation/augment.py: prepare/export CLI, the memory-mapped
cache, and the PatchSampler/DataGenerator batches with their augmentations."""

import json
import pickle
import subprocess
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest

import separation

import data_generator as dg
import separation.cache as cache_module
from separation import audio, augment, cli, datasets
from separation.augment import Augmentation
from separation.cache import PARTS, WAVES, Cache, export, prepare
from separation.errors import UserError
from helpers import write_stems

P = audio.DEFAULT_PARAMS
LONG_HZ, SHORT_HZ = 496.0, 1504.0  # vocals frequencies telling the two training tracks apart
LONG_BIN, SHORT_BIN = 62, 188  # 8 Hz per bin


@pytest.fixture(scope="module")
def stems_root(tmp_path_factory):
    """Two training tracks (40 s and 3 s, shorter than a patch) and one test track at 44.1 kHz stereo."""
    root = tmp_path_factory.mktemp("stems")
    write_stems(root / "train" / "long", seconds=40.0, freq=LONG_HZ)
    write_stems(root / "train" / "short", seconds=3.0, freq=SHORT_HZ, seed=1)
    write_stems(root / "test" / "hifi", sr=44100, seconds=2.0, channels=2, seed=2)
    return root


@pytest.fixture(scope="module")
def cache_dir(stems_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "c"
    assert dg.main(["prepare", "--dataset", "stems", "--root", str(stems_root), "--cache", str(cache), "--quiet"]) == 0
    return cache


def _names_of(mix: np.ndarray) -> list[str]:
    """Which training track each mixture patch came from, by its strongest frequency bin."""
    peak_bins = mix[..., 0].sum(axis=2).argmax(axis=1)
    assert set(peak_bins) <= {LONG_BIN, SHORT_BIN}, set(peak_bins)
    return ["long" if b == LONG_BIN else "short" for b in peak_bins]


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


def test_prepare_writes_index_and_magnitudes(cache_dir, stems_root):
    cache = Cache(cache_dir)
    assert cache.params == P and audio.AudioParams.load(cache_dir / "audio_params.json") == P
    assert [(t["name"], t["split"], t["dataset"]) for t in cache.tracks] == [
        ("hifi", "test", "stems"), ("long", "train", "stems"), ("short", "train", "stems")]
    by_name = {t["name"]: t for t in cache.tracks}
    assert by_name["long"]["samples"] == 40 * 8192 and by_name["hifi"]["samples"] == 2 * 8192
    for t in cache.tracks:
        assert t["frames"] == audio.n_frames(t["samples"]) and not t["vocals_silent"]
        for part in PARTS:
            arr = cache.array(t["name"], part)
            assert isinstance(arr, np.memmap) and arr.dtype == np.float32 and arr.shape == (512, t["frames"])
    assert cache.names(split="train") == ["long", "short"]
    # the 44.1 kHz stereo track: channels averaged, resampled to 8192 Hz, |STFT| over 512 bins
    (track,) = datasets.find_tracks("stems", stems_root, "test")
    loaded, sr = track.load()
    expected = audio.magnitude(audio.resample(audio.to_mono(loaded["vocals"]), sr, 8192))
    np.testing.assert_allclose(cache.array("hifi", "vocals"), expected, rtol=1e-5, atol=1e-4)
    index = json.loads((cache_dir / "index.json").read_text())
    assert index["params"] == P.to_dict() and index["runs"][0]["dataset"] == "stems"


def test_prepare_rerun_skips_done_tracks(cache_dir, stems_root, capsys):
    files = sorted((cache_dir / "tracks").iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert dg.main(["prepare", "--dataset", "stems", "--root", str(stems_root), "--cache", str(cache_dir), "--quiet"]) == 0
    assert "added 0 track(s), 3 already there" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in sorted((cache_dir / "tracks").iterdir())] == mtimes


def test_interrupted_prepare_resumes(stems_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    argv = ["prepare", "--dataset", "stems", "--root", str(stems_root), "--cache", str(cache), "--quiet"]
    real_magnitude = cache_module.magnitude
    calls = []

    def interrupted(*args, **kwargs):  # Ctrl-C in the middle of the second track
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_magnitude(*args, **kwargs)

    monkeypatch.setattr(cache_module, "magnitude", interrupted)
    assert cli.run_cli(dg.main, argv) == 130
    monkeypatch.setattr(cache_module, "magnitude", real_magnitude)
    assert Cache(cache).names() == ["hifi"]  # a valid cache holding the finished track only
    first = sorted((cache / "tracks").glob("hifi-*"))
    mtimes = [f.stat().st_mtime_ns for f in first]
    (cache / "tracks" / ".long-x.mixture.npy.abc.part.npy").write_bytes(b"half")  # as a killed run leaves

    assert dg.main(argv) == 0
    assert Cache(cache).names() == ["hifi", "long", "short"]
    assert [f.stat().st_mtime_ns for f in first] == mtimes  # not redone
    assert not list((cache / "tracks").glob(".*"))  # stale temporary files removed
    assert len(list((cache / "tracks").glob("*.npy"))) == 3 * (len(PARTS) + len(WAVES))  # magnitudes + waveforms


def test_prepare_subprocess_killed_then_resumed(stems_root, tmp_path, capsys):
    """A real prepare killed from outside (SIGKILL, no clean-up at all) is completed by the same command
    (run again in this process)."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "data_generator.py", "prepare", "--dataset", "stems", "--root", str(stems_root),
           "--cache", str(cache), "--quiet"]
    root = Path(dg.__file__).parent
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    index = cache / "index.json"
    import time

    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if index.is_file() and json.loads(index.read_text())["tracks"]:
            break  # at least one track done: kill it now
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    done = Cache(cache).names()
    assert len(done) < 3 or proc.returncode == 0  # killed mid-way (or, on a fast machine, already finished)
    capsys.readouterr()
    assert dg.main(cmd[2:]) == 0
    assert f"added {3 - len(done)} track(s), {len(done)} already there" in capsys.readouterr().out
    assert Cache(cache).names() == ["hifi", "long", "short"]


def test_cache_with_other_params_is_refused(stems_root, tmp_path):
    cache = tmp_path / "cache"
    dg.main(["prepare", "--dataset", "stems", "--root", str(stems_root), "--split", "test", "--cache", str(cache), "--quiet"])
    audio.AudioParams(hop_length=512).save(cache / "audio_params.json")
    with pytest.raises(UserError, match=r"cache .* other audio parameters \(hop_length: 512 vs 768\); prepare into a new --cache"):
        prepare("stems", stems_root, cache, split="test", progress=False)


def test_bad_input(tmp_path, capsys):
    root = tmp_path / "ds"
    write_stems(root / "train" / "good", seconds=1.0)
    write_stems(root / "train" / "instrumental", seconds=1.0, vocals_gain=0.0)
    write_stems(root / "train" / "broken", seconds=1.0)
    (root / "train" / "broken" / "mixture.wav").write_bytes(b"RIFF....WAVEjunk")
    cache = tmp_path / "cache"
    argv = ["prepare", "--dataset", "stems", "--root", str(root), "--cache", str(cache), "--quiet"]

    # --strict: refused, naming the file, as one line with exit status 2
    assert cli.run_cli(dg.main, argv + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert "broken/mixture.wav" in err and "--strict" in err and "Traceback" not in err

    assert dg.main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: skipping track broken:" in captured.err and "broken/mixture.wav" in captured.err
    assert "skipped 1 unreadable track(s): broken" in captured.out
    assert "1 track(s) with silent vocals (kept): instrumental" in captured.out
    cache_obj = Cache(cache)
    assert cache_obj.names() == ["good", "instrumental"]
    assert cache_obj.track("instrumental")["vocals_silent"] and "broken" in cache_obj.skipped

    # a wrong root shows the layout; a folder that is not a cache is not written into
    assert cli.run_cli(dg.main, ["prepare", "--dataset", "stems", "--root", str(tmp_path / "nope"), "--cache", str(cache)]) == 2
    assert "expected <root>/<split>/<track>/{mixture,vocals,accompaniment}" in capsys.readouterr().err
    with pytest.raises(UserError, match="exists and is not a cache"):
        prepare("stems", root, root / "train", progress=False)
    with pytest.raises(UserError, match=r"not a prepared cache \(no index.json\); make one with"):
        Cache(root)


def test_prepare_mir1k_subset(mir1k_root, tmp_path):
    """Two MIR-1K songs through a tiny root of symlinked clips: clips joined, lengths kept."""
    wav = tmp_path / "mir1k" / "Wavfile"
    wav.mkdir(parents=True)
    clips = sorted((mir1k_root / "Wavfile").glob("abjones_1_*")) + sorted((mir1k_root / "Wavfile").glob("Ani_1_*"))
    for clip in clips:
        (wav / clip.name).symlink_to(clip)
    cache = tmp_path / "cache"
    assert dg.main(["prepare", "--dataset", "mir1k", "--root", str(wav.parent), "--split", "huang-train",
                    "--cache", str(cache), "--quiet"]) == 0
    entries = Cache(cache).tracks
    assert [(t["name"], t["split"]) for t in entries] == [("abjones_1", "huang-train")]
    total = sum(audio.load_audio(c)[0].shape[0] for c in clips if c.name.startswith("abjones"))
    assert entries[0]["samples"] == total and entries[0]["frames"] == audio.n_frames(total)


def test_prepare_musdb_sample(tmp_path):
    stempeg = pytest.importorskip("stempeg")
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    (root / "test" / "Falcon.stem.mp4").symlink_to(stempeg.example_stem_path())
    cache = tmp_path / "cache"
    summary = prepare("musdb", root, cache, split="test", progress=False)
    assert summary["added"] == ["Falcon"]
    (entry,) = Cache(cache).tracks
    assert entry["dataset"] == "musdb" and entry["frames"] == audio.n_frames(entry["samples"]) < P.patch_frames
    mix, voc = dg.PatchSampler(cache, batch_size=2)[0]
    frames = entry["frames"]
    assert mix.shape == (2, 512, 128, 1) and mix[:, :, :frames].max() == 1.0
    assert not mix[:, :, frames:].any() and not voc[:, :, frames:].any()  # zero padding past the end


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def test_export_mir1k_clips_as_stems(mir1k_root, tmp_path):
    wav = tmp_path / "mir1k" / "Wavfile"
    wav.mkdir(parents=True)
    for name in ("Ani_1_01.flac", "Ani_1_02.flac", "amy_1_01.flac"):
        (wav / name).symlink_to(mir1k_root / "Wavfile" / name)
    out = tmp_path / "exported"
    assert dg.main(["export", "--dataset", "mir1k", "--root", str(wav.parent), "--split", "huang-test",
                    "--unit", "clip", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Ani_1_01", "Ani_1_02"]
    (original,) = [t for t in datasets.find_tracks("mir1k", wav.parent, unit="clip") if t.name == "Ani_1_02"]
    ref, _ = original.load()
    stems = {t.name: t for t in datasets.find_tracks("stems", out)}
    assert set(stems) == {"Ani_1_01", "Ani_1_02"}
    got, sr = stems["Ani_1_02"].load()
    assert sr == 8192
    for part in PARTS:  # written as read (float WAV where the mixture exceeds full scale)
        np.testing.assert_allclose(got[part], ref[part], atol=1e-4)
    mtime = (out / "Ani_1_01" / "vocals.wav").stat().st_mtime_ns
    assert export("mir1k", wav.parent, out, split="huang-test", unit="clip", progress=False)["already"] == 2
    assert (out / "Ani_1_01" / "vocals.wav").stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------------------
# DataGenerator
# --------------------------------------------------------------------------------------------


def test_validation_batches_shapes_domain_and_determinism(cache_dir):
    cache = Cache(cache_dir)
    gen = dg.PatchSampler(cache, tracks=["long", "short"], batch_size=5, mode="validation")
    # long: 427 frames -> offsets 0, 32, ..., 288 and 299 (the last patch); short: one padded patch
    assert len(gen._patches) == 12 and len(gen) == 3
    first = [gen[i] for i in range(len(gen))]
    mix, voc = first[0]
    assert mix.shape == voc.shape == (5, 512, 128, 1) and mix.dtype == voc.dtype == np.float32
    assert first[-1][0].shape[0] == 2  # the last batch holds the remainder
    # same domain: both divided by the raw mixture patch's peak
    plan = gen.plan(0)
    raw_mix = gen.tracks.patches("mixture", plan["track"], plan["offset"])
    raw_voc = gen.tracks.patches("vocals", plan["track"], plan["offset"])
    scale = raw_mix.max(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(mix[..., 0], raw_mix / scale, rtol=1e-6)
    np.testing.assert_allclose(voc[..., 0], raw_voc / scale, rtol=1e-6)
    assert np.allclose(mix.max(axis=(1, 2, 3)), 1.0)
    # identical every epoch, and for a fresh generator
    gen.on_epoch_end()
    again = dg.PatchSampler(cache_dir, tracks=["long", "short"], batch_size=5, mode="validation")
    again.on_epoch_end()
    for i, (m, v) in enumerate(first):
        np.testing.assert_array_equal(gen[i][0], m)
        np.testing.assert_array_equal(again[i][1], v)
    with pytest.raises(IndexError):
        gen[3]
    # steps_per_epoch caps validation with evenly spread patches, first and last included
    capped = dg.PatchSampler(cache, tracks=["long", "short"], batch_size=3, mode="validation", steps_per_epoch=2)
    assert len(capped) == 2 and len(capped._patches) == 6
    assert capped._patches[0].tolist() == [0, 0] and capped._patches[-1].tolist() == [1, 0]


def test_training_draws_tracks_equally_whatever_their_length(cache_dir):
    gen = dg.PatchSampler(cache_dir, tracks=["long", "short"], batch_size=50, seed=3)
    counts = {"long": 0, "short": 0}
    offsets = set()
    for i in range(len(gen)):
        mix, voc = gen[i]
        for name, m, v in zip(_names_of(mix), mix, voc):
            counts[name] += 1
            if name == "short":  # 33 frames, zero-padded to 128
                assert m[:, 33:].max() == 0 and v[:, 33:].max() == 0 and m[:, :33].max() == 1.0
        offsets.update(gen.plan(i)["offset"][gen.plan(i)["track"] == 0].tolist())
    # 427 + 33 frames -> 4 + 1 patches per epoch by default; count over many epochs instead
    assert len(gen) == 1
    for _epoch in range(29):
        gen.on_epoch_end()
        for name in _names_of(gen[0][0]):
            counts[name] += 1
    total = counts["long"] + counts["short"]
    assert total == 1500
    assert abs(counts["long"] - counts["short"]) < 0.1 * total  # the 40 s track is not favoured 13:1
    assert max(offsets) <= 427 - 128 and len(offsets) > 10  # random offsets within the long track


def test_training_batches_depend_only_on_seed_epoch_index(cache_dir):
    a = dg.PatchSampler(cache_dir, batch_size=4, steps_per_epoch=5, seed=7)
    b = dg.PatchSampler(cache_dir, batch_size=4, steps_per_epoch=5, seed=7)
    assert len(a) == 5
    late = b[4]  # asked in another order (as parallel workers do): same batch
    for i in range(5):
        np.testing.assert_array_equal(a[i][0], (late if i == 4 else b[i])[0])
    before = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], before)  # a new epoch draws anew
    b.on_epoch_end()
    np.testing.assert_array_equal(a[0][0], b[0][0])
    c = dg.PatchSampler(cache_dir, batch_size=4, steps_per_epoch=5, seed=8)
    assert not np.array_equal(c[0][0], before)


def test_augmentations(cache_dir):
    plain = dg.PatchSampler(cache_dir, tracks=["long", "short"], batch_size=16, seed=1)
    aug = dg.PatchSampler(cache_dir, tracks=["long", "short"], batch_size=16, seed=1,
                          augmentation=Augmentation(remix=True, gain=True))
    mix, voc = aug[0]
    plain_mix, plain_voc = plain[0]
    assert mix.shape == (16, 512, 128, 1) and mix.dtype == np.float32
    assert not np.array_equal(mix, plain_mix)
    assert np.all(voc <= mix + 1e-6)  # power-sum remix: the ideal mask stays within [0, 1]
    assert np.allclose(mix.max(axis=(1, 2, 3)), 1.0)
    # gains change the vocals-to-mixture balance (a common gain would be normalised away)
    ratio = voc.sum(axis=(1, 2, 3)) / mix.sum(axis=(1, 2, 3))
    plain_ratio = plain_voc.sum(axis=(1, 2, 3)) / plain_mix.sum(axis=(1, 2, 3))
    assert np.std(ratio) > 2 * np.std(plain_ratio)

    drop = dg.PatchSampler(cache_dir, tracks=["long"], batch_size=8, seed=1,
                           augmentation=Augmentation(input_dropout=0.25))
    mix, voc = drop[0]
    undropped, _ = dg.PatchSampler(cache_dir, tracks=["long"], batch_size=8, seed=1)[0]
    zeroed = (mix == 0) & (undropped != 0)
    assert 0.23 < zeroed.sum() / (undropped != 0).sum() < 0.27
    assert not voc[mix == 0].any()  # the target is zeroed at the same cells
    np.testing.assert_array_equal(mix[~zeroed], undropped[~zeroed])

    with pytest.raises(ValueError, match="augmentations .* are for training"):
        dg.PatchSampler(cache_dir, mode="validation", augmentation=Augmentation(remix=True))
    with pytest.raises(UserError, match="no track named 'nope'"):
        dg.PatchSampler(cache_dir, tracks=["nope"])


def _write_cache(folder: Path, tracks: dict) -> Path:
    """A cache written by hand: ``tracks`` maps each name to its ``{part: (512, frames) array}``."""
    (folder / "tracks").mkdir(parents=True)
    P.save(folder / "audio_params.json")
    entries = []
    for name, parts in tracks.items():
        for part, arr in parts.items():
            np.save(folder / "tracks" / f"{name}.{part}.npy", np.asarray(arr, dtype=np.float32))
        entries.append({"name": name, "dataset": "stems", "split": "train", "file": name, "frames": arr.shape[1]})
    (folder / "index.json").write_text(json.dumps({"format": 1, "tracks": entries}))
    return folder


def test_pitch_shift_moves_a_partial_to_its_bin_times_the_ratio():
    patch = np.zeros((3, 512, 2), np.float32)
    patch[:, LONG_BIN] = 1.0  # one partial at bin 62 (496 Hz)
    ratios = 2.0 ** (np.array([12, -12, 7]) / 12)  # an octave up, an octave down, a fifth up
    out = augment.pitch_shift(patch, ratios)
    assert out.shape == patch.shape and out.dtype == np.float32
    assert out[..., 0].argmax(axis=1).tolist() == [124, 31, 93]  # 62 * 1.4983 = 92.9
    centroid = (np.arange(512) * out[..., 0]).sum(axis=1) / out[..., 0].sum(axis=1)
    np.testing.assert_allclose(centroid, LONG_BIN * ratios, atol=0.05)
    # any spectrum: new[k] = old[k / r], linear between bins, zero beyond the last bin (np.interp as oracle)
    x = np.random.default_rng(0).random((2, 512, 3), dtype=np.float32)
    out = augment.pitch_shift(x, [1.3, 0.7])
    for b, r in enumerate((1.3, 0.7)):
        for f in range(3):
            expected = np.interp(np.arange(512) / r, np.arange(512), x[b, :, f], right=0.0)
            np.testing.assert_allclose(out[b, :, f], expected, rtol=1e-5, atol=1e-6)
    assert out[1, 358:].max() == 0 and out[1, 357].min() > 0  # 357 / 0.7 = 510 < 511 < 358 / 0.7
    np.testing.assert_array_equal(augment.pitch_shift(x, [1.0, 1.0]), x)


def test_time_stretch_of_a_ramp():
    source = np.broadcast_to(np.arange(1, 301, dtype=np.float32), (3, 512, 300)).copy()  # frame t holds t + 1
    rates = np.array([0.5, 1.0, 1.9])
    out = augment.time_stretch(source, rates, 128)
    assert out.shape == (3, 512, 128) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 7], 1 + np.arange(128) * rates[:, None], rtol=1e-6)
    # stretch_frames reads just enough: 127 * 1.9 = 241.3 needs frames 241 and 242
    width = augment.stretch_frames(128, rates)
    assert width == 243
    np.testing.assert_array_equal(augment.time_stretch(source[..., :width], rates, 128), out)
    assert augment.time_stretch(source[..., :width - 1], rates, 128)[2, 0, 127] == 0
    # frames past the source's end are silence, as past a track's end
    short = augment.time_stretch(source[..., :100], rates, 128)
    for b, r in enumerate(rates):
        np.testing.assert_allclose(short[b, 0], np.interp(np.arange(128) * r, np.arange(100), source[0, 0, :100],
                                                          right=0.0), rtol=1e-6)
    assert short[2, 0, 53:].max() == 0 and short[2, 0, 52] > 0  # 52 * 1.9 = 98.8 < 99 < 53 * 1.9


def test_pitch_and_tempo_batches_follow_the_plan(tmp_path):
    """Vocals = a partial at bin 62 whose level ramps over 150 frames, no accompaniment: each patch
    must be that ramp read from its offset at its drawn tempo and the partial moved by its drawn
    pitch, both drawn from the batch's generator after the plan (tempo, then pitch)."""
    spectrum = np.zeros(512)
    spectrum[LONG_BIN] = 1.0
    ramp = np.arange(1.0, 151.0)
    padded = np.concatenate([ramp, np.zeros(100)])  # what reading past the track's end gives
    vocals = spectrum[:, None] * ramp[None, :]
    cache = _write_cache(tmp_path / "cache", {"tone": {"mixture": vocals, "vocals": vocals,
                                                        "accompaniment": np.zeros_like(vocals)}})
    gen = dg.PatchSampler(cache, batch_size=8, steps_per_epoch=2, seed=4,
                          augmentation=Augmentation(pitch=12.0, tempo=0.5))
    for index in (0, 1):
        mix, voc = gen[index]
        plan = gen.plan(index)
        rates = plan["rng"].uniform(0.5, 1.5, size=8)
        ratios = 2.0 ** (plan["rng"].uniform(-12, 12, size=8) / 12)
        assert np.ptp(rates) > 0.3 and np.ptp(np.log2(ratios)) > 0.5  # the draws do vary
        for b in range(8):
            level = np.interp(plan["offset"][b] + np.arange(128) * rates[b], np.arange(250), padded)
            partial = np.interp(np.arange(512) / ratios[b], np.arange(512), spectrum, right=0.0)
            expected = partial[:, None] * level[None, :]
            np.testing.assert_allclose(voc[b, ..., 0], expected / expected.max(), rtol=1e-4, atol=1e-6)
            assert voc[b, ..., 0].sum(axis=1).argmax() == round(LONG_BIN * ratios[b])
        np.testing.assert_allclose(mix, voc, rtol=1e-6)  # no accompaniment: the rebuilt mixture is the vocals


def test_pitch_and_tempo_compose_with_remix_and_gain(cache_dir):
    kwargs = dict(tracks=["long", "short"], batch_size=16, steps_per_epoch=2, seed=2)
    augmentation = Augmentation(remix=True, gain=True, pitch=3.0, tempo=0.2)
    both = dg.PatchSampler(cache_dir, augmentation=augmentation, **kwargs)
    plain_mix, plain_voc = dg.PatchSampler(cache_dir, augmentation=Augmentation(remix=True, gain=True), **kwargs)[0]
    mix, voc = both[0]
    assert mix.shape == voc.shape == (16, 512, 128, 1) and mix.dtype == voc.dtype == np.float32
    assert np.isfinite(mix).all() and np.allclose(mix.max(axis=(1, 2, 3)), 1.0)
    assert np.all(voc <= mix + 1e-6) and voc.min() >= 0  # the ideal mask stays in [0, 1]
    assert not np.array_equal(voc, plain_voc)
    # the vocals partials (496 or 1504 Hz) now sit at other bins in most patches
    peaks = voc[..., 0].sum(axis=2).argmax(axis=1)
    assert len(set(peaks.tolist()) - {LONG_BIN, SHORT_BIN}) >= 5
    # deterministic per (seed, epoch, index), whatever order the batches are asked in
    again = dg.PatchSampler(cache_dir, augmentation=augmentation, **kwargs)
    second = again[1]
    np.testing.assert_array_equal(again[0][0], mix)
    np.testing.assert_array_equal(both[1][1], second[1])
    both.on_epoch_end()
    assert not np.array_equal(both[0][1], voc)
    again.on_epoch_end()
    np.testing.assert_array_equal(both[0][1], again[0][1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(pitch=-1.0), r"pitch must be in \[0, 12\] semitones, got -1.0"),
    (dict(pitch=12.5), r"pitch must be in \[0, 12\] semitones, got 12.5"),
    (dict(pitch=float("nan")), "pitch must be .* got nan"),
    (dict(tempo=-0.1), r"tempo must be in \[0, 1\) \(a fraction of the tempo\), got -0.1"),
    (dict(tempo=1.0), "tempo must be .* got 1.0"),
    (dict(tempo=float("nan")), "tempo must be .* got nan"),
    (dict(input_dropout=1.0), r"input_dropout must be in \[0, 1\), got 1.0"),
])
def test_bad_pitch_or_tempo_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        Augmentation(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(pitch=1.0), dict(tempo=0.1), dict(remix=True)])
def test_validation_takes_no_augmentation(cache_dir, kwargs):
    with pytest.raises(ValueError, match=r"augmentations \(.*pitch, tempo\) are for training; validation mode takes none"):
        dg.PatchSampler(cache_dir, mode="validation", augmentation=Augmentation(**kwargs))


def test_opening_a_100_track_cache_loads_nothing(tmp_path):
    cache = tmp_path / "big"
    (cache / "tracks").mkdir(parents=True)
    P.save(cache / "audio_params.json")
    tracks = []
    for i in range(100):  # 100 tracks of ~5 minutes; the .npy files are sparse, so this is quick
        name, frames = f"song{i:03d}", 3000 + i
        for part in PARTS:
            np.lib.format.open_memmap(cache / "tracks" / f"{name}.{part}.npy", "w+", np.float32, (512, frames)).flush()
        tracks.append({"name": name, "dataset": "stems", "split": "train", "file": name, "frames": frames})
    (cache / "index.json").write_text(json.dumps({"format": 1, "tracks": tracks}))

    tracemalloc.start()
    gen = dg.PatchSampler(cache, batch_size=16)
    opened, _ = tracemalloc.get_traced_memory()
    for i in range(3):
        gen[i]
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(gen.cache._open) <= 3 * 2 * 16  # only the arrays the batches touched are mapped
    assert opened < 1_000_000  # the index only: 1.8 GB of magnitudes untouched
    assert after - opened < 1_000_000  # memory maps, not copies, stay open between batches
    assert peak - opened < 24_000_000  # a few batch-sized arrays (16x512x128 float32: 4 MB) at a time
    # pickling (what multiprocessing workers receive) carries the index, not the arrays
    assert len(pickle.dumps(gen)) < 100_000


def test_import_does_not_load_keras():
    code = "import sys, data_generator; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(dg.__file__).parent, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_keras_fit_with_workers(cache_dir):
    keras = pytest.importorskip("keras")
    gen = dg.DataGenerator(cache_dir, tracks=["long", "short"], batch_size=2, steps_per_epoch=3, workers=2)
    assert isinstance(gen, keras.utils.PyDataset) and gen.workers == 2 and not gen.use_multiprocessing
    val = dg.DataGenerator(Cache(cache_dir), tracks=["short"], batch_size=2, mode="validation")
    copy = pickle.loads(pickle.dumps(gen))  # what a multiprocessing worker gets
    np.testing.assert_array_equal(copy[1][0], gen[1][0])

    inputs = keras.Input((512, 128, 1))
    mask = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, keras.layers.Multiply()([mask, inputs]))
    model.compile(optimizer="adam", loss="mae")
    history = model.fit(gen, validation_data=val, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
    assert gen.epoch >= 2  # on_epoch_end advanced the draws (Keras also calls it once as fit starts)


def test_multiprocessing_workers_give_the_in_process_batches(cache_dir):
    pytest.importorskip("keras")
    # the adapter Model.fit wraps a PyDataset in; with use_multiprocessing it forks a worker pool per epoch
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    gen = dg.DataGenerator(cache_dir, batch_size=4, steps_per_epoch=6, seed=5, workers=2, use_multiprocessing=True)
    reference = dg.PatchSampler(cache_dir, batch_size=4, steps_per_epoch=6, seed=5)
    adapter = PyDatasetAdapter(gen)
    for _epoch in range(2):
        adapter.on_epoch_begin()
        got = [batch[0] for batch in adapter.get_numpy_iterator()]
        adapter.on_epoch_end()
        assert len(got) == 6
        for i, mix in enumerate(got):
            np.testing.assert_array_equal(mix, reference[i][0])
        reference.on_epoch_end()


# --------------------------------------------------------------------------------------------
# synthesize
# --------------------------------------------------------------------------------------------


def test_synthesize_forwards_to_synth(tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("separation.synth")
    fake.synthesize_dataset = lambda out, **kwargs: calls.append((out, kwargs))
    monkeypatch.setitem(sys.modules, "separation.synth", fake)
    monkeypatch.setattr(separation, "synth", fake, raising=False)
    assert dg.main(["synthesize", "--out", str(tmp_path / "s"), "--train", "3", "--test", "1", "--seconds", "5", "--seed", "2"]) == 0
    assert calls == [(tmp_path / "s", {"seed": 2, "n_train": 3, "n_test": 1, "seconds": 5.0, "progress": True})]
    assert "prepare --dataset stems" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # refused by argparse, before any work
        dg.main(["synthesize", "--out", str(tmp_path / "s"), "--train", "0"])
    assert exit_info.value.code == 2 and "--train: 0 is out of range" in capsys.readouterr().err

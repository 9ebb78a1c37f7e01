"""datasets.py: the stems, MUSDB18(-HQ) and MIR-1K readers behind find_tracks / Track.load."""

from pathlib import Path

import numpy as np
import pytest

from separation import audio, datasets
from helpers import write_stems
from separation.errors import UserError


def _pcm(x):
    """What a 16-bit WAV gives back."""
    return np.round(np.clip(x, -1, 1) * 32767) / 32767


# --------------------------------------------------------------------------------------------
# stems
# --------------------------------------------------------------------------------------------


@pytest.fixture
def stems_root(tmp_path):
    root = tmp_path / "ds"
    write_stems(root / "train" / "full", seconds=1.0)
    # no mixture, no accompaniment: accompaniment = drums + bass, mixture = vocals + accompaniment
    arrays = write_stems(root / "train" / "parts", seconds=1.0, parts=("vocals",), freq=300)
    audio.save_audio(root / "train" / "parts" / "drums.wav", arrays["accompaniment"], 8192)
    audio.save_audio(root / "train" / "parts" / "bass.flac", 0.5 * arrays["accompaniment"], 8192)
    # mixture and vocals only: accompaniment = mixture - vocals
    write_stems(root / "test" / "nomix", seconds=1.0, parts=("mixture", "vocals"))
    return root


def test_stems_lists_splits_sorted(stems_root):
    tracks = datasets.find_tracks("stems", stems_root)
    assert [(t.name, t.split, t.dataset) for t in tracks] == [
        ("full", "train", "stems"), ("nomix", "test", "stems"), ("parts", "train", "stems")]
    assert [t.name for t in datasets.find_tracks("stems", stems_root, "train")] == ["full", "parts"]
    # a split folder given as root (the layout export writes) works with or without --split
    flat = datasets.find_tracks("stems", stems_root / "train")
    assert [(t.name, t.split) for t in flat] == [("full", "train"), ("parts", "train")]
    assert {t.split for t in datasets.find_tracks("stems", stems_root / "train", "mine")} == {"mine"}


def test_stems_load_fills_missing_parts(stems_root):
    by_name = {t.name: t for t in datasets.find_tracks("stems", stems_root)}
    full, sr = by_name["full"].load()
    assert sr == 8192 and set(full) == {"mixture", "vocals", "accompaniment"}
    assert all(a.dtype == np.float32 and a.shape == (8192, 1) for a in full.values())

    parts, _ = by_name["parts"].load()
    drums = audio.load_audio(stems_root / "train" / "parts" / "drums.wav")[0]
    bass = audio.load_audio(stems_root / "train" / "parts" / "bass.flac")[0]
    np.testing.assert_allclose(parts["accompaniment"], drums + bass, atol=1e-6)
    np.testing.assert_allclose(parts["mixture"], parts["vocals"] + parts["accompaniment"], atol=1e-6)

    nomix, _ = by_name["nomix"].load()
    np.testing.assert_allclose(nomix["accompaniment"], nomix["mixture"] - nomix["vocals"], atol=1e-6)
    assert np.abs(nomix["accompaniment"]).max() > 0.01  # really the noise, not zeros


def test_stems_align_rates_channels_and_lengths(tmp_path):
    folder = tmp_path / "ds" / "train" / "odd"
    arrays = write_stems(folder, sr=16000, seconds=1.0, channels=2, parts=("mixture",))
    # vocals mono at another rate and a little longer: resampled to the mixture's rate, copied
    # to both channels, cropped to the common length
    write_stems(folder, sr=8000, seconds=1.01, parts=("vocals",))
    (track,) = datasets.find_tracks("stems", tmp_path / "ds")
    loaded, sr = track.load()
    assert sr == 16000
    assert {k: v.shape for k, v in loaded.items()} == {k: (16000, 2) for k in loaded}
    np.testing.assert_array_equal(loaded["vocals"][:, 0], loaded["vocals"][:, 1])
    np.testing.assert_allclose(loaded["mixture"], _pcm(arrays["mixture"]), atol=1e-4)


def test_stems_bad_roots_show_the_layout(tmp_path, stems_root):
    with pytest.raises(UserError, match=r"no such folder; expected <root>/<split>/<track>/\{mixture,vocals"):
        datasets.find_tracks("stems", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty dataset.*expected <root>/<split>/<track>"):
        datasets.find_tracks("stems", tmp_path / "empty")
    with pytest.raises(UserError, match=r"no split folder 'valid' \(found: test, train\)"):
        datasets.find_tracks("stems", stems_root, "valid")
    (stems_root / "train" / "full" / "vocals.wav").unlink()
    with pytest.raises(UserError, match="full: no vocals file; expected"):
        datasets.find_tracks("stems", stems_root)


def test_stems_duplicate_names_need_a_split(tmp_path):
    write_stems(tmp_path / "ds" / "train" / "song", seconds=0.5)
    write_stems(tmp_path / "ds" / "test" / "song", seconds=0.5)
    with pytest.raises(UserError, match="song appear in several splits; choose one split"):
        datasets.find_tracks("stems", tmp_path / "ds")
    assert [t.split for t in datasets.find_tracks("stems", tmp_path / "ds", "test")] == ["test"]


def test_unknown_dataset_and_unit(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'musdb18'; choose one of stems, musdb"):
        datasets.find_tracks("musdb18", tmp_path)
    with pytest.raises(UserError, match="unknown unit 'song'"):
        datasets.find_tracks("stems", tmp_path, unit="song")


# --------------------------------------------------------------------------------------------
# MIR-1K
# --------------------------------------------------------------------------------------------


def test_mir1k_splits(mir1k_root):
    clips = {s: datasets.find_tracks("mir1k", mir1k_root, s, unit="clip") for s in datasets.MIR1K_SPLITS}
    counts = {s: len(v) for s, v in clips.items()}
    # Huang et al. 2014: abjones + amy = 175 training clips, the other 825 for testing
    assert counts["huang-train"] == 175 and counts["huang-test"] == 825
    assert {t.name.split("_")[0] for t in clips["huang-train"]} == {"abjones", "amy"}
    # singer-disjoint split: covers all 1000 clips once, no singer in two parts
    assert counts["train"] + counts["validation"] + counts["test"] == 1000
    singers = {s: {t.name.split("_")[0] for t in clips[s]} for s in ("train", "validation", "test")}
    assert singers["test"] == set(datasets.MIR1K_TEST_SINGERS)
    assert singers["validation"] == set(datasets.MIR1K_VALIDATION_SINGERS)
    assert not singers["train"] & (singers["test"] | singers["validation"])
    # all clips without a split: each tagged with its singer-disjoint split
    everything = datasets.find_tracks("mir1k", mir1k_root, unit="clip")
    assert len(everything) == 1000 and {t.split for t in everything} == {"train", "validation", "test"}
    songs = datasets.find_tracks("mir1k", mir1k_root)
    assert len(songs) == 110 and sum(len(t.files) for t in songs) == 1000
    with pytest.raises(UserError, match="unknown mir1k split 'dev'"):
        datasets.find_tracks("mir1k", mir1k_root, "dev")


def test_mir1k_clip_channels_and_song_join(mir1k_root):
    by_name = {t.name: t for t in datasets.find_tracks("mir1k", mir1k_root, "huang-train", unit="clip")}
    clip, sr = by_name["abjones_1_01"].load()
    raw, raw_sr = audio.load_audio(mir1k_root / "Wavfile" / "abjones_1_01.flac")
    assert sr == raw_sr == 8192
    np.testing.assert_array_equal(clip["accompaniment"][:, 0], raw[:, 0])  # left
    np.testing.assert_array_equal(clip["vocals"][:, 0], raw[:, 1])  # right
    np.testing.assert_array_equal(clip["mixture"], clip["vocals"] + clip["accompaniment"])

    song = next(t for t in datasets.find_tracks("mir1k", mir1k_root, "huang-train") if t.name == "abjones_1")
    assert [Path(p).stem for _, p in song.files] == sorted(n for n in by_name if n.startswith("abjones_1_"))
    joined, _ = song.load()
    parts = [by_name[Path(p).stem].load()[0]["vocals"] for _, p in song.files]
    np.testing.assert_array_equal(joined["vocals"], np.concatenate(parts))  # clip order, nothing lost


def test_mir1k_wrong_root(tmp_path):
    (tmp_path / "Wavfile").mkdir()
    (tmp_path / "Wavfile" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"no MIR-1K clips found; expected <root>/Wavfile/<singer>_<song>_<clip>"):
        datasets.find_tracks("mir1k", tmp_path)


# --------------------------------------------------------------------------------------------
# MUSDB18 on the real stem file that stempeg ships
# --------------------------------------------------------------------------------------------

VALIDATION_NAME = "Actions - One Minute Smile"  # on musdb's validation list


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory):
    """A tiny MUSDB18 folder: the stempeg sample as one validation, one train and one test track."""
    stempeg = pytest.importorskip("stempeg")
    sample = Path(stempeg.example_stem_path())
    root = tmp_path_factory.mktemp("musdb")
    for subset, name in (("train", VALIDATION_NAME), ("train", "Sample - Train"), ("test", "Sample - Test")):
        (root / subset).mkdir(exist_ok=True)
        (root / subset / f"{name}.stem.mp4").symlink_to(sample)
    return root


def test_musdb_splits(musdb_root):
    with pytest.warns(UserWarning, match="13 of the 14 MUSDB validation tracks are absent"):
        tracks = datasets.find_tracks("musdb", musdb_root)
    assert [(t.name, t.split) for t in tracks] == [
        (VALIDATION_NAME, "validation"), ("Sample - Test", "test"), ("Sample - Train", "train")]
    assert [t.name for t in datasets.find_tracks("musdb", musdb_root, "train")] == ["Sample - Train"]
    assert [t.name for t in datasets.find_tracks("musdb", musdb_root, "test")] == ["Sample - Test"]
    with pytest.warns(UserWarning):
        assert [t.split for t in datasets.find_tracks("musdb", musdb_root, "valid")] == ["validation"]


def test_musdb_validation_tracks_all_absent(tmp_path, musdb_root):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "Other.stem.mp4").symlink_to(musdb_root / "train" / "Sample - Train.stem.mp4")
    with pytest.warns(UserWarning, match="14 of the 14"), pytest.raises(UserError, match="empty dataset"):
        datasets.find_tracks("musdb", tmp_path, "validation")


@pytest.mark.slow
def test_musdb_load(musdb_root):
    (track,) = datasets.find_tracks("musdb", musdb_root, "test")
    stems, sr = track.load()
    assert sr == 44100
    assert {k: (v.shape, v.dtype) for k, v in stems.items()} == {k: ((268288, 2), np.float32) for k in stems}
    import stempeg

    raw, _ = stempeg.read_stems(str(musdb_root / "test" / "Sample - Test.stem.mp4"), dtype=np.float32)
    np.testing.assert_array_equal(stems["vocals"], raw[4])
    np.testing.assert_allclose(stems["accompaniment"], raw[1] + raw[2] + raw[3], atol=1e-6)
    # the stored mixture is the real (AAC-coded, mastered) mix: close to the sum of the stems
    residual = stems["mixture"] - stems["vocals"] - stems["accompaniment"]
    assert 10 * np.log10(np.sum(stems["mixture"] ** 2) / np.sum(residual**2)) > 10


def test_musdb_hq_wav_layout(tmp_path, musdb_root):
    (track,) = datasets.find_tracks("musdb", musdb_root, "test")
    import stempeg

    raw, sr = stempeg.read_stems(track.files[0][1], dtype=np.float32)
    folder = tmp_path / "train" / VALIDATION_NAME
    folder.mkdir(parents=True)
    scale = 0.2  # keep the stems below full scale so the 16-bit files hold them
    for name, i in datasets.MUSDB_STEM_IDS.items():
        audio.save_audio(folder / f"{name}.wav", scale * raw[i][:44100], sr)
    with pytest.raises(UserError, match="no train/ or test/ folder; expected <root>/train/<name>/"):
        datasets.find_tracks("musdb-hq", tmp_path / "train")
    with pytest.warns(UserWarning, match="13 of the 14"):
        (hq,) = datasets.find_tracks("musdb-hq", tmp_path)
    assert (hq.name, hq.split, hq.dataset) == (VALIDATION_NAME, "validation", "musdb-hq")
    stems, hq_sr = hq.load()
    assert hq_sr == sr and stems["vocals"].shape == (44100, 2)
    expected = sum(_pcm(scale * raw[datasets.MUSDB_STEM_IDS[n]][:44100]) for n in datasets.MUSDB_ACCOMPANIMENT)
    np.testing.assert_allclose(stems["accompaniment"], expected, atol=1e-4)


def test_musdb_corrupt_file_names_it(tmp_path):
    (tmp_path / "test").mkdir()
    bad = tmp_path / "test" / "Broken.stem.mp4"
    bad.write_bytes(b"not an mp4 at all" * 100)
    (track,) = datasets.find_tracks("musdb", tmp_path, "test")
    with pytest.raises(audio.AudioError, match="Broken.stem.mp4"):
        track.load()

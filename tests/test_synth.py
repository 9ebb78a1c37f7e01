"""Tests of synth.py: the synthetic stems dataset (determinism, exact mixtures, silence, format)."""

import json

import numpy as np
import pytest
import soundfile as sf

from separation import synth
from separation.errors import UserError

SR = 44100
SECONDS = 6.0
STEMS = ("mixture", "vocals", "accompaniment")


def read_int16(path):
    data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    assert sr == SR
    return data.astype(np.int32)


def file_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two train and one test track of 6 s, seed 0: ``(root, folders)``."""
    root = tmp_path_factory.mktemp("synth") / "data"
    folders = synth.synthesize_dataset(root, seed=0, n_train=2, n_test=1, seconds=SECONDS, progress=False)
    return root, folders


@pytest.mark.slow
def test_layout_format_and_description(dataset):
    root, folders = dataset
    assert folders == [root / "train" / "train000", root / "train" / "train001", root / "test" / "test000"]
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.wav" for s in STEMS)
        for stem in STEMS:
            info = sf.info(str(folder / f"{stem}.wav"))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 2, "PCM_16", "WAV")
            assert info.frames == int(SECONDS * SR)
    meta = json.loads((root / "dataset.json").read_text())
    assert {k: meta[k] for k in ("seed", "n_train", "n_test", "seconds", "sr")} == {
        "seed": 0, "n_train": 2, "n_test": 1, "seconds": SECONDS, "sr": SR}
    assert not list(root.rglob("*.part*")), "temporary files left behind"


def test_mixture_is_the_exact_sum_of_the_stems(dataset):
    for folder in dataset[1]:
        vocals, acc, mix = (read_int16(folder / f"{s}.wav") for s in ("vocals", "accompaniment", "mixture"))
        np.testing.assert_array_equal(mix, vocals + acc)
        assert np.abs(mix).max() < 32767 * 0.95, "the mixture must keep headroom"
        # The float view that audio.load_audio gives is exact too.
        fv, fa, fm = (sf.read(str(folder / f"{s}.wav"), dtype="float32")[0]
                      for s in ("vocals", "accompaniment", "mixture"))
        np.testing.assert_array_equal(fm, fv + fa)


def test_same_seed_gives_the_same_bytes_whatever_the_number_of_tracks(dataset, tmp_path):
    root, _ = dataset
    synth.synthesize_dataset(tmp_path / "again", seed=0, n_train=1, n_test=1, seconds=SECONDS, progress=False)
    first, again = file_bytes(root), file_bytes(tmp_path / "again")
    for name in ("train/train000", "test/test000"):
        for stem in STEMS:
            assert again[f"{name}/{stem}.wav"] == first[f"{name}/{stem}.wav"], f"{name}/{stem} differs"


def test_different_seeds_and_tracks_differ(dataset, tmp_path):
    root, _ = dataset
    synth.synthesize_dataset(tmp_path / "other", seed=1, n_train=1, n_test=0, seconds=SECONDS, progress=False)
    first, other = file_bytes(root), file_bytes(tmp_path / "other")
    for stem in STEMS:
        assert other[f"train/train000/{stem}.wav"] != first[f"train/train000/{stem}.wav"]
        assert first[f"train/train001/{stem}.wav"] != first[f"train/train000/{stem}.wav"]
        assert first[f"test/test000/{stem}.wav"] != first[f"train/train000/{stem}.wav"]


@pytest.mark.slow
def test_files_match_the_score_silent_rests_and_sung_phrases(dataset):
    root, _ = dataset
    for split, index in (("train", 0), ("train", 1), ("test", 0)):
        vocals, acc, score = synth.synthesize_track(synth.track_seed(0, split, index), SECONDS, SR)
        folder = root / split / synth.track_name(split, index)
        on_disk = read_int16(folder / "vocals.wav")
        np.testing.assert_array_equal(on_disk, np.round(vocals * 32768).astype(np.int32))
        np.testing.assert_array_equal(read_int16(folder / "accompaniment.wav"), np.round(acc * 32768))
        json.dumps(score)  # plain data, for plots and notebooks

        phrases, rests = score["phrases"], score["rests"]
        assert phrases and rests
        edges = sorted(phrases + rests)  # phrases and rests tile the track
        assert edges[0][0] == 0.0 and edges[-1][1] == pytest.approx(SECONDS)
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(edges[:-1], edges[1:]))
        for start, end in rests:
            assert not on_disk[int(round(start * SR)):int(round(end * SR))].any(), f"voice in rest {start}-{end}"
        for start, end in phrases:
            segment = on_disk[int(round(start * SR)):int(round(end * SR))] / 32768
            assert 20 * np.log10(np.sqrt(np.mean(segment ** 2))) > -50, f"phrase {start}-{end} is silent"
        for note in score["notes"]:
            assert any(a <= note["onset"] and note["offset"] <= b for a, b in phrases)


def test_voice_has_energy_above_4khz(dataset):
    for folder in dataset[1]:
        vocals = read_int16(folder / "vocals.wav").mean(axis=1)
        power = np.abs(np.fft.rfft(vocals)) ** 2
        freqs = np.fft.rfftfreq(len(vocals), 1 / SR)
        above_4k = 10 * np.log10(power[freqs > 4000].sum() / power.sum())
        above_8k = 10 * np.log10(power[(freqs > 8000) & (freqs < 12000)].sum() / power.sum())
        assert above_4k > -35, f"{folder}: only {above_4k:.1f} dB of the voice above 4 kHz"
        assert above_8k > -55, f"{folder}: only {above_8k:.1f} dB of the voice in 8-12 kHz"


def test_levels_are_balanced_and_varied(dataset):
    ratios = []
    for folder in dataset[1]:
        vocals, acc = (read_int16(folder / f"{s}.wav") / 32768 for s in ("vocals", "accompaniment"))
        ratios.append(20 * np.log10(np.sqrt(np.mean(vocals ** 2)) / np.sqrt(np.mean(acc ** 2))))
        peak = 20 * np.log10(np.abs(vocals + acc).max())
        assert -3.1 < peak < -0.4
    assert all(-3.1 < r < 3.1 for r in ratios), ratios
    assert np.ptp(ratios) > 0.1, ratios


@pytest.mark.parametrize("kwargs, words", [
    ({"seconds": 0}, "--seconds"),
    ({"seconds": -1.0}, "--seconds"),
    ({"seconds": float("nan")}, "--seconds"),
    ({"seconds": "long"}, "--seconds"),
    ({"n_train": -1}, "--train"),
    ({"n_test": 1.5}, "--test"),
    ({"n_train": 0, "n_test": 0}, "at least one track"),
    ({"seed": -3}, "--seed"),
    ({"seed": True}, "--seed"),
    ({"sr": 8000}, "sample rate"),
])
def test_bad_arguments_raise_a_one_line_user_error(tmp_path, kwargs, words):
    args = {"seed": 0, "n_train": 1, "n_test": 0, "seconds": 3.0, "progress": False, **kwargs}
    with pytest.raises(UserError) as err:
        synth.synthesize_dataset(tmp_path / "out", **args)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing may be written for bad arguments"


def test_synthesize_track_checks_its_arguments():
    with pytest.raises(UserError):
        synth.synthesize_track(0, seconds=0.0)
    with pytest.raises(UserError):
        synth.synthesize_track(0, seconds=3.0, sr=1000)


def test_refuses_a_folder_holding_another_dataset(tmp_path):
    out = tmp_path / "out"
    synth.synthesize_dataset(out, seed=0, n_train=1, n_test=0, seconds=2.0, progress=False)
    with pytest.raises(UserError, match="seed=0 \\(asked 1\\)"):
        synth.synthesize_dataset(out, seed=1, n_train=1, n_test=0, seconds=2.0, progress=False)
    with pytest.raises(UserError, match="n_train"):
        synth.synthesize_dataset(out, seed=0, n_train=2, n_test=0, seconds=2.0, progress=False)

    foreign = tmp_path / "musdb"
    (foreign / "train" / "song").mkdir(parents=True)
    with pytest.raises(UserError, match="train/ folder"):
        synth.synthesize_dataset(foreign, n_train=1, n_test=0, seconds=2.0, progress=False)
    assert not (foreign / "dataset.json").exists()

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        synth.synthesize_dataset(a_file, n_train=1, n_test=0, seconds=2.0, progress=False)


def test_rerun_skips_complete_tracks_and_finishes_an_interrupted_run(tmp_path):
    out = tmp_path / "out"
    args = {"seed": 5, "n_train": 2, "n_test": 0, "seconds": 2.0, "progress": False}
    synth.synthesize_dataset(out, **args)
    before = file_bytes(out)
    stamp = (out / "train/train000/mixture.wav").stat().st_mtime_ns
    (out / "train/train001/mixture.wav").unlink()  # as if interrupted before the last stem
    synth.synthesize_dataset(out, **args)
    assert (out / "train/train000/mixture.wav").stat().st_mtime_ns == stamp, "a complete track was rewritten"
    assert file_bytes(out) == before


def test_the_stems_reader_finds_every_track_by_a_unique_name(dataset):
    from separation import datasets

    root, _ = dataset
    tracks = datasets.find_tracks("stems", root)  # all splits at once: names must not collide
    assert sorted((t.split, t.name) for t in tracks) == [("test", "test000"), ("train", "train000"),
                                                         ("train", "train001")]
    stems, sr = tracks[0].load()
    assert sr == SR and stems["vocals"].shape == (int(SECONDS * SR), 2)
    np.testing.assert_array_equal(stems["mixture"], stems["vocals"] + stems["accompaniment"])

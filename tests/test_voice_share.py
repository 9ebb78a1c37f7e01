"""train.py --voice-share DATASET=P and --vocal-fx-on DATASET: whose voices a training patch draws,
and whose voices the vocal effects process, in a cache that holds two datasets with vocals."""

import subprocess
import sys

import numpy as np
import pytest

import data_generator as dg
import train
from separation import audio
from separation.augment import Augmentation, AugmentationError, make_augmentation, mixed_waveforms
from separation.cache import Cache
from separation.errors import UserError

SR = audio.DEFAULT_PARAMS.sample_rate


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, mir1k_root):
    """A format-2 cache, split train: three stems tracks (sines over noise, 14 s) and two MIR-1K songs."""
    root = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(0)
    t = np.arange(14 * SR) / SR
    for i in range(3):
        vocals = 0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)
        accompaniment = 0.05 * rng.standard_normal(t.size)
        (root / "stems" / "train" / f"song{i}").mkdir(parents=True)
        for part, wave in (("vocals", vocals), ("accompaniment", accompaniment), ("mixture", vocals + accompaniment)):
            audio.save_audio(root / "stems" / "train" / f"song{i}" / f"{part}.wav", wave[:, None].astype(np.float32), SR)
    cache = root / "cache"
    assert dg.main(["prepare", "--dataset", "stems", "--root", str(root / "stems"), "--split", "train",
                    "--cache", str(cache), "--quiet"]) == 0
    assert dg.main(["prepare", "--dataset", "mir1k", "--root", str(mir1k_root), "--split", "train", "--limit", "2",
                    "--cache", str(cache), "--quiet"]) == 0
    return Cache(cache)


def drawn_datasets(cache: Cache, augmentation: Augmentation, batches: int = 50) -> np.ndarray:
    """The dataset of every patch's vocals over ``batches`` training batches of 16 (plans only, no audio read)."""
    sampler = dg.PatchSampler(cache, batch_size=16, steps_per_epoch=batches, seed=3, augmentation=augmentation)
    names = np.array([t["dataset"] for t in sampler.tracks.entries])
    return np.concatenate([names[sampler.plan(i)["track"]] for i in range(batches)])


def test_voice_share_draws_each_dataset_at_its_probability(two_datasets):
    stems = two_datasets.names(dataset="stems")
    uniform = drawn_datasets(two_datasets, Augmentation(instrumental_share=0))
    # by default every track with vocals alike: 3 of 5 tracks are stems
    assert abs(np.mean(uniform == "stems") - 0.6) < 0.06
    for share in (0.0, 0.25, 0.9, 1.0):
        drawn = drawn_datasets(two_datasets, Augmentation(instrumental_share=0, voice_tracks=stems, voice_share=share))
        assert abs(np.mean(drawn == "stems") - share) < 0.06, share  # 800 draws: sd of the share <= 0.018
    assert set(drawn_datasets(two_datasets, Augmentation(voice_tracks=stems, voice_share=1.0))) == {"stems"}
    assert set(drawn_datasets(two_datasets, Augmentation(voice_tracks=stems, voice_share=0.0))) == {"mir1k"}


def test_voice_share_leaves_other_runs_batches_alone(two_datasets):
    """A run without the option draws the plans it always did (the new draw happens only when it is on)."""
    sampler = dg.PatchSampler(two_datasets, batch_size=8, steps_per_epoch=4, seed=1,
                               augmentation=Augmentation(instrumental_share=0))
    rng = np.random.default_rng((1, 0, 2))
    expected = sampler._vocal_tracks[rng.integers(len(sampler._vocal_tracks), size=8)]
    np.testing.assert_array_equal(sampler.plan(2)["track"], expected)


def test_vocal_fx_only_on_the_chosen_dataset(two_datasets):
    sampler = dg.PatchSampler(two_datasets, batch_size=2, augmentation=Augmentation(vocal_level=(0, 0)))
    names = [t["name"] for t in sampler.tracks.entries]
    by_dataset = {ds: np.array([names.index(n) for n in two_datasets.names(dataset=ds)][:2]) for ds in ("stems", "mir1k")}
    fx = Augmentation(vocal_level=(0, 0), effects=("highpass", "reverb"), effects_tracks=two_datasets.names(dataset="mir1k"))
    plain = Augmentation(vocal_level=(0, 0))
    every = np.arange(len(names))
    for dataset, track in by_dataset.items():
        offset = np.zeros(2, np.int64)
        with_fx = mixed_waveforms(sampler.tracks, fx, every, track, offset, np.random.default_rng(0))
        without = mixed_waveforms(sampler.tracks, plain, every, track, offset, np.random.default_rng(0))
        vocals_fx, vocals = with_fx[:, 2:], without[:, 2:]
        if dataset == "stems":  # not chosen: its vocals exactly as without effects
            np.testing.assert_array_equal(vocals_fx, vocals)
        else:  # processed: the reverb's tail and the high-pass change the waveform
            assert np.abs(vocals_fx - vocals).max() > 1e-2


def test_make_augmentation_turns_datasets_into_tracks(two_datasets, tmp_path):
    names = two_datasets.names()
    config = train.TrainConfig(cache=str(two_datasets.path), voice_share=("stems", 0.75), vocal_level=(-10.0, 2.0),
                               vocal_fx=("reverb",), vocal_fx_on="mir1k")
    a = make_augmentation(config, two_datasets, names)
    assert a.voice_tracks == tuple(two_datasets.names(dataset="stems")) and a.voice_share == 0.75
    assert a.effects_tracks == tuple(two_datasets.names(dataset="mir1k")) and a.mixing
    with pytest.raises(UserError, match="--voice-share musdb: no training track of that dataset"):
        make_augmentation(train.TrainConfig(cache="c", voice_share=("musdb", 0.5)), two_datasets, names)
    with pytest.raises(UserError, match="--vocal-fx-on chooses whose vocals --vocal-fx processes"):
        make_augmentation(train.TrainConfig(cache="c", vocal_fx_on="mir1k"), two_datasets, names)
    # every voice of the cache chosen, with a share below 1: nothing to draw the rest from
    with pytest.raises(UserError, match="a voice share below 1 has no other voices"):
        dg.PatchSampler(two_datasets, batch_size=2,
                        augmentation=Augmentation(voice_tracks=names, voice_share=0.5))


def test_augmentation_refuses_half_a_voice_share():
    with pytest.raises(AugmentationError, match="go together"):
        Augmentation(voice_tracks=("a",))
    with pytest.raises(AugmentationError, match=r"must be in \[0, 1\]"):
        Augmentation(voice_tracks=("a",), voice_share=1.5)


@pytest.mark.parametrize("value", ["stems", "stems=", "=0.5", "stems=1.5", "stems=x"])
def test_voice_share_option_refuses_a_bad_value(value):
    with pytest.raises(Exception, match=r"DATASET=P with P in \[0, 1\]"):
        train.dataset_share(value)


def test_command_line_refusal_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "--run-dir", str(tmp_path / "r"), "--cache", str(tmp_path),
                           "--voice-share", "stems=2"], capture_output=True, text=True, cwd=train.__file__.rsplit("/", 1)[0])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--voice-share: 'stems=2': give DATASET=P with P in [0, 1]" in proc.stderr

"""Tracks shorter than a patch (``--short-tracks pad|place|fill``, separation/augment.py): where a
short track lies in its patch, the accompaniment that fills a patch, the magnitudes against the
mixed waveforms, reproducible draws and the refusals."""

import json

import numpy as np
import pytest

import data_generator as dg
import train
from separation import augment, audio, cli
from separation.augment import Augmentation, AugmentationError
from separation.cache import Cache
from helpers import write_stems

P = audio.DEFAULT_PARAMS
LENGTH = P.patch_frames * P.hop_length  # samples of a patch
SECONDS = {"four": 4.0, "five": 5.0}  # both shorter than a patch (12 s)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A format-2 cache of two short tracks (4 and 5 s, 8192 Hz): a sine as vocals over noise."""
    root = tmp_path_factory.mktemp("short")
    for seed, ((name, seconds), freq) in enumerate(zip(SECONDS.items(), (496.0, 1504.0))):
        write_stems(root / "train" / name, seconds=seconds, freq=freq, seed=seed)
    cache = root / "cache"
    assert dg.main(["prepare", "--dataset", "stems", "--root", str(root), "--cache", str(cache), "--quiet"]) == 0
    return cache


def sampler(cache_dir, seed=0, **settings):
    return dg.PatchSampler(cache_dir, batch_size=8, steps_per_epoch=3, seed=seed, augmentation=Augmentation(**settings))


def waveforms(gen, index):
    """The ``(samples, 2B)`` mixtures and vocals that batch ``index`` is the STFT of, drawn as the sampler draws."""
    plan = gen.plan(index)
    return plan, augment.mixed_waveforms(gen.tracks, gen.augmentation, np.arange(len(gen.tracks)), plan["track"],
                                         plan["offset"], plan["rng"])


def magnitudes(waves):
    """``(mixture, vocals)`` normalised patches ``(B, n_bins, patch_frames, 1)`` of the waveforms' columns."""
    spec = np.abs(audio.model_bins(audio.stft(waves, P), P))[:, :P.patch_frames].transpose(2, 0, 1)
    size = spec.shape[0] // 2
    mixture, vocals = audio.normalize_patches(spec[:size], spec[size:])
    return mixture[..., None], vocals[..., None]


def placed_vocals(gen, plan, b, vocals):
    """Check that a patch's vocal waveform is its track's, scaled, from sample ``-offset * hop`` and zero elsewhere."""
    name = gen.tracks.entries[plan["track"][b]]["name"]
    wave = np.asarray(gen.cache.wave(name, "vocals"))
    first = -plan["offset"][b] * P.hop_length
    inside = vocals[first:first + len(wave)]
    gain = float(inside @ wave / (wave @ wave))
    np.testing.assert_allclose(inside, gain * wave, atol=1e-6)
    assert not vocals[:first].any() and not vocals[first + len(wave):].any()
    return name, gain


# --------------------------------------------------------------------------------------------
# Where a short track lies
# --------------------------------------------------------------------------------------------


def test_draw_starts_places_only_short_tracks():
    lengths = np.array([300, 128, 50, 44])
    pad = augment.draw_starts(lengths, 128, np.random.default_rng(3))
    place = augment.draw_starts(lengths, 128, np.random.default_rng(3), place=True)
    assert pad[1:].tolist() == [0, 0, 0] and place[:2].tolist() == pad[:2].tolist()  # long tracks: the same draws
    many = augment.draw_starts(np.full(5000, 44), 128, np.random.default_rng(0), place=True)
    assert many.min() == 44 - 128 and many.max() == 0  # the whole track inside the patch, at every offset


def test_pad_keeps_a_short_track_at_the_start(cache_dir):
    assert Augmentation(short_tracks="pad") == Augmentation() and not Augmentation().active
    gen = dg.PatchSampler(cache_dir, batch_size=8, steps_per_epoch=2, seed=1)
    mixture, _ = gen[0]
    assert not gen.plan(0)["offset"].any()
    for b, t in enumerate(gen.plan(0)["track"]):
        frames = gen.tracks.frames[t]
        assert mixture[b, :, :frames - 1].any(axis=0).all() and not mixture[b, :, frames:].any()  # (the last
        # frame, centred a hop past the track's end, may see none of it)


def test_place_puts_a_short_track_at_a_random_offset_and_nothing_elsewhere(cache_dir):
    gen = sampler(cache_dir, short_tracks="place")
    cache = Cache(cache_dir)
    offsets = []
    for index in range(len(gen)):
        mixture, vocals = gen[index]
        plan = gen.plan(index)
        for b, (t, o) in enumerate(zip(plan["track"], plan["offset"])):
            frames = gen.tracks.frames[t]
            assert frames - P.patch_frames <= o <= 0
            expected = np.zeros((P.n_bins, P.patch_frames), np.float32)
            expected[:, -o:-o + frames] = cache.array(gen.tracks.entries[t]["name"], "mixture")
            np.testing.assert_allclose(mixture[b, ..., 0], expected / expected.max(), rtol=1e-6)
            assert not vocals[b, :, :-o].any() and not vocals[b, :, -o + frames:].any()
            offsets.append(int(o))
    assert len(set(offsets)) > 12  # spread over the patch, not at its start


def test_place_in_the_waveform_mode_keeps_the_magnitudes_of_the_placed_waves(cache_dir):
    """The vocals lie from sample -offset * hop, their magnitudes are the cached ones moved by -offset
    frames, the accompaniment (placed on its own) is one whole short track, and the batch is the
    magnitude of the mixed waveforms."""
    gen = sampler(cache_dir, short_tracks="place", vocal_level=(0.0, 0.0))
    cache = Cache(cache_dir)
    for index in range(len(gen)):
        plan, waves = waveforms(gen, index)
        for b, (t, o) in enumerate(zip(plan["track"], plan["offset"])):
            vocals = waves[:, 8 + b]
            name, gain = placed_vocals(gen, plan, b, vocals)
            frames = gen.tracks.frames[t]
            moved = np.zeros((P.n_bins, P.patch_frames), np.float32)
            moved[:, -o:-o + frames] = gain * cache.array(name, "vocals")
            np.testing.assert_allclose(audio.magnitude(vocals, P)[:, :P.patch_frames], moved, atol=1e-4 * moved.max())
            accompaniment = np.flatnonzero(waves[:, b] - vocals)
            run = accompaniment[-1] - accompaniment[0] + 1
            assert min(gen.tracks.samples) - 2 <= run <= max(gen.tracks.samples)
        for got, expected in zip(gen[index], magnitudes(waves)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# fill: the accompaniment covers the patch
# --------------------------------------------------------------------------------------------


def test_fill_covers_the_patch_with_accompaniment_and_places_the_vocals(cache_dir):
    gen = sampler(cache_dir, short_tracks="fill", vocal_level=(0.0, 0.0))
    cache = Cache(cache_dir)
    waves_of = {n: np.asarray(cache.wave(n, "accompaniment")) for n in SECONDS}
    fade = round(augment.FILL_FADE * P.sample_rate)
    for index in range(len(gen)):
        plan, waves = waveforms(gen, index)
        for b in range(8):
            vocals = waves[:, 8 + b]
            placed_vocals(gen, plan, b, vocals)
            accompaniment = waves[:, b] - vocals
            # noise of RMS 0.05 everywhere: no silence past a track's end, no dip at a joint
            rms = np.sqrt(np.mean(accompaniment.reshape(-1, 512) ** 2, axis=1))
            assert 0.035 < rms.min() and rms.max() < 0.065, (index, b, rms.min(), rms.max())
            # the first piece is a whole track from its start, the next one follows it after the fade
            first = next(n for n, w in waves_of.items() if np.allclose(accompaniment[:len(w) - fade], w[:-fade], atol=1e-6))
            end = len(waves_of[first])
            assert any(np.allclose(accompaniment[end:end + 1000], w[fade:fade + 1000], atol=1e-6) for w in waves_of.values())
        mixture, vocals = gen[index]
        assert (mixture[..., 0].sum(axis=1) > 0.01).all()  # music in every frame of every patch
        for got, expected in zip((mixture, vocals), magnitudes(waves)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_fill_joins_pieces_with_an_equal_power_cross_fade(cache_dir):
    """Constant pieces make the fade visible: cosine out, sine in over ``fade`` samples, every
    piece (here 400 samples of 2.0) overlapping the one before by the fade."""
    tracks = dg.PatchSampler(cache_dir).tracks
    background = np.zeros(1000, np.float32)
    background[:300] = 1.0
    ones = np.ones(LENGTH, np.float32)
    tracks.segment = lambda t, source, start, length: (ones[:length] * 2, slice(0, min(length, 400)))
    out = augment.fill_accompaniment(tracks, np.array([0]), background, 300, 100, np.random.default_rng(0))
    angle = (np.arange(100) + 0.5) / 100 * np.pi / 2
    joint = 2 * np.cos(angle) + 2 * np.sin(angle)
    np.testing.assert_allclose(out[:200], 1.0)
    np.testing.assert_allclose(out[200:300], np.cos(angle) + 2 * np.sin(angle), rtol=1e-6)
    np.testing.assert_allclose(out[300:500], 2.0)  # the first piece of 400 samples, from sample 200
    np.testing.assert_allclose(out[500:600], joint, rtol=1e-6)  # the second from sample 500
    np.testing.assert_allclose(out[600:800], 2.0)
    np.testing.assert_allclose(out[800:900], joint, rtol=1e-6)  # the third from sample 800, cut at the end
    np.testing.assert_allclose(out[900:], 2.0)


# --------------------------------------------------------------------------------------------
# Reproducible draws
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [dict(short_tracks="place"), dict(short_tracks="place", remix=True),
                                      dict(short_tracks="fill", vocal_level=(-4.0, 6.0))])
def test_batches_depend_only_on_seed_epoch_index(cache_dir, settings):
    a, b = sampler(cache_dir, **settings), sampler(cache_dir, **settings)
    late = b[2]  # asked in another order, as parallel workers do
    for i in range(3):
        for x, y in zip(a[i], late if i == 2 else b[i]):
            np.testing.assert_array_equal(x, y)
    first = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], first)
    b.on_epoch_end()
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(sampler(cache_dir, seed=1, **settings)[0][0], first)


# --------------------------------------------------------------------------------------------
# The option: refusals and config.json
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, message", [
    (dict(short_tracks="fill"), "short_tracks fill joins accompaniment waveforms, so it needs vocal_level or "
                                "effects; without them use short_tracks place"),
    (dict(short_tracks="fill", remix=True), "short_tracks fill joins accompaniment waveforms"),
    (dict(short_tracks="loop"), "short_tracks must be one of pad, place, fill, got 'loop'"),
])
def test_a_setting_that_cannot_work_is_refused(settings, message):
    with pytest.raises(AugmentationError) as err:
        Augmentation(**settings)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_validation_takes_no_short_track_placement(cache_dir):
    with pytest.raises(ValueError, match="are for training; validation mode takes none"):
        dg.PatchSampler(cache_dir, mode="validation", augmentation=Augmentation(short_tracks="place"))


def train_args(cache_dir, tmp_path, *extra):
    return ["--cache", str(cache_dir), "--run-dir", str(tmp_path / "run"), "--validation-split", "0", *extra]


def test_the_command_line_refuses_fill_without_waveforms_in_one_line(cache_dir, tmp_path, capsys):
    assert cli.run_cli(train.main, train_args(cache_dir, tmp_path, "--short-tracks", "fill", "--remix")) == 2
    err = capsys.readouterr().err
    assert err == ("error: --short-tracks fill joins accompaniment waveforms, so it needs --vocal-level or --vocal-fx; "
                   "without them use --short-tracks place\n")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:
        train.main(train_args(cache_dir, tmp_path, "--short-tracks", "loop"))
    assert exit_info.value.code == 2 and "invalid choice: 'loop'" in capsys.readouterr().err


def test_the_option_reaches_config_json_and_the_augmentation(cache_dir, tmp_path):
    args = train.get_parser().parse_args(train_args(cache_dir, tmp_path, "--short-tracks", "fill", "--vocal-level", "-4", "6"))
    config = train.TrainConfig.from_args(args)
    assert config.to_dict()["short_tracks"] == "fill"
    augmentation = augment.make_augmentation(config, Cache(cache_dir), list(SECONDS))
    assert augmentation == Augmentation(vocal_level=(-4.0, 6.0), short_tracks="fill")
    default = train.TrainConfig.from_args(train.get_parser().parse_args(train_args(cache_dir, tmp_path)))
    assert default.short_tracks == "pad" and default.augmentation() == Augmentation()
    # a config.json written before the option existed: the run padded, and resumes so
    old = {k: v for k, v in default.to_dict().items() if k != "short_tracks"}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert train.TrainConfig.load(tmp_path / "config.json") == default

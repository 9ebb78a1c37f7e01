"""Tests of inference's second, finer mask (``refine_vocals``, ``Separator(refine=...)``, ``--refine``).

The refinement re-reads a first vocal estimate on a finer STFT and masks the mixture with
``min(|V| / |X|, 1)`` per channel. A constant-mask callable stands in for the model where a test
needs to know the first mask; the command line runs the session's tiny untrained U-Net.
"""

import numpy as np
import pytest
import soundfile as sf

from separation import audio, stems
import inference

SR = 44100


def noise(seconds, sr=SR, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def constant_mask(value):
    """A stand-in for the model: the same mask everywhere (normalised patches -> mask)."""
    return lambda patches: np.full(patches.shape, value, dtype=np.float32)


def sdr(reference, estimate):
    return 10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2))


def tones(seconds=3.0, sr=SR):
    """Vocals (a 440 Hz tone, tremolo) and accompaniment (3 kHz), panned differently: they share no cell."""
    t = np.arange(int(seconds * sr)) / sr
    vocals = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))[:, None] * [[1.0, 0.6]]
    accompaniment = (0.3 * np.sin(2 * np.pi * 3000 * t))[:, None] * [[0.5, 1.0]]
    return vocals.astype(np.float32), accompaniment.astype(np.float32)


def test_ratio_mask_is_the_estimates_share_clipped_to_one_and_zero_where_the_mixture_is_silent():
    mixture = np.array([2 + 0j, 1j, 0, -4], np.complex64)
    estimate = np.array([1 + 0j, 3 + 0j, 1, 1j], np.complex64)
    np.testing.assert_allclose(inference.ratio_mask(estimate, mixture), [0.5, 1.0, 0.0, 0.25])


def test_refinement_of_a_perfect_estimate_changes_it_little():
    """Sources that share no time-frequency cell: the true vocals come back to within 40 dB."""
    vocals, accompaniment = tones()
    refined = inference.refine_vocals(vocals + accompaniment, vocals, *inference.refine_grid(SR, 4096))
    assert sdr(vocals, refined) > 40


def test_refinement_keeps_each_channels_share_and_never_amplifies():
    """A scaled mixture is its own refinement, channel by channel; an estimate louder than the
    mixture is clipped to the mixture itself (the mask never exceeds 1)."""
    x = noise(4.0)
    grid = inference.refine_grid(SR, 4096)
    scaled = x * np.array([0.3, 0.8], np.float32)
    np.testing.assert_allclose(inference.refine_vocals(x, scaled, *grid), scaled, atol=1e-5)
    np.testing.assert_allclose(inference.refine_vocals(x, 3 * x, *grid), x, atol=1e-5)


def test_refinement_in_chunks_equals_one_piece():
    x = noise(6.0, seed=1)
    t = np.arange(len(x))[:, None] / SR
    first = x * (0.5 + 0.4 * np.sin(2 * np.pi * 1.3 * t)) + noise(6.0, seed=2) / 10  # a first estimate that varies
    grid = inference.refine_grid(SR, 2048)
    whole = inference.refine_vocals(x, first, *grid, chunk_frames=100_000)
    chunked = inference.refine_vocals(x, first, *grid, chunk_frames=37)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert not np.allclose(whole, first, atol=1e-4)  # it did refine


def test_refine_grid_keeps_the_windows_duration_at_every_rate():
    assert inference.refine_grid(44100, 4096) == (4096, 1024)
    assert inference.refine_grid(22050, 4096) == (2048, 512)
    for sr in (8192, 16000, 48000, 96000):
        n_fft, hop = inference.refine_grid(sr, 4096)
        assert n_fft % 2 == 0 and 4096 / 44100 <= n_fft / sr < 1.05 * 4096 / 44100 and hop == round(n_fft / 4)


@pytest.mark.parametrize("sr, channels", [(44100, 2), (22050, 1), (8192, 2)])
def test_separator_refines_keeps_shape_and_sums_to_the_mixture(sr, channels):
    x = noise(3.0, sr, channels)
    by_patch = lambda patches: np.clip(patches, 0, 1)  # noqa: E731  (a mask that varies with the song)
    plain = inference.Separator(by_patch, refine=None).separate(x, sr)
    refined = inference.Separator(by_patch, refine=4096, chunk_frames=50).separate(x, sr)
    for stem in refined.values():
        assert stem.shape == x.shape and stem.dtype == np.float32 and np.isfinite(stem).all()
    np.testing.assert_allclose(refined["vocals"] + refined["accompaniment"], x, atol=1e-6)
    assert not np.allclose(refined["vocals"], plain["vocals"], atol=1e-4)
    assert inference.Separator(by_patch, refine=4096).vocals(x[:, 0], sr).shape == (len(x),)  # 1-D in, 1-D out


def test_separator_refines_after_the_wiener_filter():
    x = noise(3.0)
    wiener = inference.Separator(constant_mask(0.5), post_filter="wiener")
    both = inference.Separator(constant_mask(0.5), post_filter="wiener", refine=4096)
    first = wiener.vocals(x, SR)
    np.testing.assert_allclose(both.vocals(x, SR), inference.refine_vocals(x, first, 4096, 1024), atol=1e-6)


def test_progress_counts_the_refinements_chunks():
    seen = []
    separator = inference.Separator(constant_mask(0.5), refine=4096, chunk_frames=20)
    separator.vocals(noise(5.0), SR, progress=lambda done, total: seen.append((done, total)))
    done, total = seen[-1]
    first = audio.n_chunks(5 * SR, *separator.stft_grid(SR), 20)
    assert done == total and total > first + inference.n_segments(1, 128)  # the refinement's chunks are counted


@pytest.mark.parametrize("refine", [8, 0, 2.5, 10**6])
def test_separator_refuses_a_refinement_window_out_of_range(refine):
    with pytest.raises(ValueError, match="refine"):
        inference.Separator(constant_mask(0.5), refine=refine)


def test_memory_estimate_counts_the_refinement():
    plain, refined = (inference.Separator(constant_mask(0.5), refine=r) for r in (None, 4096))
    minute = 60 * SR
    assert stems.memory_needed(minute, 2, SR, refined) > stems.memory_needed(minute, 2, SR, plain)
    # a window far longer than the first mask's: its chunk's two STFTs decide
    huge = inference.Separator(constant_mask(0.5), refine=inference.MAX_REFINE)
    assert stems.memory_needed(minute, 2, SR, huge) > stems.memory_needed(minute, 2, SR, refined)


@pytest.mark.parametrize("options, words", [
    (["--refine", "8"], "--refine: 8 is out of range"),
    (["--refine", "many"], "--refine: 'many' is not an integer"),
    (["--refine", "4096", "--no-refine"], "not allowed with argument --refine"),
])
def test_cli_refuses_bad_refine_options_in_one_line(tmp_path, capsys, options, words):
    song = tmp_path / "s.wav"
    sf.write(song, noise(1.0, 8192, 1), 8192)
    with pytest.raises(SystemExit) as exit_info:  # argparse: one line, exit 2, before any work
        inference.main([str(song), "-o", str(tmp_path / "out"), *options])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_refine_and_no_refine_separate_a_file(tmp_path, tiny_model_dir, capsys):
    song = tmp_path / "song.wav"
    x = noise(3.0, 22050, 2)
    sf.write(song, x, 22050, subtype="FLOAT")
    vocals = {}
    for name, options in (("off", ["--no-refine"]), ("on", ["--refine", "2048"])):
        argv = [str(song), "-o", str(tmp_path / name), "--model", str(tiny_model_dir), "--precision", "float32"]
        assert inference.main(argv + options) == 0
        assert f"{song} -> {tmp_path / name / 'song'}/vocals.wav, " in capsys.readouterr().out
        vocals[name], sr = sf.read(str(tmp_path / name / "song" / "vocals.wav"), dtype="float32")
        accompaniment, _ = sf.read(str(tmp_path / name / "song" / "accompaniment.wav"), dtype="float32")
        assert sr == 22050 and vocals[name].shape == x.shape
        np.testing.assert_allclose(vocals[name] + accompaniment, x, atol=1e-3)  # 16-bit files
    assert not np.allclose(vocals["on"], vocals["off"], atol=1e-3)


def test_the_refinement_is_on_by_default_and_no_refine_turns_it_off():
    parser = inference.get_parser()
    assert parser.parse_args(["s.wav"]).refine == inference.DEFAULT_REFINE == 4096
    assert parser.parse_args(["s.wav", "--no-refine"]).refine is None
    assert inference.Separator(constant_mask(0.5)).refine == 4096

"""evaluate.py, separation.metrics and separation.baselines: metrics that mean what they say, on stems folders written here."""

import math
import warnings

import numpy as np
import pytest

from separation import audio, cli, baselines, metrics
import evaluate
from separation.errors import UserError

from helpers import SR, references, voice_and_band, write_track


def write_estimates(folder, track, vocals, accompaniment, sr=SR):
    (folder / track).mkdir(parents=True, exist_ok=True)
    audio.save_audio(folder / track / "vocals.wav", vocals, sr)
    audio.save_audio(folder / track / "accompaniment.wav", accompaniment, sr)


def run(root, estimates, out, *extra):
    """main() on the stems fixture (the split folder itself: the layout inference users have)."""
    code = evaluate.main(["--references", str(root / "test"), "--estimates", str(estimates), "--out", str(out),
                          "--no-plots", "--quiet", *extra])
    return code, evaluate.read_csv(out / "per_track.csv")


def by(rows, track, method=None):
    return next(r for r in rows if r["track"] == track and (method is None or r["method"] == method))


# --------------------------------------------------------------------------------------------
# What the numbers mean
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_perfect_mixture_and_swapped_estimates(two_songs, tmp_path):
    """References as estimates: very high SDR; the mixture (the baseline that gives it as both
    sources, scored in the same run): NSDR exactly 0; swapped: far below."""
    cases = {}
    for case in ("perfect", "swapped"):
        est = tmp_path / case
        for name in ("song_a", "song_b"):
            refs, sr = references(two_songs, name)
            voc, acc = refs["vocals"], refs["accompaniment"]
            write_estimates(est, name, *{"perfect": (voc, acc), "swapped": (acc, voc)}[case])
        code, rows = run(two_songs, est, tmp_path / f"out_{case}", *(["--baselines", "mixture"] if case == "perfect" else []))
        assert code == 0 and all(r["status"] == "ok" for r in rows)
        for method in (case, "mixture") if case == "perfect" else (case,):
            cases[method] = [r for r in rows if r["method"] == method]
            assert [r["track"] for r in cases[method]] == ["song_a", "song_b"]
    for name in ("song_a", "song_b"):  # the baseline is the mixture itself, as both sources
        refs, _ = references(two_songs, name)
        np.testing.assert_array_equal(baselines.separate("mixture", refs["mixture"], SR)["vocals"], refs["mixture"])
    for perfect, mixture, swapped in zip(cases["perfect"], cases["mixture"], cases["swapped"]):
        for s in metrics.SOURCES:
            assert perfect[f"v3_{s}_SDR"] > 60 and perfect[f"v4_{s}_SDR"] > 60
            assert perfect[f"v3_{s}_NSDR"] > 50
            assert mixture[f"v3_{s}_NSDR"] == 0.0
            assert swapped[f"v3_{s}_SDR"] < -10 and swapped[f"v3_{s}_SIR"] < -10 and swapped[f"v4_{s}_SIR"] < -10
            assert swapped[f"v3_{s}_NSDR"] < -5 and mixture[f"v3_{s}_SDR"] > swapped[f"v3_{s}_SDR"] + 5
            # v4's SDR compares with the reference itself: the other source scores 10 log(|s|^2 / |s - other|^2),
            # bounded by 0 dB and below the mixture's, not far below it
            assert swapped[f"v4_{s}_SDR"] < min(0, mixture[f"v4_{s}_SDR"])


@pytest.mark.slow
def test_csv_matches_mir_eval_and_museval_called_directly(two_songs, tmp_path):
    import mir_eval
    import museval

    refs, sr = references(two_songs, "song_a")
    rng = np.random.default_rng(7)
    voc, acc, mix = refs["vocals"], refs["accompaniment"], refs["mixture"]
    write_estimates(tmp_path / "est", "song_a", voc + 0.3 * acc + 0.01 * rng.standard_normal(voc.shape).astype(np.float32),
                    acc + 0.2 * voc)
    code, rows = run(two_songs, tmp_path / "est", tmp_path / "out", "--limit", "1")
    assert code == 0 and len(rows) == 1
    row = rows[0]
    est = {s: audio.load_audio(tmp_path / "est" / "song_a" / f"{s}.wav")[0] for s in metrics.SOURCES}
    ref = np.stack([voc[:, 0], acc[:, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(ref, np.stack([est["vocals"][:, 0], est["accompaniment"][:, 0]]),
                                                                compute_permutation=False)
        mix_sdr = mir_eval.separation.bss_eval_sources(ref, np.stack([mix[:, 0], mix[:, 0]]), compute_permutation=False)[0]
    v4 = museval.evaluate(ref[..., None], np.stack([est["vocals"], est["accompaniment"]]), win=SR, hop=SR)
    for i, s in enumerate(metrics.SOURCES):
        assert row[f"v3_{s}_SDR"] == pytest.approx(sdr[i], abs=0.01)
        assert row[f"v3_{s}_SIR"] == pytest.approx(sir[i], abs=0.01)
        assert row[f"v3_{s}_SAR"] == pytest.approx(sar[i], abs=0.01)
        assert row[f"v3_{s}_NSDR"] == pytest.approx(sdr[i] - mix_sdr[i], abs=0.01)
        for metric, values in zip(("SDR", "ISR", "SIR", "SAR"), v4):
            assert row[f"v4_{s}_{metric}"] == pytest.approx(np.nanmedian(values[i]), abs=0.01)
    assert row["seconds"] == pytest.approx(2.0)


@pytest.mark.slow
def test_score_track_resamples_and_folds_to_the_evaluation_rate():
    """Stereo 44.1 kHz references are scored at 8192 Hz mono by default; native keeps the rate."""
    voc, acc = voice_and_band(1.0, 1, sr=44100)
    stereo = {"vocals": np.repeat(voc, 2, 1), "accompaniment": np.repeat(acc, 2, 1)}
    refs = {**stereo, "mixture": stereo["vocals"] + stereo["accompaniment"]}
    est = {"vocals": stereo["vocals"] + 0.1 * stereo["accompaniment"], "accompaniment": stereo["accompaniment"]}
    fast = metrics.score_track(refs, est, 44100, metrics.Settings(families=("v3",)))
    native = metrics.score_track(refs, est, 44100, metrics.Settings(sr=None, stereo=True, families=("v3",)))
    assert fast["seconds"] == pytest.approx(1.0, abs=1e-3) and native["seconds"] == pytest.approx(1.0)
    # 10% (-20 dB) of accompaniment in the vocals: an SIR near 20 dB at either rate
    assert 15 < fast["v3_vocals_SIR"] < 30 and 15 < native["v3_vocals_SIR"] < 30


def test_summarize_weights_by_length_and_leaves_out_nan_and_inf():
    rows = [{"method": "m", "seconds": 10.0, "v3_vocals_NSDR": 1.0},
            {"method": "m", "seconds": 30.0, "v3_vocals_NSDR": 3.0},
            {"method": "m", "seconds": 5.0, "v3_vocals_NSDR": math.nan},
            {"method": "m", "seconds": 5.0, "v3_vocals_NSDR": math.inf},
            {"method": "other", "seconds": 1.0, "v3_vocals_NSDR": -2.0}]
    table = metrics.summarize(rows, ["v3_vocals_NSDR"])
    assert [(r["method"], r["n"]) for r in table] == [("m", 2), ("other", 1)]
    m = table[0]
    assert m["mean"] == pytest.approx(2.0) and m["median"] == pytest.approx(2.0)
    assert m["weighted"] == pytest.approx(2.5) and m["std"] == pytest.approx(math.sqrt(2))
    assert math.isnan(table[1]["std"])
    title, header, lines = metrics.headline_tables(table, ("v3",))[0]
    assert "GNSDR" in " ".join(header) and lines[0][:2] == ["m", pytest.approx(2.5)]


@pytest.mark.slow
def test_silent_reference_is_reported_not_averaged_and_silent_frames_are_nan(tmp_path):
    root = tmp_path / "refs"
    write_track(root / "test" / "gappy", *voice_and_band(2.0, 0))
    voc, acc = voice_and_band(2.0, 1)
    voc[:SR] = 0  # the first 1-second frame has silent reference vocals: NaN, left out of the median
    write_track(root / "test" / "late_voice", voc, acc)
    write_track(root / "test" / "no_voice", *voice_and_band(2.0, 2, silent_voice=True))
    est = tmp_path / "est"
    for name in ("gappy", "late_voice", "no_voice"):
        refs, _ = references(root, name)
        write_estimates(est, name, refs["vocals"] + 0.1 * refs["accompaniment"], refs["accompaniment"] + 0.1 * refs["vocals"])
    code, rows = run(root, est, tmp_path / "out")
    assert code == 0
    assert by(rows, "no_voice")["status"].startswith("silent reference vocals")
    assert all(math.isnan(v) for k, v in by(rows, "no_voice").items() if k.startswith("v"))
    late = by(rows, "late_voice")
    assert late["status"] == "ok" and all(math.isfinite(v) for k, v in late.items() if k.startswith("v"))
    summary = evaluate.read_csv(tmp_path / "out" / "summary.csv")
    assert all(r["n"] == 2 for r in summary)
    sdr = [r for r in summary if r["metric"] == "v3_vocals_SDR"][0]
    assert sdr["mean"] == pytest.approx((by(rows, "gappy")["v3_vocals_SDR"] + late["v3_vocals_SDR"]) / 2, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_estimate_is_reported_the_others_scored_and_the_exit_non_zero(two_songs, tmp_path, capsys):
    refs, _ = references(two_songs, "song_a")
    write_estimates(tmp_path / "est", "song_a", refs["vocals"], refs["accompaniment"])
    (tmp_path / "est" / "song_b").mkdir()
    audio.save_audio(tmp_path / "est" / "song_b" / "vocals.wav", refs["vocals"], SR)
    code, rows = run(two_songs, tmp_path / "est", tmp_path / "out", "--metrics", "v3")
    assert code == 1
    assert by(rows, "song_a")["status"] == "ok" and by(rows, "song_a")["v3_vocals_SDR"] > 60
    assert by(rows, "song_b")["status"].startswith("missing estimate") and "accompaniment.wav" in by(rows, "song_b")["status"]
    assert "not scored: song_b" in capsys.readouterr().err


@pytest.mark.slow
def test_other_rate_and_length_are_resampled_and_aligned_with_a_note(two_songs, tmp_path, capsys):
    refs, _ = references(two_songs, "song_a")
    up = {s: audio.resample(refs[s], SR, 16000)[: int(1.8 * 16000)] for s in metrics.SOURCES}
    write_estimates(tmp_path / "est", "song_a", up["vocals"], up["accompaniment"], sr=16000)
    code, rows = run(two_songs, tmp_path / "est", tmp_path / "out", "--limit", "1", "--metrics", "v3")
    row = rows[0]
    assert code == 0 and row["status"] == "ok"
    assert "resampled" in row["notes"] and "shorter than the reference; zero-padded" in row["notes"]
    # 0.2 s of 2 s missing: about 10 dB, no more, no failure
    assert 5 < row["v3_vocals_SDR"] < 20
    assert "resampled" in capsys.readouterr().err


def test_wrong_layout_and_bad_options_are_one_line_errors(two_songs, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    refs, _ = references(two_songs, "song_a")
    audio.save_audio(flat / "vocals.wav", refs["vocals"], SR)
    with pytest.raises(UserError, match=r"expected .*<track>/vocals.wav.*song_a/vocals.wav"):
        run(two_songs, flat, tmp_path / "out")
    with pytest.raises(UserError, match="no such estimates folder"):
        run(two_songs, tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(UserError, match="--sr"):
        run(two_songs, flat, tmp_path / "out", "--sr", "fast")
    with pytest.raises(UserError, match="unknown"):
        run(two_songs, flat, tmp_path / "out", "--baselines", "repet")
    with pytest.raises(UserError, match="nothing to score"):
        evaluate.main(["--references", str(two_songs)])
    # through the CLI wrapper: one line, exit status 2, no traceback
    assert cli.run_cli(evaluate.main, ["--references", str(two_songs / "test"), "--estimates", str(flat)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_baselines_partition_the_mixture_and_the_oracle_is_near_perfect():
    # 3 s + 600 samples: the tail lies past the last centred STFT frame (600 > n_fft/2 of hop 768)
    voc, acc = voice_and_band(3.0 + 600 / SR, 0)
    mix = voc + acc
    refs = {"vocals": voc, "accompaniment": acc}

    def snr(x, y):
        return 10 * np.log10(np.sum(x ** 2) / np.sum((x - y) ** 2))

    results = {}
    for name in baselines.BASELINES:
        est = baselines.separate(name, mix, SR, refs)
        assert est["vocals"].shape == mix.shape and est["vocals"].dtype == np.float32
        if name != "mixture":  # the floor gives the whole mixture as both sources
            np.testing.assert_allclose(est["vocals"] + est["accompaniment"], mix, atol=1e-5)
        results[name] = snr(voc, est["vocals"])
    assert results["irm"] > results["mixture"] + 8 and results["ibm"] > results["mixture"] + 5
    assert np.abs(baselines.separate("irm", mix, SR, refs)["vocals"][-700:]).max() < 1.0  # no blow-up at the end
    # stereo at another rate: per channel, at the model's rate, back to the input's shape
    stereo = np.repeat(audio.resample(mix, SR, 22050), 2, axis=1)
    est = baselines.separate("hpss", stereo, 22050)
    assert est["vocals"].shape == stereo.shape
    with pytest.raises(ValueError, match="needs the reference"):
        baselines.separate("ibm", mix, SR)


def test_nmf_is_deterministic_and_decreases_the_divergence():
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (40, 6)) @ rng.uniform(0, 1, (6, 50))

    def kl(w, h):
        model = w @ h
        return np.sum(v * np.log((v + 1e-10) / model) - v + model)

    w1, h1 = baselines.nmf(v, 6, n_iter=5, seed=1)
    w2, h2 = baselines.nmf(v, 6, n_iter=200, seed=1)
    np.testing.assert_array_equal(baselines.nmf(v, 6, n_iter=200, seed=1)[0], w2)
    assert kl(w2, h2) < 0.2 * kl(w1, h1)
    np.testing.assert_allclose(w2.sum(axis=0), 1.0)


@pytest.mark.slow
def test_baselines_in_the_same_table_and_parallel_rows_match_serial(two_songs, tmp_path, capsys):
    refs, _ = references(two_songs, "song_a")
    est = tmp_path / "unet"
    for name in ("song_a", "song_b"):
        r, _ = references(two_songs, name)
        write_estimates(est, name, r["vocals"] + 0.2 * r["accompaniment"], r["accompaniment"] + 0.1 * r["vocals"])
    code, rows = run(two_songs, est, tmp_path / "serial", "--baselines", "--limit", "1", "--metrics", "v3")
    assert code == 0
    assert [r["method"] for r in rows] == ["unet"] + list(baselines.BASELINES)
    nsdr = {r["method"]: r["v3_vocals_NSDR"] for r in rows}
    assert nsdr["mixture"] == 0.0 and nsdr["irm"] > 8 and nsdr["irm"] > nsdr["hpss"]
    out = capsys.readouterr().out
    assert "GNSDR" in out and "hpss" in out and "nmf" in out

    code, serial = run(two_songs, est, tmp_path / "s", "--baselines", "mixture", "--metrics", "v3")
    code2, parallel = run(two_songs, est, tmp_path / "p", "--baselines", "mixture", "--metrics", "v3", "--jobs", "2")
    assert code == code2 == 0 and len(serial) == 4
    assert serial == parallel  # same order, same numbers


@pytest.mark.slow
def test_box_plots_one_png_per_metric(two_songs, tmp_path):
    code = evaluate.main(["--references", str(two_songs), "--split", "test", "--baselines", "mixture", "irm",
                          "--out", str(tmp_path / "out"), "--quiet", "--limit", "1", "--metrics", "v4"])
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == sorted(f"v4_{m}.png" for m in metrics.METRICS["v4"])
    assert all((tmp_path / "out" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert not list((tmp_path / "out").glob(".*part*"))  # atomic writes left nothing behind


@pytest.mark.slow
def test_mir1k_huang_test_clips(mir1k_root, tmp_path):
    """Two clips of the Huang test split with the mixture and the oracle: the protocol's numbers."""
    code = evaluate.main(["--references", str(mir1k_root), "--dataset", "mir1k", "--split", "huang-test",
                          "--baselines", "mixture", "irm", "--metrics", "v3", "--limit", "2",
                          "--out", str(tmp_path), "--no-plots", "--quiet"])
    rows = evaluate.read_csv(tmp_path / "per_track.csv")
    assert code == 0 and len(rows) == 4
    assert not any(r["track"].startswith(("abjones", "amy")) for r in rows)
    assert all(r["v3_vocals_NSDR"] == 0.0 for r in rows if r["method"] == "mixture")
    assert all(r["v3_vocals_NSDR"] > 8 for r in rows if r["method"] == "irm")

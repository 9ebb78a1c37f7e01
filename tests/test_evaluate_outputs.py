"""evaluate.py with other tools' outputs (--stem-names) and results other tools read (museval
JSON, settings.json), and what it prints."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from separation import audio, cli, errors, metrics
import evaluate
from helpers import ROOT, SR, references


def separate_like(tool_folder, root, files):
    """Write an imperfect separation of each track as ``files(vocals_estimate, refs) -> {stem: audio}``."""
    for name in ("song_a", "song_b"):
        refs, _ = references(root, name)
        # leakage and artefacts, so that both stems (one being the mixture minus the other) score
        # in the 10-30 dB range, where a wrong file would show
        noise = np.random.default_rng(len(name)).standard_normal(refs["vocals"].shape).astype(np.float32)
        vocals = refs["vocals"] + 0.1 * refs["accompaniment"] + 0.02 * noise
        (tool_folder / name).mkdir(parents=True, exist_ok=True)
        for stem, signal in files(vocals, refs).items():
            audio.save_audio(tool_folder / name / f"{stem}.wav", signal, SR)


def evaluate_main(root, estimates, out, *extra):
    return evaluate.main(["--references", str(root / "test"), "--estimates", str(estimates), "--out", str(out),
                          "--no-plots", "--quiet", *extra])


# --------------------------------------------------------------------------------------------
# --stem-names
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demucs_spleeter_and_open_unmix_layouts_score_like_ours(two_songs, tmp_path, capsys):
    """The same separation written in each tool's layout gets the same scores as ours."""
    ours, demucs, umx = tmp_path / "ours", tmp_path / "htdemucs", tmp_path / "umx"
    separate_like(ours, two_songs, lambda v, r: {"vocals": v, "accompaniment": r["mixture"] - v})
    separate_like(demucs, two_songs, lambda v, r: {"vocals": v, "no_vocals": r["mixture"] - v})
    # Open-Unmix's four targets: the accompaniment is their sum (here: a three-way split of it)
    separate_like(umx, two_songs, lambda v, r: {"vocals": v, "bass": 0.5 * (r["mixture"] - v),
                                            "drums": 0.3 * (r["mixture"] - v), "other": 0.2 * (r["mixture"] - v)})
    quick = ["--metrics", "v3", "--limit", "1"]
    assert evaluate_main(two_songs, ours, tmp_path / "o", *quick) == 0
    expected = evaluate.read_csv(tmp_path / "o" / "per_track.csv")
    for folder, names in ((demucs, "vocals=vocals,accompaniment=no_vocals"), (demucs, "demucs"),
                          (ours, "spleeter"), (umx, "open-unmix"), (umx, "vocals=vocals, accompaniment=bass+drums+other")):
        out = tmp_path / f"{folder.name}-{len(names)}"
        assert evaluate_main(two_songs, folder, out, *quick, "--stem-names", names, "--name", "ours") == 0
        rows = evaluate.read_csv(out / "per_track.csv")
        assert [r["status"] for r in rows] == ["ok"]
        for row, want in zip(rows, expected):
            for column in metrics.metric_columns(("v3",)):
                assert row[column] == pytest.approx(want[column], abs=0.01), (names, column)
        settings = json.loads((out / "settings.json").read_text())
        assert settings["stem_names"]["accompaniment"] in ("no_vocals", "accompaniment", "bass+drums+other")
    assert expected[0]["v3_vocals_SDR"] > 10  # not a trivial case


@pytest.mark.slow
def test_a_missing_stem_is_derived_exactly_from_the_mixture_and_said_so(two_songs, tmp_path, capsys):
    ours, vocals_only = tmp_path / "ours", tmp_path / "vocals_only"
    separate_like(ours, two_songs, lambda v, r: {"vocals": v, "accompaniment": r["mixture"] - v})
    separate_like(vocals_only, two_songs, lambda v, r: {"vocals": v})
    evaluate_main(two_songs, ours, tmp_path / "o", "--metrics", "v3", "--limit", "1")
    capsys.readouterr()
    assert evaluate_main(two_songs, vocals_only, tmp_path / "d", "--metrics", "v3", "--limit", "1", "--stem-names", "vocals=vocals") == 0
    assert "accompaniment = mixture - vocals estimate" in capsys.readouterr().err
    derived, expected = (evaluate.read_csv(tmp_path / x / "per_track.csv") for x in ("d", "o"))
    assert len(derived) == 1 and derived[0]["status"] == "ok" and 10 < derived[0]["v3_accompaniment_SDR"] < 40
    for row, want in zip(derived, expected):
        assert row["v3_accompaniment_SDR"] == pytest.approx(want["v3_accompaniment_SDR"], abs=0.01)
    settings = json.loads((tmp_path / "d" / "settings.json").read_text())
    assert settings["stem_names"]["accompaniment"] == "mixture minus the other"

    # not exact at another rate: that track is reported unscored, not approximated
    refs, _ = references(two_songs, "song_b")
    audio.save_audio(vocals_only / "song_b" / "vocals.wav", audio.resample(refs["vocals"], SR, 16000), 16000)
    code = evaluate_main(two_songs, vocals_only, tmp_path / "d2", "--metrics", "v3", "--stem-names", "vocals=vocals")
    rows = evaluate.read_csv(tmp_path / "d2" / "per_track.csv")
    assert code == 1 and rows[0]["status"] == "ok"
    assert "cannot derive accompaniment exactly" in rows[1]["status"] and "16000 Hz" in rows[1]["status"]


@pytest.mark.slow
def test_missing_named_stem_is_reported_by_its_name(two_songs, tmp_path):
    demucs = tmp_path / "htdemucs"
    separate_like(demucs, two_songs, lambda v, r: {"vocals": v, "accompaniment": r["mixture"] - v})
    code = evaluate_main(two_songs, demucs, tmp_path / "o", "--metrics", "v3", "--stem-names", "demucs")
    rows = evaluate.read_csv(tmp_path / "o" / "per_track.csv")
    assert code == 1 and all(r["status"].startswith("missing estimate") and "no_vocals.wav" in r["status"] for r in rows)


@pytest.mark.parametrize("value, message", [
    ("vocals=vocals,drums=drums", "unknown stem 'drums'"),
    ("vocals", "is not SOURCE=STEM"),
    ("vocals=,accompaniment=no_vocals", "is not SOURCE=STEM"),
    ("vocals=a+,accompaniment=b", "is not SOURCE=STEM"),
    ("vocals=a,vocals=b", "vocals named twice"),
    ("vocals=sub/vocals", "without folders or extensions"),
    (",", "no stem named"),
])
def test_bad_stem_names_are_one_line_errors_and_nothing_is_written(two_songs, tmp_path, capsys, value, message):
    """Exit status 2 and one line naming the option, the fix (an example, the presets); no output folder."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.run_cli(evaluate.main, ["--references", str(two_songs / "test"), "--estimates", str(tmp_path),
                                    "--out", str(out), "--stem-names", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: argument --stem-names")
    assert message in err and "demucs" in err
    assert not out.exists()


def test_wrong_layout_message_shows_the_stems_that_stem_names_asks_for(two_songs, tmp_path):
    """Demucs' stems written flat (no track folders): the message names no_vocals.wav, not ours."""
    flat = tmp_path / "flat"
    flat.mkdir()
    refs, _ = references(two_songs, "song_a")
    audio.save_audio(flat / "no_vocals.wav", refs["accompaniment"], SR)
    with pytest.raises(errors.UserError, match=r"expected <estimates>/<track>/vocals.wav and "
                                            r"<estimates>/<track>/no_vocals.wav, e.g. .*song_a/vocals.wav"):
        evaluate_main(two_songs, flat, tmp_path / "o", "--stem-names", "demucs")
    with pytest.raises(errors.UserError, match=r"expected <estimates>/<track>/vocals.wav and "
                                            r"<estimates>/<track>/bass\+drums\+other.wav"):
        evaluate_main(two_songs, flat, tmp_path / "o", "--stem-names", "open-unmix")
    with pytest.raises(errors.UserError, match=r"no such estimates folder; expected <estimates>/<track>/no_vocals.wav$"):
        evaluate_main(two_songs, tmp_path / "nowhere", tmp_path / "o", "--stem-names", "accompaniment=no_vocals")
    assert not (tmp_path / "o").exists()


def test_stem_names_without_estimates_is_refused(two_songs, tmp_path):
    with pytest.raises(errors.UserError, match="--stem-names names the files of --estimates"):
        evaluate.main(["--references", str(two_songs / "test"), "--baselines", "mixture", "--stem-names", "demucs",
                       "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bad_stem_names_from_the_shell(two_songs, tmp_path):
    """The real command line: the same one line, no traceback."""
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--references", str(two_songs / "test"),
                             "--estimates", str(tmp_path), "--out", str(tmp_path / "out"), "--stem-names", "voice=vocals"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: argument --stem-names: unknown stem 'voice'") and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# museval's JSON, settings.json, the terminal
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_museval_json_validates_against_its_schema_and_museval_loads_it(two_songs, tmp_path):
    import jsonschema
    import museval
    import simplejson

    ours = tmp_path / "unet"
    separate_like(ours, two_songs, lambda v, r: {"vocals": v, "accompaniment": r["mixture"] - v})
    assert evaluate_main(two_songs, ours, tmp_path / "out", "--baselines", "mixture", "--metrics", "v4") == 0
    rows = evaluate.read_csv(tmp_path / "out" / "per_track.csv")
    folder = tmp_path / "out" / "museval"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.json")) == [
        "mixture/test/song_a.json", "mixture/test/song_b.json", "unet/test/song_a.json", "unet/test/song_b.json"]
    schema = json.loads((Path(museval.__file__).parent / "musdb.schema.json").read_text())
    for path in folder.rglob("*.json"):
        document = simplejson.loads(path.read_text(), allow_nan=True)
        jsonschema.validate(document, schema)
        assert [t["name"] for t in document["targets"]] == list(metrics.SOURCES)
        assert len(document["targets"][0]["frames"]) == 2  # 2 s in 1-s frames
    # what museval's users do with a results folder: one method, then several side by side
    store = museval.EvalStore()
    store.add_eval_dir(folder / "unet")
    medians = store.agg_frames_scores()
    for row in (r for r in rows if r["method"] == "unet"):
        for source in metrics.SOURCES:
            for metric in metrics.METRICS["v4"]:
                assert medians[(row["track"], source, metric)] == pytest.approx(row[f"v4_{source}_{metric}"], abs=1e-3)
    methods = museval.MethodStore()
    methods.add_eval_dir(folder / "unet")
    methods.add_eval_dir(folder / "mixture")
    table = methods.agg_frames_tracks_scores()
    assert table[("unet", "vocals", "SDR")] > table[("mixture", "vocals", "SDR")] + 5


@pytest.mark.slow
def test_settings_record_versions_and_commit_and_the_terminal_shows_two_tables(two_songs, tmp_path, capsys):
    ours = tmp_path / "unet"
    separate_like(ours, two_songs, lambda v, r: {"vocals": v, "accompaniment": r["mixture"] - v})
    assert evaluate_main(two_songs, ours, tmp_path / "out") == 0
    out = capsys.readouterr().out
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    for package in ("mir_eval", "museval", "numpy", "scipy", "tensorflow", "keras"):
        assert settings["versions"][package], package
    import mir_eval
    assert settings["versions"]["mir_eval"] == mir_eval.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert settings["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    # the two headline tables, not every metric's statistics (those are in summary.csv)
    assert "BSS Eval v3" in out and "BSS Eval v4" in out and "GNSDR" in out
    assert "v3_vocals_SDR" not in out and "len-weighted" not in out
    summary = evaluate.read_csv(tmp_path / "out" / "summary.csv")
    assert {r["metric"] for r in summary} == set(metrics.metric_columns())
    assert len(out.splitlines()) < 20

    assert evaluate_main(two_songs, ours, tmp_path / "verbose", "--verbose", "--metrics", "v4", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "len-weighted" in out and "v4_accompaniment_ISR" in out


"""The bad-input corpus: malformed files through inference.py and evaluate.py.

Each input either gives a one-line error and a non-zero exit, or a correct result; never a
traceback, and never a partial output file. The corpus is made by :func:`make_corpus`.
"""

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separation import audio, cli
import evaluate
import inference
from helpers import ROOT, SR, assert_one_line_error, files_under, noise, wav_bytes
from separation.stems import song_name

#: name -> (file name, bytes maker, expected: "error" words or None for a correct result)
CORPUS = {
    "empty": ("empty.wav", lambda: b"", "cannot read as audio"),
    "truncated": ("truncated.wav", lambda: wav_bytes(noise(1.0), SR)[:40], "cannot read as audio"),
    "text": ("text.wav", lambda: b"this is a text file renamed .wav\n" * 20, "cannot read as audio"),
    "nan": ("nan.wav", lambda: wav_bytes(np.full((SR, 1), np.nan, np.float32), SR, "FLOAT"), "NaN or infinite"),
    "inf": ("inf.wav", lambda: wav_bytes(np.full((SR, 2), np.inf, np.float32), SR, "FLOAT"), "NaN or infinite"),
    "no samples": ("no samples.wav", lambda: wav_bytes(np.zeros((0, 1), np.float32), SR), "no audio samples"),
    "fake mp3": ("fake.mp3", lambda: b"ID3" + b"\x00" * 500, "cannot read as audio"),
    "fake m4a": ("fake.m4a", lambda: b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 300, "cannot read as audio"),
    "zeros": ("zeros.wav", lambda: wav_bytes(np.zeros((3 * SR, 2), np.float32), SR), None),
    "8 channels": ("eight.wav", lambda: wav_bytes(noise(2.0, 44100, 8), 44100), None),
    "1 kHz": ("one_khz.wav", lambda: wav_bytes(noise(5.0, 1000, 1), 1000), None),
    "10 ms": ("click.wav", lambda: wav_bytes(noise(0.01, 44100, 2), 44100), None),
    "loud float": ("loud.wav", lambda: wav_bytes(30 * noise(2.0, 22050, 2), 22050, "FLOAT"), None),
    "spaces and accents": ("ma chanson été ♪.flac", lambda: wav_bytes(noise(2.0, 16000, 2), 16000), None),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, (filename, make, _) in CORPUS.items():
        path = folder / filename
        data = make()
        if filename.endswith(".flac"):  # soundfile writes FLAC from the decoded array
            x, sr = sf.read(io.BytesIO(data), dtype="float32")
            sf.write(path, x, sr)
        else:
            path.write_bytes(data)
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", [n for n, (_, _, expected) in CORPUS.items() if expected])
def test_inference_refuses_a_bad_file_in_one_line_and_writes_nothing(name, corpus, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "separated"
    status = cli.run_cli(inference.main, [str(corpus[name]), "-o", str(out), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert status != 0
    assert_one_line_error(err, CORPUS[name][2], corpus[name].name)
    assert files_under(out) == []  # nothing half-written, no temporary files left


@pytest.mark.parametrize("name", [n for n, (_, _, expected) in CORPUS.items() if expected is None])
def test_inference_separates_odd_but_valid_files_correctly(name, corpus, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "separated"
    assert cli.run_cli(inference.main, [str(corpus[name]), "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    mixture, sr = audio.load_audio(corpus[name])
    song = out / song_name(corpus[name])
    assert files_under(song.parent) == [f"{song.name}/accompaniment.wav", f"{song.name}/vocals.wav"]
    stems = {}
    for stem in ("vocals", "accompaniment"):
        stems[stem], stem_sr = audio.load_audio(song / f"{stem}.wav")
        assert stem_sr == sr and stems[stem].shape == mixture.shape
    # 16-bit stems are rounded to 1/32768 each; louder ones are written as float
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], mixture, atol=2.5 / 32768, rtol=1e-5)
    if name == "zeros":
        assert not np.any(stems["vocals"]) and not np.any(stems["accompaniment"])


def test_one_bad_file_among_good_ones_is_reported_and_the_rest_separated(corpus, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "separated"
    status = cli.run_cli(inference.main, [str(corpus["text"]), str(corpus["zeros"]), str(corpus["truncated"]),
                             "-o", str(out), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert status == 1
    assert "text.wav" in err and "truncated.wav" in err and "Traceback" not in err
    assert files_under(out) == ["zeros/accompaniment.wav", "zeros/vocals.wav"]


@pytest.mark.slow
def test_an_hour_of_silence_is_separated_in_bounded_memory(tiny_model_dir, tmp_path):
    """One hour at 1 kHz mono (7 MB of 16-bit samples, 29 M samples at the model's rate)."""
    hour = tmp_path / "hour of silence.wav"
    with sf.SoundFile(hour, "w", samplerate=1000, channels=1, subtype="PCM_16") as f:
        f.write(np.zeros(3600 * 1000, np.int16))
    out = tmp_path / "separated"
    code = (
        "import resource, sys, inference\nfrom separation import cli\n"
        f"status = cli.run_cli(inference.main, [{str(hour)!r}, '-o', {str(out)!r}, '--model', {str(tiny_model_dir)!r}])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mb = int(proc.stdout.strip().splitlines()[-1])
    assert peak_mb < 3000, f"peak memory {peak_mb} MB for an hour of 1 kHz audio"
    vocals, sr = audio.load_audio(out / "hour of silence" / "vocals.wav")
    assert sr == 1000 and len(vocals) == 3600 * 1000 and not np.any(vocals)


def test_existing_outputs_are_kept_unless_overwrite(corpus, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "separated"
    (out / "zeros").mkdir(parents=True)
    (out / "zeros" / "vocals.wav").write_bytes(b"precious")
    assert cli.run_cli(inference.main, [str(corpus["zeros"]), "-o", str(out), "--model", str(tiny_model_dir)]) != 0
    assert_one_line_error(capsys.readouterr().err, "--overwrite")
    assert (out / "zeros" / "vocals.wav").read_bytes() == b"precious"
    assert files_under(out) == ["zeros/vocals.wav"]


@pytest.mark.parametrize("argv, words", [
    (["nowhere.wav"], "no such file"),
    (["--model", "missing.keras", "x.wav"], "no such"),
    (["--overlap", "1.5", "x.wav"], "overlap"),
])
def test_inference_bad_arguments(argv, words, tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.wav").write_bytes(wav_bytes(noise(1.0), SR))
    if "--model" not in argv:
        argv = argv + ["--model", str(tiny_model_dir)]
    try:
        status = cli.run_cli(inference.main, argv)
    except SystemExit as exit_info:  # argparse refuses an option out of range before any work
        status = exit_info.code
    captured = capsys.readouterr()
    assert status != 0
    assert_one_line_error(captured.err, words)


def test_read_only_output_folder_as_an_ordinary_user(tiny_model_dir):
    """A folder the user cannot write to. Root writes anywhere, so root runs this as 'nobody'."""
    base = Path(tempfile.mkdtemp(prefix="readonly-"))
    try:
        os.chmod(base, 0o755)
        model = base / "model"
        model.mkdir()
        for f in tiny_model_dir.iterdir():
            (model / f.name).write_bytes(f.read_bytes())
        song = base / "song.wav"
        song.write_bytes(wav_bytes(noise(1.0), SR))
        locked = base / "locked"
        locked.mkdir()
        for p in [model, *model.iterdir(), song]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(locked, 0o555)
        cmd = [sys.executable, "inference.py", str(song), "-o", str(locked), "--model", str(model)]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "HOME": str(base), "MPLCONFIGDIR": str(base), "NUMBA_CACHE_DIR": str(base)}
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode != 0
        assert_one_line_error(proc.stderr, "not writable", str(locked))
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(base / "locked", 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------- evaluate.py


def estimates_like(references, tmp_path, break_b=None):
    """Estimates = references (perfect); ``break_b(path)`` spoils song_b's vocals."""
    est = tmp_path / "est"
    for track in references.iterdir():
        (est / track.name).mkdir(parents=True)
        for stem in ("vocals", "accompaniment"):
            (est / track.name / f"{stem}.wav").write_bytes((track / f"{stem}.wav").read_bytes())
    if break_b is not None:
        break_b(est / "song_b" / "vocals.wav")
    return est


@pytest.mark.parametrize("name", ["empty", "truncated", "text", "nan"])
@pytest.mark.slow
def test_evaluate_reports_a_corrupt_estimate_and_scores_the_rest(name, corpus, noise_songs, tmp_path, capsys):
    est = estimates_like(noise_songs, tmp_path, lambda p: p.write_bytes(corpus[name].read_bytes()))
    out = tmp_path / "results"
    status = cli.run_cli(evaluate.main, ["--references", str(noise_songs), "--estimates", str(est), "--out", str(out),
                            "--metrics", "v3", "--no-plots", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err
    assert "song_b" in captured.err + captured.out
    rows = evaluate.read_csv(out / "per_track.csv")
    scored = {r["track"]: r for r in rows}
    assert float(scored["song_a"]["v3_vocals_SDR"]) > 60


def test_evaluate_wrong_layout_shows_the_expected_one(tmp_path, capsys):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "notes.txt").write_text("no tracks here")
    status = cli.run_cli(evaluate.main, ["--references", str(tmp_path / "refs"), "--estimates", str(tmp_path),
                                           "--out", str(tmp_path / "results")])
    assert status == 2
    assert_one_line_error(capsys.readouterr().err, "expected", "mixture,vocals,accompaniment")

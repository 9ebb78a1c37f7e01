"""Tests of inference.py's output options from the command line: --format, --bits, --mp3-bitrate,
--stems, --filename, --start/--duration and the first line (device and precision); TensorFlow's
start-up log kept out of the terminal is checked on inference.py as a process (test_inference.py).
Bad values: one line, exit status 2, nothing written.

The model is a tiny untrained U-Net; what is checked is what gets written, not how well.
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separation import audio, cli
import inference
from separation.stems import STEMS, Outputs, write_stems

ROOT = Path(__file__).resolve().parent.parent


def noise(seconds, sr, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def write(path, x, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr)
    return path


def separate(song, out, tiny_model_dir, *options):
    """inference.py's main as the command line runs it: ``(exit status, stdout, stderr)``."""
    return cli.run_cli(inference.main, [str(song), "-o", str(out), "--model", str(tiny_model_dir), *map(str, options)])


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("options, subtype, atol", [
    ([], "PCM_16", 2.5 / 32768),
    (["--bits", "24"], "PCM_24", 2.5 / 2**23),
    (["--bits", "32f"], "FLOAT", 1e-6),
    (["--format", "flac"], "PCM_16", 2.5 / 32768),
    (["--format", "flac", "--bits", "24"], "PCM_24", 2.5 / 2**23),
])
def test_lossless_formats_and_bit_depths(tmp_path, tiny_model_dir, options, subtype, atol):
    song = write(tmp_path / "song.wav", noise(2.0, 22050), 22050)
    assert separate(song, tmp_path / "out", tiny_model_dir, *options) == 0
    ext = "flac" if "flac" in options else "wav"
    assert files_under(tmp_path / "out") == [f"song/accompaniment.{ext}", f"song/vocals.{ext}"]
    stems = {}
    for stem in STEMS:
        info = sf.info(str(tmp_path / "out" / "song" / f"{stem}.{ext}"))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (ext.upper(), subtype, 22050, 2, 44100)
        stems[stem] = sf.read(str(tmp_path / "out" / "song" / f"{stem}.{ext}"), dtype="float32")[0]
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], sf.read(str(song), dtype="float32")[0], atol=atol)


@pytest.mark.parametrize("fmt, options, subtype", [("mp3", ["--mp3-bitrate", "96"], "MPEG_LAYER_III"), ("ogg", [], "VORBIS")])
def test_lossy_formats(tmp_path, tiny_model_dir, fmt, options, subtype):
    song = write(tmp_path / "song.wav", noise(3.0, 44100), 44100)
    assert separate(song, tmp_path / "out", tiny_model_dir, "--format", fmt, *options) == 0
    for stem in STEMS:
        path = tmp_path / "out" / "song" / f"{stem}.{fmt}"
        info = sf.info(str(path))
        assert (info.subtype, info.samplerate, info.channels) == (subtype, 44100, 2)
        assert abs(info.frames - 3 * 44100) <= 1152  # at most one mp3 frame of encoder padding
        if fmt == "mp3":  # a constant 96 kbit/s: the file's size says so
            assert path.stat().st_size * 8 / 3 / 1000 == pytest.approx(96, rel=0.05)


@pytest.mark.parametrize("libsndfile", [True, False], ids=["libsndfile", "ffmpeg"])
def test_mp3_bitrate_rate_and_ffmpeg_fallback(tmp_path, monkeypatch, libsndfile):
    """Both encoders give the asked constant bitrate; a rate MPEG-1 has not (8192 Hz) is
    resampled to the next one up, with a warning, and the audio survives the trip."""
    if not libsndfile:
        monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "WAV", "FLAC": "FLAC"})
    t = np.arange(3 * 8192) / 8192
    x = (0.3 * np.sin(2 * np.pi * 440 * t))[:, None].astype(np.float32)
    sizes = {}
    for bitrate in (64, 192):
        path = tmp_path / f"{bitrate}.mp3"
        with pytest.warns(UserWarning, match="written at 32000 Hz"):
            audio.save_audio(path, x, 8192, bitrate=bitrate)
        sizes[bitrate] = path.stat().st_size * 8 / 3 / 1000
        back, sr = audio.load_audio(path, sr=8192)
        assert sr == 8192 and sf.info(str(path)).samplerate == 32000
        n = min(len(back), len(x))
        assert np.corrcoef(back[:n, 0], x[:n, 0])[0, 1] > 0.99
    assert sizes[64] == pytest.approx(64, rel=0.05) and sizes[192] == pytest.approx(192, rel=0.05)
    ogg = tmp_path / "x.ogg"
    audio.save_audio(ogg, x, 8192)
    assert sf.info(str(ogg)).samplerate == 8192 and abs(sf.info(str(ogg)).frames - len(x)) <= 1152


def test_a_stem_beyond_full_scale_is_float_wav_and_clipped_flac_with_a_note(tmp_path, capsys):
    loud = 1.5 * np.sin(np.linspace(0, 100, 8192, dtype=np.float32))[:, None]
    write_stems({tmp_path / "a" / "vocals.wav": loud}, 8192)
    assert sf.info(str(tmp_path / "a" / "vocals.wav")).subtype == "FLOAT"
    write_stems({tmp_path / "b" / "vocals.flac": loud}, 8192, Outputs(format="flac"))
    back = sf.read(str(tmp_path / "b" / "vocals.flac"))[0]
    assert back.max() == pytest.approx(1.0, abs=1e-4)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 2 and "float" in notes[0] and "clipped" in notes[1]
    assert str(tmp_path / "b" / "vocals.flac") in notes[1] and ".part" not in notes[1]


# ---------------------------------------------------------------------------- stems and names


def test_stems_writes_only_those_named_under_the_names_given(tmp_path, tiny_model_dir):
    song = write(tmp_path / "song.wav", noise(2.0, 8192), 8192)
    assert separate(song, tmp_path / "all", tiny_model_dir) == 0
    assert separate(song, tmp_path / "demucs", tiny_model_dir, "--stems", "vocals,no_vocals") == 0
    assert separate(song, tmp_path / "one", tiny_model_dir, "--stems", "Instrumental") == 0
    assert files_under(tmp_path / "demucs") == ["song/no_vocals.wav", "song/vocals.wav"]
    assert files_under(tmp_path / "one") == ["song/instrumental.wav"]
    accompaniment = sf.read(str(tmp_path / "all" / "song" / "accompaniment.wav"))[0]
    np.testing.assert_array_equal(sf.read(str(tmp_path / "demucs" / "song" / "no_vocals.wav"))[0], accompaniment)
    np.testing.assert_array_equal(sf.read(str(tmp_path / "one" / "song" / "instrumental.wav"))[0], accompaniment)


def test_filename_template_has_demucs_keys(tmp_path, tiny_model_dir, capsys):
    a = write(tmp_path / "in" / "a.wav", noise(1.0, 8192, seed=1), 8192)
    b = write(tmp_path / "in" / "Track B" / "mixture.flac", noise(1.0, 8192, seed=2), 8192)
    out = tmp_path / "out"
    status = cli.run_cli(inference.main, [str(a), str(b), "-o", str(out), "--model", str(tiny_model_dir),
                                          "--filename", "{stem}/{track}_{trackext}.{ext}", "--format", "flac"])
    assert status == 0
    assert files_under(out) == ["accompaniment/Track B_flac.flac", "accompaniment/a_wav.flac",
                                "vocals/Track B_flac.flac", "vocals/a_wav.flac"]
    assert str(out / "vocals" / "a_wav.flac") in capsys.readouterr().out
    assert not [p for p in out.rglob("*") if ".part" in p.name]


@pytest.mark.parametrize("songs, options, words", [
    (["x/Song.wav", "y/Song.flac"], [], "both be written"),                     # one name, default template
    (["a.wav", "b.wav"], ["--filename", "{stem}.{ext}"], "both be written"),    # no {track}
    (["a.wav", "b.flac"], ["--filename", "{track}/{stem}.{ext}", "--stems", "vocals"], None),  # different names: fine
])
def test_colliding_output_names_are_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys, songs, options, words):
    paths = [write(tmp_path / "in" / s, noise(1.0, 8192, seed=i), 8192) for i, s in enumerate(songs)]
    out = tmp_path / "out"
    status = cli.run_cli(inference.main, [*map(str, paths), "-o", str(out), "--model", str(tiny_model_dir), *options])
    err = capsys.readouterr().err
    if words is None:
        assert status == 0 and files_under(out) == ["a/vocals.wav", "b/vocals.wav"]
        return
    assert status == 2 and words in err and err.count("\n") == 1 and "--filename" in err
    assert not out.exists()


def test_an_output_that_would_replace_a_song_is_refused(tmp_path, tiny_model_dir, capsys):
    song = write(tmp_path / "vocals.wav", noise(1.0, 8192), 8192)
    before = song.read_bytes()
    status = separate(song, tmp_path, tiny_model_dir, "--filename", "{stem}.{ext}", "--overwrite")
    assert status == 2 and "would replace the song" in capsys.readouterr().err
    assert song.read_bytes() == before and files_under(tmp_path) == ["vocals.wav"]


# ---------------------------------------------------------------------------- part of a song


def test_start_and_duration_separate_that_part(tmp_path, tiny_model_dir):
    x = noise(4.0, 8192, seed=3)
    song = write(tmp_path / "song.wav", x, 8192)
    assert separate(song, tmp_path / "out", tiny_model_dir, "--start", "1.5", "--duration", "2") == 0
    stems = {stem: sf.read(str(tmp_path / "out" / "song" / f"{stem}.wav"), dtype="float32")[0] for stem in STEMS}
    assert len(stems["vocals"]) == 2 * 8192
    mixture = sf.read(str(song), dtype="float32")[0]
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], mixture[int(1.5 * 8192):int(3.5 * 8192)],
                               atol=2.5 / 32768)
    assert separate(song, tmp_path / "tail", tiny_model_dir, "--start", "3") == 0  # to the end
    assert sf.info(str(tmp_path / "tail" / "song" / "vocals.wav")).frames == 8192


def test_start_past_the_end_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys):
    long = write(tmp_path / "in" / "long.wav", noise(6.0, 8192), 8192)
    short = write(tmp_path / "in" / "short.wav", noise(2.0, 8192), 8192)
    out = tmp_path / "out"
    status = cli.run_cli(inference.main, [str(long), str(short), "-o", str(out), "--model", str(tiny_model_dir), "--start", "4"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "short.wav" in err and "past its end (2.0 s)" in err
    assert not out.exists()


# ---------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("options, words", [
    (["--stems", "drums"], "'drums' is not a stem"),
    (["--stems", "vocals,"], "separated by commas"),
    (["--stems", "accompaniment,no_vocals"], "names the accompaniment twice"),
    (["--filename", "{track}.{ext}"], "has no {stem}"),
    (["--filename", "{track}/{stem}.{codec}"], "unknown key {codec}"),
    (["--filename", "../{stem}.wav"], "inside the output folder"),
    (["--filename", "/tmp/{stem}.wav"], "inside the output folder"),
    (["--format", "aac"], "invalid choice"),
    (["--bits", "8"], "invalid choice"),
    (["--bits", "32f", "--format", "flac"], "wav only"),
    (["--bits", "16", "--format", "mp3"], "for wav and flac"),
    (["--mp3-bitrate", "192"], "only with --format mp3"),
    (["--format", "mp3", "--mp3-bitrate", "100"], "invalid choice"),
    (["--start", "-1"], "--start"),
    (["--duration", "0"], "--duration"),
])
def test_bad_output_options_are_refused_in_one_line(tmp_path, tiny_model_dir, capsys, options, words):
    song = write(tmp_path / "song.wav", noise(1.0, 8192), 8192)
    with pytest.raises(SystemExit) as exit_info:  # argparse: one line, exit 2, before any work
        separate(song, tmp_path / "out", tiny_model_dir, *options)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_outputs_refuses_bad_values_in_python_too():
    for kwargs, words in (({"stems": ("bass",)}, "not a stem"), ({"filename": "{track}"}, "no {stem}"),
                          ({"format": "aac"}, "format"), ({"format": "ogg", "bits": "24"}, "wav and flac"),
                          ({"mp3_bitrate": 100}, "bitrate")):
        with pytest.raises(ValueError, match=words):
            Outputs(**kwargs)


# ---------------------------------------------------------------------------- the terminal


def test_first_line_says_device_and_precision(tmp_path, tiny_model_dir, capsys):
    import tensorflow as tf

    song = write(tmp_path / "song.wav", noise(1.0, 8192), 8192)
    assert separate(song, tmp_path / "out", tiny_model_dir, "--precision", "float32") == 0
    first = capsys.readouterr().out.splitlines()[0]
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    assert first.startswith(f"Separating 1 song on {device}") and "in float32" in first


def test_the_docs_show_each_option_with_an_example():
    """docs/inference.md (the README links it) has a `python inference.py song.mp3 --...` line for every option."""
    examples = [line for line in (ROOT / "docs" / "inference.md").read_text().splitlines()
                if line.startswith("python inference.py song.mp3 --")]
    options = [action for action in inference.get_parser()._actions if action.option_strings and action.dest != "help"]
    for action in options:
        assert any(f" {name} " in line for line in examples for name in action.option_strings), action.option_strings[0]

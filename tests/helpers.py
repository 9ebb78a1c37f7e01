"""Helpers shared by the test modules: small audio makers, the tiny training recipe, readers of a
run folder and checks of what a command leaves behind. The fixtures built from them live in
conftest.py; test modules import these instead of importing one another."""

import io
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from separation import audio, datasets
from separation.audio import AudioParams

ROOT = Path(__file__).resolve().parent.parent
SR = 8192
#: A small cache: 64 bins x 64 frames patches (a U-Net of up to six levels fits them).
TINY_PARAMS = AudioParams(n_bins=64, patch_frames=64)
#: pipeline.py in miniature: 2 training songs and 1 test song of 4 s, a two-level U-Net trained for
#: 2 epochs of 2 steps, the test song separated and evaluated with the baselines.
TINY_PIPELINE = ["--train-songs", "2", "--test-songs", "1", "--seconds", "4", "--epochs", "2",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--filters", "4,8", "--jobs", "1"]


# ---------------------------------------------------------------------------------------------
# Audio and stems folders
# ---------------------------------------------------------------------------------------------


def noise(seconds, sr=SR, channels=1, seed=0):
    """White noise at a tenth of full scale, ``(samples, channels)`` float32."""
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def wav_bytes(x, sr, subtype="PCM_16"):
    """``x`` as the bytes of a WAV file."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def write_stems(folder: Path, sr: int = SR, seconds: float = 2.0, channels: int = 1, freq: float = 440.0,
                parts=("mixture", "vocals", "accompaniment"), vocals_gain: float = 0.3, seed: int = 0) -> dict:
    """Write one small stems track into ``folder``: a sine as vocals, noise as accompaniment.
    Returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    vocals = np.repeat((vocals_gain * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(np.float32)
    accompaniment = (0.05 * rng.standard_normal((len(t), channels))).astype(np.float32)
    arrays = {"mixture": vocals + accompaniment, "vocals": vocals, "accompaniment": accompaniment}
    for part in parts:
        audio.save_audio(folder / f"{part}.wav", arrays[part], sr)
    return arrays


def write_songs(root: Path, n_tracks: int = 4, seconds: float = 8.0, seed: int = 0, split: str = "train",
                prefix: str = "song") -> None:
    """A stems folder root/<split>/<prefix>N/{mixture,vocals,accompaniment}.wav of songs a U-Net can
    learn from: gated harmonic "vocals" over noise and a low tone, mono at 8192 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n_tracks):
        f0 = rng.uniform(200, 500)
        gate = np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t) > 0
        phase = 2 * np.pi * f0 * t * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        vocals = 0.2 * gate * sum(np.sin(k * phase) / k for k in range(1, 5))
        accompaniment = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * rng.uniform(60, 120) * t)
        folder = root / split / f"{prefix}{i}"
        folder.mkdir(parents=True)
        audio.save_audio(folder / "vocals.wav", vocals.astype(np.float32), SR)
        audio.save_audio(folder / "accompaniment.wav", accompaniment.astype(np.float32), SR)
        audio.save_audio(folder / "mixture.wav", (vocals + accompaniment).astype(np.float32), SR)


def voice_and_band(seconds: float, seed: int, sr: int = SR, silent_voice: bool = False):
    """A gliding, vibrato 'voice' with pauses and a band of steady chords and noise bursts,
    each ``(samples, 1)`` float32 peaking near 0.4."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = (200 + 60 * seed) * (1 + 0.3 * t / seconds) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 0.7 * t) > -0.6)
    chord = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 165, 220, 277, 330))
    bursts = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 2 * t) > 0.95)
    band = chord + 2 * bursts
    voice = np.zeros_like(t) if silent_voice else 0.4 * voice / np.abs(voice).max()
    band = 0.4 * band / np.abs(band).max()
    return voice[:, None].astype(np.float32), band[:, None].astype(np.float32)


def write_track(folder, vocals, accompaniment, sr=SR, mixture=None):
    """A reference track: vocals, accompaniment and their sum (or ``mixture``) as WAV files."""
    folder.mkdir(parents=True)
    audio.save_audio(folder / "vocals.wav", vocals, sr)
    audio.save_audio(folder / "accompaniment.wav", accompaniment, sr)
    audio.save_audio(folder / "mixture.wav", vocals + accompaniment if mixture is None else mixture, sr)


def references(root, name):
    """The stems of track ``name`` of the test split under ``root``: ``({stem: audio}, sr)``."""
    track = next(t for t in datasets.find_tracks("stems", root, split="test") if t.name == name)
    return track.load()


def randomized(model, seed=0):
    """``model`` with batch-norm statistics and affine parameters far from their initial values,
    so that folding them into the convolutions (unet_fast) is really tested."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.3, 3.0, n)])
    return model


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------


def tiny_args(cache, run_dir, epochs=3, steps=8, *extra, filters="4,8"):
    """train.py options for a tiny U-Net (two levels by default: 1,981 parameters, and a model's first
    training step costs less the fewer its layers) on a TINY_PARAMS cache."""
    return ["--cache", str(cache), "--run-dir", str(run_dir), "--epochs", str(epochs),
            "--steps-per-epoch", str(steps), "--batch-size", "4", "--filters", filters,
            "--learning-rate", "1e-3", "--validation-split", "0.25", "--verbose", "0", *extra]


def history(run_dir) -> dict:
    """A run's history.csv as train.py reads it: ``{column: [values]}``."""
    from separation import runs

    return runs.read_history(Path(run_dir) / runs.HISTORY_FILE)


def resume_epoch(run_dir) -> int:
    """The epoch saved in the run's resume point (0 before the first one); read as train.py does."""
    from separation import runs
    from separation.errors import UserError

    try:
        state = runs.read_state(Path(run_dir) / "backup")
    except UserError:  # not there yet
        return 0
    return state["epoch"] if state else 0


def weights_of(path) -> list:
    """The weights of the model saved at ``path``."""
    import unet_model

    model, _ = unet_model.load_model(path)
    return model.get_weights()


def copy_of(folder: Path, to: Path) -> Path:
    """A copy of ``folder`` (a run or a cache shared by several tests) at ``to``, times kept, to change."""
    shutil.copytree(folder, to)
    return to


# ---------------------------------------------------------------------------------------------
# What a command leaves behind
# ---------------------------------------------------------------------------------------------


def assert_one_line_error(err: str, *words):
    """``err`` holds a message naming each of ``words`` and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message"
    assert "Traceback" not in err
    for word in words:
        assert any(word in line for line in lines), (word, err)


def files_under(folder: Path) -> list[str]:
    """The files below ``folder`` (relative paths, sorted; none when it does not exist)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

"""Separation speed of a 3-minute 44.1 kHz stereo song, in-process and as a whole command-line process.

    .venv/bin/python benchmarks/bench_inference.py [--model runs/NAME/best.keras] [--seconds 180] [--repeats 3]

Prints one table, seconds per stage:

* in-process rows: ``audio.load_audio``, ``inference.Separator.vocals`` (resample, STFT at the
  model's rate and at the song's, model, mask mapping, inverse STFT; their sum is the
  "separate" column) and ``stems.write_stems``, with the model loaded and traced
  beforehand (a notebook's second song), best of ``--repeats``: ``unet_fast.inference_mask_model``
  in float32 (the ``Separator``'s default) and in bfloat16 (the command line's ``--precision
  auto`` on CPUs with AVX512-BF16 or AMX), and the model as trained (``unet_model.mask_model``,
  what ran before the inference fast path);
* whole-process rows: ``python inference.py SONG`` as users run it, and a child process
  doing the command line's steps with timers (interpreter start, imports, model load, the
  first song's stages, exit: what the first song of a process pays that the in-process rows
  do not -- imports, tracing, first calls).

The song is synthetic (``synth.synthesize_track``); the model untrained unless ``--model``
(speed does not depend on the weights). CPU seconds are user + system of the process. On a
shared machine compare rows of one run.
"""

from __future__ import annotations

import time

_START = time.time()  # the cold child's clock starts before its imports

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from benchlib import cpu_summary, load_average, model_or_untrained, print_table, run_measured, synthetic_song  # noqa: E402,E501

import numpy as np  # noqa: E402

from separation import audio, cli, stems  # noqa: E402
import inference  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402

COLUMNS = ("start", "imports", "model load", "load", "resample", "STFT", "model", "mask", "inverse STFT", "write",
           "exit", "separate")


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras model (default: an untrained full-size U-Net)")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the song (default 180)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the fastest is shown (default 3)")
    parser.add_argument("--cold-child", nargs=3, metavar=("SONG", "MODEL", "OUT"), help=argparse.SUPPRESS)
    return parser


def stages(timings: dict) -> dict:
    """``Separator.vocals``' timings (plus load/write) under the table's column names."""
    return {"load": timings.get("load", 0.0), "resample": timings.get("resample", 0.0),
            "STFT": timings.get("model_stft", 0.0) + timings.get("stft", 0.0), "model": timings.get("model", 0.0),
            "mask": timings.get("mask", 0.0), "inverse STFT": timings.get("istft", 0.0),
            "write": timings.get("write", 0.0), "separate": timings.get("separate", "")}


def separate_once(path: Path, separator, out: Path) -> tuple[dict, float, float]:
    """One song read, separated and written in this process: ``(stages, wall s, CPU s)``."""
    timings: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    with cli.timed(timings, "load"):
        x, sr = audio.load_audio(path)
    with cli.timed(timings, "separate"):
        vocals = separator.vocals(x, sr, timings=timings)
    with cli.timed(timings, "write"):
        stems.write_stems({out / "vocals.wav": vocals, out / "accompaniment.wav": x - vocals}, sr)
    return stages(timings), time.perf_counter() - start, time.process_time() - cpu


def cold_child(song: str, model: str, out: str) -> None:
    """In a fresh process: the command line's steps (``inference.main``) with timers on each;
    prints JSON (absolute start and end times, seconds per stage) and exits as the CLI does."""
    import keras  # noqa: F401  (the command line imports it while loading the model)
    import unet_model
    from separation import unet_fast

    imported = time.time()
    timings: dict = {}

    def timed(stage, function):
        def wrapper(*args, **kwargs):
            with cli.timed(timings, stage):
                return function(*args, **kwargs)
        return wrapper

    vocals = inference.Separator.vocals
    unet_model.load_model = timed("model load", unet_model.load_model)
    # building the inference model (and its self-check)
    unet_fast.mask_predictor = timed("model", unet_fast.mask_predictor)
    audio.load_audio = timed("load", audio.load_audio)
    stems.write_stems = timed("write", stems.write_stems)
    inference.Separator.vocals = timed("separate", lambda *args, **kwargs: vocals(*args, **dict(kwargs, timings=timings)))
    assert inference.main([song, "-o", out, "--model", model, "--overwrite"]) == 0
    result = dict(stages(timings), **{"model load": timings["model load"], "imports": imported - _START,
                                      "separate": timings["separate"],
                                      "start_time": _START, "end_time": time.time()})
    print(json.dumps(result), flush=True)
    sys.exit(0)  # with the interpreter's teardown, as the command line


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.cold_child:
        cold_child(*args.cold_child)
    import unet_model

    load_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_inference.") as tmp:
        work = Path(tmp)
        model, params, model_path = model_or_untrained(args.model, work)
        vocals, accompaniment = synthetic_song(args.seconds)
        song = work / "song.wav"
        audio.save_audio(song, vocals + accompaniment, 44100)
        del vocals, accompaniment
        (work / "out").mkdir()

        plain = unet_model.mask_model(model)
        separators = {
            "in-process, inference_mask_model float32 (the Separator's default)": inference.Separator(model, params),
            "in-process, inference_mask_model bfloat16 (the CLI's auto here)":
                inference.Separator(model, params, precision="bfloat16"),
            "in-process, model as trained (mask_model)":
                inference.Separator(lambda patches: np.asarray(plain.predict_on_batch(patches)), params),
        }
        for separator in separators.values():  # traced and warmed up (a 20 s excerpt)
            separator.separate(audio.load_audio(song, duration=20.0)[0], 44100)
        best = {label: (None, float("inf"), 0.0) for label in separators}
        for _ in range(args.repeats):  # interleaved, so that the CPU's other users slow each alike
            for label, separator in separators.items():
                result = separate_once(song, separator, work / "out" / "song")
                if result[1] < best[label][1]:
                    best[label] = result
        for label, (timings, wall, cpu) in best.items():
            rows.append([label] + [timings.get(c, "") for c in COLUMNS] + [wall, cpu, f"{args.seconds / wall:.0f}x"])

        cli = [sys.executable, "inference.py", str(song), "-o", str(work / "cli"), "--model", str(model_path),
               "--overwrite"]
        child = [sys.executable, str(Path(__file__).resolve()), "--cold-child", str(song), str(model_path),
                 str(work / "child")]
        whole = []
        for _ in range(max(1, args.repeats - 1)):
            whole.append(run_measured(cli))
            launched = time.time()
            measured = run_measured(child)
            timings = json.loads(measured["stdout"].strip().splitlines()[-1])
            timings["start"] = timings["start_time"] - launched
            timings["exit"] = launched + measured["wall"] - timings["end_time"]
            whole.append(dict(measured, timings=timings))
        cli_best = min((r for r in whole if "timings" not in r), key=lambda r: r["wall"])
        child_best = min((r for r in whole if "timings" in r), key=lambda r: r["wall"])
        rows.append(["whole process, the command line's steps timed (first song of a process)"]
                    + [child_best["timings"].get(c, "") for c in COLUMNS]
                    + [child_best["wall"], child_best["cpu"], f"{args.seconds / child_best['wall']:.0f}x"])
        rows.append(["whole process: python inference.py SONG"] + [""] * len(COLUMNS)
                    + [cli_best["wall"], cli_best["cpu"], f"{args.seconds / cli_best['wall']:.0f}x"])
    print_table(
        f"Separating a {args.seconds:g} s 44.1 kHz stereo song (seconds)",
        f"model: {args.model or 'untrained full-size U-Net'}; {inference.n_segments(audio.n_frames(round(args.seconds * params.sample_rate)), params.patch_frames)} "
        f"patches (overlap {inference.DEFAULT_OVERLAP}, batch {inference.DEFAULT_BATCH_SIZE}); in-process rows best of "
        f"{args.repeats}, whole-process rows best of {max(1, args.repeats - 1)}; 'model' includes building the inference "
        f"model and its first trace in the whole-process row; CPU: {cpu_summary()}; load average {load_start:.1f} at the "
        f"start, {load_average():.1f} at the end",
        ["run"] + list(COLUMNS) + ["total (wall)", "CPU s", "realtime"], rows, digits=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

"""TensorFlow (Keras) vs PyTorch on equal terms: one U-Net's weights in both, the same songs, the same threads.

    python pytorch_twin/compare_frameworks.py --model runs/NAME/best.keras --dataset mir1k --root DATA --split test --limit 5
    python pytorch_twin/compare_frameworks.py --torch coursework.pt [--params audio_params.json] SONG.wav [SONG ...]
    python pytorch_twin/compare_frameworks.py train --cache CACHE --run-dir DIR [train.py's options] [--test SPLIT]
    python pytorch_twin/compare_frameworks.py seeds DIR [DIR ...] [--out seeds.csv]
    python pytorch_twin/compare_frameworks.py ablation DIR [DIR ...] [--out ablation.csv]

The ``train`` form trains the same recipe with Keras on TensorFlow, Keras on PyTorch and the PyTorch
twin from the same initial weights and compares the three (``pytorch_twin/compare_training.py``; its
``--help``: ``python pytorch_twin/compare_frameworks.py train --help``); ``seeds`` gathers such comparisons made
with different ``--seed`` values into one table (the spread between seeds beside the difference
between frameworks); ``ablation`` gathers the ``--align`` settings of such folders (issue 26:
the twin's gap to Keras on PyTorch per aligned factor). The first two compare one model.

The model given (a ``.keras`` model, or a PyTorch checkpoint of the coursework U-Net) is
converted to the other framework (``pytorch_twin/convert_weights.py``), and both separate every song with
``inference.Separator`` -- the same patches, normalisation, overlap-add and mask application;
only the network differs. Without songs or ``--dataset`` only the speeds are measured.
Printed side by side:

* the largest difference between the two frameworks' masks (over every patch of every song)
  and between their separated vocals (samples);
* with ``--dataset`` (references available), BSS Eval scores of both from
  ``separation.metrics.score_methods``: per track, and the GNSDR/GSIR/GSAR table (v3; ``--v4``
  adds the museval medians);
* speed on this machine: inference and training-step patches per second of each framework at
  the same ``--batch-size`` and ``--threads`` (``torch.set_num_threads`` and TensorFlow's
  intra-op and inter-op thread pools set alike; Keras compiles its steps as ``train.py`` does,
  PyTorch runs eager). Training steps use Adam and the mean squared error of ``mask * mixture``
  against the vocals (train.py's default), on random patches. ``--bench-batches 0`` skips it.

The two agree to float rounding only when the Keras model pads as PyTorch does (see
``pytorch_twin/convert_weights.py``); the padding found is printed first.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

from separation import datasets, metrics
from separation.audio import AudioParams, DEFAULT_PARAMS
from separation.cli import ArgumentParser, run_cli
from separation.errors import UserError

FRAMEWORKS = ("keras", "torch")


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .keras model (audio_params.json beside it), converted to PyTorch")
    source.add_argument("--torch", help="a PyTorch checkpoint of the coursework U-Net, converted to Keras")
    parser.add_argument("--params", help="audio_params.json for --torch (default: the project's parameters)")
    parser.add_argument("--skip-first", action="store_true",
                        help="the PyTorch model concatenates (skip, decoder) instead of (decoder, skip)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow a --torch checkpoint that is a whole pickled module (runs code from the file)")
    parser.add_argument("songs", nargs="*", help="audio files to separate (no scores: no references)")
    parser.add_argument("--dataset", choices=datasets.DATASETS,
                        help="separate and score the tracks of a dataset (see datasets.py)")
    parser.add_argument("--root", help="the dataset's folder")
    parser.add_argument("--split", help="the dataset split (e.g. test)")
    parser.add_argument("--unit", choices=datasets.UNITS, default="track",
                        help="MIR-1K: whole songs (track, default) or single clips")
    parser.add_argument("--limit", type=int, help="only the first N tracks")
    parser.add_argument("--v4", action="store_true", help="also score with BSS Eval v4 (museval; slower)")
    parser.add_argument("--batch-size", type=int, default=8, help="patches per model call, both frameworks (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, both frameworks (default 2)")
    parser.add_argument("--bench-batches", type=int, default=5,
                        help="timed batches per speed measurement, after one warm-up batch (0: no benchmark)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # the same training three ways: pytorch_twin/compare_training.py
        from pytorch_twin import compare_training

        return compare_training.main(argv[1:])
    if argv[:1] == ["check"]:  # issue 26: does each --align switch align what it says?
        from pytorch_twin import alignment

        return alignment.check_main(argv[1:])
    if argv[:1] == ["seeds"]:  # several seeds' comparisons in one table
        from pytorch_twin import compare_training

        return compare_training.seeds_main(argv[1:])
    if argv[:1] == ["ablation"]:  # issue 26: the twin's gap to Keras per --align setting, over seeds
        from pytorch_twin import alignment

        return alignment.ablation_main(argv[1:])
    args = get_parser().parse_args(argv)
    if args.batch_size < 1 or args.threads < 1 or args.bench_batches < 0:
        raise UserError("--batch-size and --threads must be at least 1 and --bench-batches at least 0")
    if bool(args.dataset) != bool(args.root):
        raise UserError("--dataset and --root go together (the dataset's kind and its folder)")
    if not args.songs and not args.dataset and not args.bench_batches:
        raise UserError("nothing to do: give songs, or --dataset and --root, or --bench-batches above 0")
    from pytorch_twin import convert_weights

    convert_weights.require_torch()
    threads = set_threads(args.threads)  # before either framework starts its thread pools

    import unet_model
    from pytorch_twin import unet_torch

    if args.model:
        model, params = unet_model.load_model(args.model)
        module = convert_weights.keras_to_torch(model, args.skip_first)
    else:
        params = AudioParams.load(args.params) if args.params else DEFAULT_PARAMS
        state_dict = convert_weights.load_torch_checkpoint(args.torch, args.unsafe_pickle)
        model = convert_weights.torch_to_keras(state_dict, (params.n_bins, params.patch_frames, 1),
                                               skip_first=args.skip_first, name=args.torch)
        module = unet_torch.unet_from_state_dict(state_dict, skip_first=args.skip_first)
        module.load_state_dict(state_dict, strict=False)  # checked by torch_to_keras; num_batches_tracked optional
    module.eval()
    layout = convert_weights.padding_layout(model)
    print(f"{framework_versions()}; {threads}")
    print(f"Keras padding: {layout}" + (" (PyTorch's: the same function)" if layout == convert_weights.TORCH_PADDING
                                        else " (1 before, 2 after: NOT PyTorch's function, see pytorch_twin/convert_weights.py)"))

    tracks = list_tracks(args)
    if tracks:
        rows, diffs = compare_tracks(tracks, model, module, params, args.batch_size, args.v4)
        print_comparison(rows, diffs, args.v4)
    if args.bench_batches:
        speeds = benchmark(model, module, args.batch_size, args.bench_batches)
        print_speeds(speeds, args.batch_size, threads)
    return 0


# --------------------------------------------------------------------------------------------
# Threads and versions
# --------------------------------------------------------------------------------------------


def set_threads(n: int) -> str:
    """Give both frameworks ``n`` intra-op threads (and ``n`` inter-op); returns what took effect.

    TensorFlow fixes its pools when its runtime starts, so this must run before any TensorFlow
    op; if it already started (a notebook, a test session), the pools it has are reported.
    """
    import keras
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # allowed once per process, before any inter-op work
        pass
    text = f"torch {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # thread pools are a runtime setting, outside Keras' API

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:
            pass
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        text += f", tensorflow {intra or 'default'} intra-op / {inter or 'default'} inter-op"
    return text


def framework_versions() -> str:
    import keras
    import torch

    backend = keras.backend.backend()
    version = __import__(backend).__version__
    return f"keras {keras.__version__} on {backend} {version} vs torch {torch.__version__}"


# --------------------------------------------------------------------------------------------
# Separation and scores
# --------------------------------------------------------------------------------------------


def list_tracks(args) -> list[tuple[str, object]]:
    """``(name, load)`` pairs; ``load()`` returns ``(references or {"mixture": ...}, sr)``."""
    if args.dataset:
        from separation import datasets

        found = datasets.find_tracks(args.dataset, args.root, args.split, args.unit)
        return [(t.name, t.load) for t in found[:args.limit]]
    from separation import audio

    songs = [Path(s) for s in args.songs][:args.limit]
    for song in songs:
        if not song.is_file():
            raise UserError(f"{song}: no such audio file")

    def load(path):
        mixture, sr = audio.load_audio(path)
        return {"mixture": mixture}, sr

    return [(song.stem, functools.partial(load, song)) for song in songs]


class _Recorder:
    """A mask predictor that keeps every batch of masks it returns (for the frameworks' difference)."""

    def __init__(self, predict):
        self.predict, self.masks = predict, []

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        masks = self.predict(patches)
        self.masks.append(masks)
        return masks


def compare_tracks(tracks, model, module, params: AudioParams, batch_size: int, v4: bool = False):
    """Separate every track with both frameworks and score them when references exist.

    Returns ``(rows, diffs)``: ``rows`` are evaluate.py's per-track rows (``track``,
    ``method`` = framework, ``seconds``, metrics) and ``diffs`` one dict per track with
    ``mask`` and ``vocals`` (largest absolute differences) and each framework's seconds.
    """
    import inference
    from pytorch_twin import unet_torch

    settings = metrics.Settings(families=("v3", "v4") if v4 else ("v3",))
    predictors = {"keras": inference.Separator(model, params).predict,
                  "torch": functools.partial(unet_torch.predict_mask, module)}
    rows, diffs = [], []
    for name, load in tracks:
        references, sr = load()
        estimates, recorders, seconds = {}, {}, {}
        for framework in FRAMEWORKS:
            recorders[framework] = _Recorder(predictors[framework])
            start = time.perf_counter()
            separator = inference.Separator(recorders[framework], params, batch_size=batch_size)
            estimates[framework] = separator.separate(references["mixture"], sr)
            seconds[framework] = time.perf_counter() - start
        masks = [np.concatenate(recorders[f].masks) for f in FRAMEWORKS]
        diffs.append({"track": name, "mask": float(np.abs(masks[0] - masks[1]).max()),
                      "vocals": float(np.abs(estimates["keras"]["vocals"] - estimates["torch"]["vocals"]).max()),
                      **{f"{f}_seconds": seconds[f] for f in FRAMEWORKS}})
        if "vocals" in references:
            scores = metrics.score_methods(references, estimates, sr, settings)
            rows += [{"track": name, "method": f, **scores[f]} for f in FRAMEWORKS]
    return rows, diffs


def print_comparison(rows: list[dict], diffs: list[dict], v4: bool = False) -> None:
    """Print the differences per track and, when scored, both frameworks' BSS Eval tables."""

    header = ["track", "max |mask diff|", "max |vocals diff|"]
    table = [[d["track"], f"{d['mask']:.3g}", f"{d['vocals']:.3g}"] for d in diffs]
    print("\nLargest differences between the frameworks (masks over all patches; vocals in samples)")
    print(metrics.format_table(header, table))
    print(f"overall: mask {max(d['mask'] for d in diffs):.3g}, vocals {max(d['vocals'] for d in diffs):.3g}")
    seconds = {f: sum(d[f"{f}_seconds"] for d in diffs) for f in FRAMEWORKS}
    print("separation time, all tracks (one-off tracing included): "
          + ", ".join(f"{f} {seconds[f]:.2f} s" for f in FRAMEWORKS))
    if not rows:
        return
    columns = [f"v3_{s}_{m}" for s in metrics.SOURCES for m in ("SDR", "SIR", "SAR")]
    header = ["track", "framework"] + [f"{c.split('_')[1][:3]} {c.split('_')[2]}" for c in columns]
    print("\nBSS Eval v3 per track, dB")
    print(metrics.format_table(header, [[r["track"], r["method"]] + [r[c] for c in columns] for r in rows]))
    families = ("v3", "v4") if v4 else ("v3",)
    for title, header, table in metrics.headline_tables(metrics.summarize(rows), families):
        print(f"\n{title}")
        print(metrics.format_table(header, table))


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def benchmark(model, module, batch_size: int, batches: int, seed: int = 0) -> dict[str, float]:
    """Patches per second of both frameworks: ``{"keras inference", "torch inference",
    "keras training", "torch training"}``, each over ``batches`` timed batches after one warm-up.

    Inference is what ``inference.Separator`` runs (the mask, no gradients); a training step is a
    forward and backward pass and an Adam update with the mean squared error of
    ``mask * mixture`` against a target, in training mode (batch statistics, dropout). The Keras
    model is a fresh copy of ``model`` (its weights untouched), PyTorch's a copy of ``module``.
    """
    import copy

    import keras
    import torch
    from separation import unet_fast
    from pytorch_twin import unet_torch

    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + shape, dtype=np.float32) ** 4
    x /= x.max(axis=(1, 2, 3), keepdims=True)
    y = x * rng.random(x.shape, dtype=np.float32)

    def rate(step) -> float:
        step()  # warm-up: tracing, compilation, allocation
        start = time.perf_counter()
        for _ in range(batches):
            step()
        return batches * batch_size / (time.perf_counter() - start)

    speeds = {}
    masker = unet_fast.inference_mask_model(model)  # as inference.Separator runs it (float32)
    speeds["keras inference"] = rate(lambda: masker.predict_on_batch(x))
    speeds["torch inference"] = rate(lambda: unet_torch.predict_mask(module, x))

    trainee = keras.models.clone_model(model)
    trainee.set_weights(model.get_weights())
    trainee.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    speeds["keras training"] = rate(lambda: trainee.train_on_batch(x, y))

    twin = copy.deepcopy(module).train()
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
    tx, ty = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))) for a in (x, y))

    def torch_step():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(twin(tx) * tx, ty)
        loss.backward()
        optimizer.step()

    speeds["torch training"] = rate(torch_step)
    speeds["keras jit_compile"] = trainee.jit_compile
    return speeds


def print_speeds(speeds: dict, batch_size: int, threads: str) -> None:

    rows = [[task] + [speeds[f"{f} {task}"] for f in FRAMEWORKS] + [speeds[f"torch {task}"] / speeds[f"keras {task}"]]
            for task in ("inference", "training")]
    print(f"\nPatches per second (batch {batch_size}; {threads}; Keras jit_compile={speeds['keras jit_compile']}, "
          "PyTorch eager)")
    print(metrics.format_table(["task", "keras", "torch", "torch/keras"], rows))


if __name__ == "__main__":
    sys.exit(run_cli(main))

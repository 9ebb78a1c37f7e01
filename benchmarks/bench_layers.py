"""Where the U-Net's inference time goes: each block's speed against the matrix-product ceiling.

    .venv/bin/python benchmarks/bench_layers.py [--batch 32] [--rounds 4]

Times every block of the full U-Net alone on its real input (activations of a random
patch batch), three ways: the model as trained (its Keras layers: padding, convolution, batch
norm, activation, dropout, skip concatenation), and ``unet_fast.inference_mask_model``'s
block (batch norm folded; the route in the "path" column) in float32 and in bfloat16. The
float32 and bfloat16 2048 x 2048 matrix products (TensorFlow) are timed in the same
interleaved rounds as ceilings. GFLOP counts the block's convolution multiply-adds x 2 (see
``bench_model.unet_flops``). Prints one table; each sample repeats a block for at least
``--sample-seconds``, best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import sys

from benchlib import Sampled, cpu_summary, load_average, print_table

import numpy as np  # noqa: E402

from separation.audio import DEFAULT_PARAMS  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="patches per call (default 32, inference.py's)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds, best shown (default 4)")
    parser.add_argument("--sample-seconds", type=float, default=0.25, help="minimum length of a sample (default 0.25)")
    return parser


class Timed(Sampled):
    """A function of fixed inputs, timed in samples of repeated calls."""

    def __init__(self, function, *inputs):
        self.function, self.inputs = function, inputs

    def step(self):
        return np.asarray(self.function(*self.inputs))  # to host memory: the work is finished


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    load_start = load_average()
    import keras
    import tensorflow as tf  # tf.function and the matmul ceiling: this script times TensorFlow's kernels

    from separation import unet_fast
    import unet_model

    model = unet_model.build_unet((DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1))
    rng = np.random.default_rng(0)
    x = rng.random((args.batch,) + tuple(model.inputs[0].shape[1:]), dtype=np.float32) ** 4
    fast = {p: unet_fast.inference_mask_model(model, p).get_layer("mask") for p in unet_fast.PRECISIONS}
    blocks = fast["float32"].blocks
    depth = fast["float32"].depth

    # Each block's input (and a decoder's skip), from one pass through the float32 blocks.
    inputs, skips, h = [], [], tf.constant(x)
    for i, (kind, *_) in enumerate(blocks):
        if kind == "decoder" and i == depth:
            skips.pop()
        skip = skips.pop() if kind == "decoder" and i < len(blocks) - 1 else None
        inputs.append((h, skip))
        h = fast["float32"].run_block(i, h, skip)
        if kind == "encoder":
            skips.append(h)

    def trained_block(i):
        """The as-trained model's layers of block ``i`` (inference mode) as one function."""
        kind = blocks[i][0]
        number = i + 1 if kind == "encoder" else i + 1 - depth
        layers = [layer for layer in model.layers if layer.name.startswith(f"{kind}{number}_")]
        if i == len(blocks) - 1:
            layers.append(model.get_layer("mask"))

        def run(h, skip=None):
            for layer in layers:
                h = layer([h, skip]) if isinstance(layer, keras.layers.Concatenate) else layer(h, training=False)
            return h
        return run

    rows = []
    for i in range(len(blocks)):
        h, skip = inputs[i]
        args_ = (h,) if skip is None else (h, skip)
        variants = {"as trained": Timed(tf.function(trained_block(i)), *args_)}
        for p, layer in fast.items():
            cast = (tf.cast(h, p),) + (() if skip is None else (tf.cast(skip, p),))
            variants[p] = Timed(tf.function(lambda h, skip=None, layer=layer, i=i: layer.run_block(i, h, skip)), *cast)
        rows.append(variants)
    a = tf.constant(rng.random((2048, 2048), dtype=np.float32))
    matmul = tf.function(lambda a: tf.linalg.matmul(a, a))
    ceilings = {"float32": Timed(matmul, a), "bfloat16": Timed(matmul, tf.cast(a, tf.bfloat16))}
    whole = {p: Timed(unet_fast.inference_mask_model(model, p).predict_on_batch, x) for p in unet_fast.PRECISIONS}
    whole["as trained"] = Timed(unet_model.mask_model(model).predict_on_batch, x)
    everything = list(ceilings.values()) + list(whole.values()) + [t for r in rows for t in r.values()]
    for timed in everything:
        timed.warm_up(args.sample_seconds)
    for _ in range(args.rounds):
        for timed in everything:
            timed.time()

    peak = {p: 2 * 2048**3 / t.best / 1e9 for p, t in ceilings.items()}
    table = []
    for i, variants in enumerate(rows):
        kind, path, h, w, c, f = blocks[i]
        positions = (h // 2) * (w // 2) if kind == "encoder" else h * w
        gflop = 2 * args.batch * positions * 25 * c * f / 1e9
        number = i + 1 if kind == "encoder" else i + 1 - depth
        rate = {name: gflop / t.best for name, t in variants.items()}
        table.append([f"{kind} {number}: {h}x{w}x{c} -> {f}", path, f"{gflop:.2f}",
                      f"{1000 * variants['as trained'].best:.1f}", f"{100 * rate['as trained'] / peak['float32']:.0f}%",
                      f"{1000 * variants['float32'].best:.1f}", f"{100 * rate['float32'] / peak['float32']:.0f}%",
                      f"{1000 * variants['bfloat16'].best:.1f}", f"{100 * rate['bfloat16'] / peak['bfloat16']:.0f}%"])
    total_gflop = sum(float(r[2]) for r in table)
    sums = {name: sum(r[name].best for r in rows) for name in ("as trained", "float32", "bfloat16")}
    table.append(["sum of the blocks", "", f"{total_gflop:.1f}",
                  f"{1000 * sums['as trained']:.0f}", f"{100 * total_gflop / sums['as trained'] / peak['float32']:.0f}%",
                  f"{1000 * sums['float32']:.0f}", f"{100 * total_gflop / sums['float32'] / peak['float32']:.0f}%",
                  f"{1000 * sums['bfloat16']:.0f}", f"{100 * total_gflop / sums['bfloat16'] / peak['bfloat16']:.0f}%"])
    table.append(["whole model, one predict_on_batch", "", f"{total_gflop:.1f}",
                  f"{1000 * whole['as trained'].best:.0f}",
                  f"{100 * total_gflop / whole['as trained'].best / peak['float32']:.0f}%",
                  f"{1000 * whole['float32'].best:.0f}", f"{100 * total_gflop / whole['float32'].best / peak['float32']:.0f}%",
                  f"{1000 * whole['bfloat16'].best:.0f}",
                  f"{100 * total_gflop / whole['bfloat16'].best / peak['bfloat16']:.0f}%"])
    print_table(
        f"Where the inference time goes: U-Net blocks at batch {args.batch}",
        f"ms per call, best of {args.rounds} interleaved rounds; % = GFLOP/s against the matrix product of the same "
        f"precision measured in the same rounds: float32 {peak['float32']:.0f} GFLOP/s, bfloat16 "
        f"{peak['bfloat16']:.0f} GFLOP/s; CPU: {cpu_summary()}; load average {load_start:.1f} at the start, "
        f"{load_average():.1f} at the end",
        ["block (input -> output channels)", "path", "GFLOP", "as trained ms", "% f32 ceiling", "float32 ms",
         "% f32 ceiling", "bfloat16 ms", "% bf16 ceiling"], table)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

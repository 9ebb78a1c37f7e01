"""Model throughput: the full U-Net's patches/s in Keras and in the PyTorch twin, against this CPU's ceiling.

    .venv/bin/python benchmarks/bench_model.py [--batch-sizes 8,32] [--train-batch 16] [--rounds 3] [--threads 2]

Prints one table. Rows:

* ``ceiling``: a 2048 x 2048 float32 matrix product (TensorFlow, NumPy and PyTorch; the best is
  the ceiling the other rows are compared with), and TensorFlow's bfloat16 one, the ceiling of
  the bfloat16 rows;
* Keras inference of the mask, at each ``--batch-sizes``: the model as trained
  (``unet_model.mask_model``, ``predict_on_batch``), and ``unet_fast.inference_mask_model``
  (what ``inference.py`` runs) in float32 and bfloat16;
* PyTorch inference (``unet_torch``, ``torch.inference_mode``): channels-first as
  ``unet_torch.predict_mask`` runs it, channels-last, and channels-last under bfloat16 autocast;
* a training step (forward, backward, Adam; the mean squared error of ``mask * mixture``, as
  ``train.py`` compiles it) at ``--train-batch``, both frameworks.

GFLOP/s counts the convolutions' multiply-adds from the model's layers (``unet_flops``, 1.51
GFLOP per 512 x 128 patch; batch norm and activations not counted), and a training step as
3x the forward pass. Both frameworks get ``--threads`` intra-op threads. The configurations are
timed in interleaved rounds (each once per round, best of ``--rounds``; a sample repeats a row's
step for at least ``--sample-seconds``) so that the CPU's other users slow them alike: on a
shared machine compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import time

from benchlib import Sampled, cpu_summary, load_average, print_table

import numpy as np  # noqa: E402

from separation.audio import DEFAULT_PARAMS  # noqa: E402
from separation.cli import ArgumentParser, run_cli  # noqa: E402

MATMUL_N = 2048


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,32", help="inference batch sizes (default 8,32: compare_frameworks' "
                                                             "and inference.py's)")
    parser.add_argument("--train-batch", type=int, default=16, help="training batch size (default 16; 0: no training rows)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the best of each row is shown (default 5)")
    parser.add_argument("--sample-seconds", type=float, default=0.5,
                        help="each row's sample repeats its step for at least this long (default 0.5)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both frameworks (default 2)")
    parser.add_argument("--no-torch", action="store_true", help="Keras on TensorFlow only (no PyTorch rows, no Keras "
                        "on the PyTorch backend)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # child_main
    return parser


def unet_flops(model) -> int:
    """Forward multiply-adds x 2 of one patch, from the model's (transposed) convolutions.

    A convolution costs ``k*k*c_in*c_out`` per output position; a transposed one the same per
    input position (each input pixel scatters one kernel; the few that land in cropped rows
    are counted too, 1% of the last layer's)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kh, kw = layer.kernel_size
            c_in, c_out = layer.input.shape[-1], layer.filters
            positions = np.prod((layer.input if isinstance(layer, keras.layers.Conv2DTranspose) else layer.output).shape[1:3])
            total += 2 * int(positions) * kh * kw * c_in * c_out
    return total


def set_threads(n: int, torch_too: bool) -> str:
    """Both frameworks' thread pools (before either starts them); returns what took effect."""
    if torch_too or os.environ.get("KERAS_BACKEND") == "torch":
        from pytorch_twin import compare_frameworks

        return compare_frameworks.set_threads(n)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    return f"tensorflow {n} intra-op / {n} inter-op threads"


class Row(Sampled):
    """One timed configuration: ``step()`` processes ``patches`` patches (or one matrix product)."""

    def __init__(self, group: str, label: str, batch: int | str, step, patches: int, flops: float, ref: str | None):
        self.group, self.label, self.batch, self.step = group, label, batch, step
        self.patches, self.flops, self.ref = patches, flops, ref

    @property
    def gflops(self) -> float:
        return self.flops / self.best / 1e9


def matmul_rows(torch_too: bool) -> list[Row]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.random((MATMUL_N, MATMUL_N), dtype=np.float32) for _ in range(2))
    flops = 2 * MATMUL_N**3
    ta, tb = tf.constant(a), tf.constant(b)
    tf_matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    rows = [Row("ceiling", "float32 matmul, TensorFlow (oneDNN)", "-", lambda: tf_matmul(ta, tb).numpy(), 0, flops, None),
            Row("ceiling", "float32 matmul, NumPy (OpenBLAS)", "-", lambda: a @ b, 0, flops, None)]
    if torch_too:
        import torch

        pa, pb = torch.from_numpy(a), torch.from_numpy(b)
        rows.append(Row("ceiling", "float32 matmul, PyTorch", "-", lambda: pa @ pb, 0, flops, None))
    ha, hb = tf.cast(ta, tf.bfloat16), tf.cast(tb, tf.bfloat16)
    rows.append(Row("bf16", "bfloat16 matmul, TensorFlow (bfloat16 ceiling)", "-", lambda: tf_matmul(ha, hb).numpy(), 0,
                    flops, None))
    return rows


def keras_rows(model, batches: list[int], train_batch: int, flops: int) -> list[Row]:
    from separation import unet_fast
    import unet_model

    rng = np.random.default_rng(1)
    rows = []
    plain = unet_model.mask_model(model)
    fast = {p: unet_fast.inference_mask_model(model, p) for p in unet_fast.PRECISIONS}
    for batch in batches:
        x = rng.random((batch,) + model.inputs[0].shape[1:], dtype=np.float32) ** 4
        rows += [
            Row("inference", "Keras, model as trained (mask_model)", batch, lambda m=plain, x=x: m.predict_on_batch(x),
                batch, batch * flops, "torch"),
            Row("inference", "Keras, inference_mask_model float32", batch,
                lambda m=fast["float32"], x=x: m.predict_on_batch(x), batch, batch * flops, "torch"),
            Row("inference", "Keras, inference_mask_model bfloat16", batch,
                lambda m=fast["bfloat16"], x=x: m.predict_on_batch(x), batch, batch * flops, "torch"),
        ]
    if train_batch:
        rows += keras_training_rows(train_batch, flops)
    return rows


def keras_training_rows(train_batch: int, flops: int) -> list[Row]:
    """A training step of ``train.py --precision float32`` and ``bfloat16`` on this process' Keras backend:
    the model built as train.py builds it (``build_unet(precision=...)``), compiled as it compiles it (Adam,
    the mean squared error, ``jit_compile="auto"``), one ``train_on_batch``."""
    import keras

    import unet_model

    rng = np.random.default_rng(1)
    shape = (DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1)
    x = rng.random((train_batch,) + shape, dtype=np.float32) ** 4
    y = x * rng.random(x.shape, dtype=np.float32)
    rows = []
    for precision in unet_model.PRECISIONS:
        trainee = unet_model.build_unet(shape, precision=precision)
        trainee.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error", jit_compile="auto")
        rows.append(Row("training", f"Keras on {keras.backend.backend()}, train.py --precision {precision} "
                        f"(jit_compile={trainee.jit_compile})", train_batch,
                        lambda m=trainee: m.train_on_batch(x, y), train_batch, 3 * train_batch * flops, "torch"))
    return rows


class ChildRow(Row):
    """A row whose step runs in a child process (:func:`child_main`), timed here among the others:
    one process has one Keras backend, so Keras on PyTorch trains in a child of this one."""

    def __init__(self, child, index: int, label: str, batch: int, patches: int, flops: float):
        super().__init__("training", label, batch, self.run_in_child, patches, flops, "torch")
        self.child, self.index = child, index

    def run_in_child(self):
        self.child.stdin.write(f"{self.index}\n")
        self.child.stdin.flush()
        if self.child.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the Keras child process stopped ({self.label})")


def child_rows(backend: str, train_batch: int, threads: int, flops: int) -> list[Row]:
    """The Keras training rows on ``backend``, each step run by a child process with that backend."""
    child = subprocess.Popen([sys.executable, __file__, "--child", "--train-batch", str(train_batch), "--threads",
                              str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, KERAS_BACKEND=backend))
    labels = json.loads(child.stdout.readline())
    return [ChildRow(child, i, label, train_batch, train_batch, 3 * train_batch * flops) for i, label in enumerate(labels)]


def child_main(args) -> int:
    """``--child``: build the Keras training rows on this process' backend, print their labels (a JSON
    line), then run row N's step for each line N read, answering ``ok``."""
    set_threads(args.threads, torch_too=False)
    rows = keras_training_rows(args.train_batch, 0)
    print(json.dumps([row.label for row in rows]), flush=True)
    for line in sys.stdin:
        rows[int(line)].step()
        print("ok", flush=True)
    return 0


def torch_rows(model, batches: list[int], train_batch: int, flops: int) -> list[Row]:
    from pytorch_twin import convert_weights
    import torch
    from pytorch_twin import unet_torch

    module = convert_weights.keras_to_torch(model).eval()
    last = unet_torch.UNet(module.filters).eval()
    last.load_state_dict(module.state_dict())
    last = last.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(1)
    shape = tuple(model.inputs[0].shape[1:])

    def channels_last(x, autocast: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return last(x).float()

    rows = []
    for batch in batches:
        x = rng.random((batch,) + shape, dtype=np.float32) ** 4
        xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).contiguous(memory_format=torch.channels_last)
        rows += [
            Row("inference", "PyTorch eager, channels-first (unet_torch.predict_mask)", batch,
                lambda x=x: unet_torch.predict_mask(module, x), batch, batch * flops, None),
            Row("inference", "PyTorch eager, channels-last", batch, lambda x=xt: channels_last(x, False), batch,
                batch * flops, None),
            Row("inference", "PyTorch eager, channels-last, bfloat16 autocast", batch, lambda x=xt: channels_last(x, True),
                batch, batch * flops, None),
        ]
    if train_batch:
        x = rng.random((train_batch,) + shape, dtype=np.float32) ** 4
        y = x * rng.random(x.shape, dtype=np.float32)
        for label, memory_format in (("channels-first", torch.contiguous_format), ("channels-last", torch.channels_last)):
            twin = unet_torch.UNet(module.filters).train().to(memory_format=memory_format)
            optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
            tx, ty = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))).contiguous(memory_format=memory_format)
                      for a in (x, y))

            def step(twin=twin, optimizer=optimizer, tx=tx, ty=ty, autocast=False):
                optimizer.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    mask = twin(tx)
                loss = torch.nn.functional.mse_loss(mask.float() * tx, ty)  # as train_torch.py
                loss.backward()
                optimizer.step()

            ours = " (train_torch.py --precision float32 / bfloat16)" if label == "channels-first" else ""
            rows.append(Row("training", f"PyTorch eager, {label}, Adam{ours}", train_batch, step, train_batch,
                            3 * train_batch * flops, None))
            rows.append(Row("training", f"PyTorch eager, {label}, Adam, bfloat16 autocast{ours}", train_batch,
                            functools.partial(step, autocast=True), train_batch, 3 * train_batch * flops, None))
    return rows


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.child:
        return child_main(args)
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    torch_too = not args.no_torch and importlib.util.find_spec("torch") is not None
    load_start = load_average()
    threads = set_threads(args.threads, torch_too)
    import keras
    import unet_model

    model = unet_model.build_unet((DEFAULT_PARAMS.n_bins, DEFAULT_PARAMS.patch_frames, 1))
    flops = unet_flops(model)
    rows = matmul_rows(torch_too) + keras_rows(model, batches, args.train_batch, flops)
    if torch_too:
        rows += torch_rows(model, batches, args.train_batch, flops)
        if args.train_batch:
            rows += child_rows("torch", args.train_batch, args.threads, flops)
    start = time.perf_counter()
    for row in rows:
        row.warm_up(args.sample_seconds)
    warm_s = time.perf_counter() - start
    for _ in range(args.rounds):
        for row in rows:
            row.time()

    ceiling = max(row.gflops for row in rows if row.group == "ceiling")
    bf16_ceiling = max(row.gflops for row in rows if row.group == "bf16")
    best_torch, best_torch_any = {}, {}  # (group, batch) -> patches/s of PyTorch's fastest row
    for row in rows:
        if row.label.startswith("PyTorch"):
            key = (row.group, row.batch)
            best_torch_any[key] = max(best_torch_any.get(key, 0.0), row.patches / row.best)
            if "bfloat16" not in row.label:
                best_torch[key] = max(best_torch.get(key, 0.0), row.patches / row.best)
    header = ["what", "batch", "patches/s", "GFLOP/s", "% of float32 ceiling", "% of bfloat16 matmul",
              "x best PyTorch float32", "x best PyTorch, any precision"]
    table = []
    for row in rows:
        rate = row.patches / row.best if row.patches else None
        low = row.group == "bf16" or "bfloat16" in row.label
        ratios = [f"{rate / best[key]:.2f}x" if row.ref and best.get(key := (row.group, row.batch)) else ""
                  for best in (best_torch, best_torch_any)]
        table.append([f"{row.group}: {row.label}", row.batch, "-" if rate is None else f"{rate:.1f}", f"{row.gflops:.0f}",
                      f"{100 * row.gflops / ceiling:.0f}%", f"{100 * row.gflops / bf16_ceiling:.0f}%" if low else "",
                      *ratios])
    import tensorflow as tf

    torch_version = __import__("torch").__version__ if torch_too else "not installed"
    print_table(
        f"Model throughput, full U-Net ({model.count_params():,} parameters, {flops / 1e9:.2f} GFLOP per "
        f"{DEFAULT_PARAMS.n_bins}x{DEFAULT_PARAMS.patch_frames} patch forward)",
        f"CPU: {cpu_summary()}; {threads}; keras {keras.__version__}, tensorflow {tf.__version__} "
        f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}), torch {torch_version}; "
        f"best of {args.rounds} interleaved rounds of samples of at least {args.sample_seconds:g} s after a warm-up "
        f"({warm_s:.0f} s); float32 ceiling = the fastest float32 matrix product: {ceiling:.0f} GFLOP/s (bfloat16: "
        f"{bf16_ceiling:.0f}); training GFLOP/s count 3x the forward pass; load average "
        f"{load_start:.1f} at the start, {load_average():.1f} at the end", header, table)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

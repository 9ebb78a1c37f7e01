"""Issue 26: align one difference at a time between the twin's PyTorch training and Keras', and check each switch.

    python pytorch_twin/compare_frameworks.py train [train.py's options] --align adam      # one factor aligned
    python pytorch_twin/compare_frameworks.py train [train.py's options] --align all       # all of them
    KERAS_BACKEND=torch python pytorch_twin/compare_frameworks.py check                    # the quick check
    python pytorch_twin/compare_frameworks.py ablation runs/ablation-seed0 runs/ablation-seed1 ...  # the table

With the same initial weights and batches, four things still differ between the twin's training
(``pytorch_twin/train_torch.py``, the coursework's PyTorch) and Keras' (``train.py``). Each has a
switch that makes the twin do what Keras does; all are off by default.

=========  ==========================================  ==========================================
factor     Keras (train.py)                            the twin's switch
=========  ==========================================  ==========================================
adam       Adam adds epsilon 1e-7 to sqrt(v) *before*  ``--keras-adam-epsilon``: PyTorch's eps set
           v's bias correction (PyTorch: 1e-8, after)  each step so the update is Keras'
                                                       (``train_torch.set_keras_epsilon``)
batchnorm  the running variance moves towards the      ``--keras-batchnorm``
           biased batch variance (PyTorch: unbiased;   (``unet_torch.KerasBatchNorm2d``)
           both momentum 0.1 in PyTorch's convention)
order      ``fit`` shuffles the batches of each epoch  ``--batch-order FILE``, Keras' order
           with Python's ``random``                    replayed by :func:`keras_batch_orders`
dropout    its own random masks                        none: masks cannot be shared, so
                                                       ``--dropout 0`` in all three trainings
=========  ==========================================  ==========================================

``--align`` of ``compare_frameworks.py train`` turns them on (:func:`twin_options`) and names the
folders after them (:func:`folder_suffix`), so that the comparisons of one seed share a folder
and its Keras trainings: those change only with ``dropout``.

``compare_frameworks.py check`` (:func:`check_main`) shows, on a tiny U-Net and a few random
batches in this process (Keras on its current backend), that each switch does what it says: with
it on, the quantity it aligns agrees between Keras and the twin to a stated tolerance, and with
it off it does not. ``compare_frameworks.py ablation`` (:func:`ablation_main`) gathers the
comparisons of several seeds into the ablation's table: per setting, the twin's difference to
Keras on PyTorch seed by seed, and its change from nothing aligned, paired by seed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np

from separation.cli import bounded
from separation.errors import UserError

FACTORS = ("adam", "batchnorm", "order", "dropout")
ORDER_FILE = "keras_batch_order.json"  # in the comparison's folder, with --align order
#: The Keras backend whose batch order ``--align order`` replays: the twin's closest comparison (same arithmetic).
ORDER_BACKEND = "torch"


def factor_list(text: str) -> tuple[str, ...]:
    """``--align``: comma-separated factors, or ``all``; returned in :data:`FACTORS`' order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return FACTORS
    unknown = [n for n in names if n not in FACTORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{','.join(unknown) or repr(text)}: choose from {', '.join(FACTORS)} "
                                         "(comma-separated) or all")
    return tuple(f for f in FACTORS if f in names)


def folder_suffix(factors) -> str:
    """``-align-adam-order`` for those factors, ``""`` for none: the suffix of a training's folder."""
    return "-align-" + "-".join(factors) if factors else ""


def twin_options(factors, order_file=None) -> list[str]:
    """The options of ``pytorch_twin/train_torch.py`` that align ``factors`` (``dropout`` is
    ``--dropout 0``, given to all three trainings by the caller)."""
    options = []
    if "adam" in factors:
        options.append("--keras-adam-epsilon")
    if "batchnorm" in factors:
        options.append("--keras-batchnorm")
    if "order" in factors:
        options += ["--batch-order", str(order_file)]
    return options


# --------------------------------------------------------------------------------------------
# The order of Keras' batches
# --------------------------------------------------------------------------------------------


def keras_batch_orders(seed: int, batches: int, epochs: int, build, backend: str = ORDER_BACKEND) -> list[list[int]]:
    """The order in which ``train.py``'s ``fit`` visits the ``batches`` batches of each of ``epochs`` epochs.

    Keras' ``fit`` (``shuffle=True``) draws each epoch's order with ``random.shuffle`` from
    Python's global generator, which ``keras.utils.set_random_seed(seed)`` seeds; before the
    first epoch, building the model draws from it too: one seed per layer that has random
    numbers (``keras.random.SeedGenerator``). So the orders are replayed by seeding, calling
    ``build()`` (build the same model as train.py: the number of draws is the same on every
    backend) and shuffling. On the PyTorch backend ``fit`` first looks at one batch of a
    shuffled pass, which takes one shuffle; on TensorFlow that look is unshuffled.
    Python's generator is left as it was. Checked against ``fit`` itself by ``check``.
    """
    if backend not in ("tensorflow", "torch", "jax"):
        raise ValueError(f"backend must be tensorflow, torch or jax, got {backend!r}")
    saved = random.getstate()
    try:
        random.seed(seed)  # what keras.utils.set_random_seed does to Python's generator
        build()
        shuffles = epochs + (backend == "torch")
        orders = []
        for _ in range(shuffles):
            order = list(range(batches))
            random.shuffle(order)  # keras' PyDatasetAdapter, once per pass over the data
            orders.append(order)
    finally:
        random.setstate(saved)
    return orders[-epochs:] if epochs else []


def write_batch_order(path, orders: list[list[int]], note: str = "") -> None:
    """``--batch-order``'s file: ``{"orders": [[...], ...], "note": ...}``, written atomically."""
    from separation.files import atomic_write_text

    atomic_write_text(path, json.dumps({"note": note, "orders": orders}) + "\n")


# --------------------------------------------------------------------------------------------
# The quick check: each switch on and off, Keras and the twin side by side
# --------------------------------------------------------------------------------------------


def check_parser() -> argparse.ArgumentParser:
    from separation.cli import ArgumentParser
    import train

    parser = ArgumentParser(
        prog="pytorch_twin/compare_frameworks.py check",
        description="Check, before any ablation run, that each --align switch aligns what it says: a tiny U-Net "
                    "trained a few steps on random batches by Keras (this process's backend: set KERAS_BACKEND) "
                    "and by the twin from the same weights, each switch off and on.")
    parser.add_argument("--steps", type=bounded(int, 2), default=10, help="training steps compared (default 10)")
    parser.add_argument("--epochs", type=bounded(int, 1), default=3,
                        help="epochs of Keras' fit whose batch order is compared (default 3)")
    parser.add_argument("--batch-size", type=bounded(int, 2), default=4, help="patches per batch (default 4)")
    parser.add_argument("--filters", type=train.filter_list, default=(4, 8, 8, 8),
                        help="encoder filters of the tiny U-Net (default 4,8,8,8; 16,32,64,128,256,512: the real one)")
    parser.add_argument("--bins", type=bounded(int, 2), default=64, help="patch height (default 64)")
    parser.add_argument("--frames", type=bounded(int, 2), default=32, help="patch width (default 32)")
    parser.add_argument("--learning-rate", type=bounded(float, 0, low_open=True), default=1e-3,
                        help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="weights, batches and dropout (default 0)")
    return parser


#: Largest relative difference between Keras and the twin that counts as aligned: float32 rounding
#: over a few steps (about 1e-7 per operation) stays far below it.
TOLERANCE = 1e-5


def check_main(argv=None) -> int:
    args = check_parser().parse_args(argv)
    size = 2 ** len(args.filters)
    if args.bins % size or args.frames % size:
        raise UserError(f"--bins and --frames must divide by {size} for {len(args.filters)} layers of --filters")
    import keras
    import torch

    shape = (args.bins, args.frames, 1)
    setup = dict(filters=args.filters, shape=shape, lr=args.learning_rate, seed=args.seed)
    batches = random_batches(args.seed, args.steps, args.batch_size, shape)
    rows = check_rows(setup, batches, args.epochs)
    print(f"Keras {keras.__version__} on {keras.backend.backend()} vs the twin (torch {torch.__version__}); "
          f"U-Net {','.join(map(str, args.filters))} on {args.bins}x{args.frames} patches, {args.steps} steps of "
          f"{args.batch_size}, learning rate {args.learning_rate:g}, seed {args.seed}")
    print(format_check(rows))
    failed = [r["factor"] for r in rows if r["verdict"] == "NOT ALIGNED"]
    if failed:
        print(f"not aligned with the switch on: {', '.join(failed)}")
    return 1 if failed else 0


def random_batches(seed: int, steps: int, batch_size: int, shape) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches ``(mixture, vocals)`` of ``(batch_size, *shape)`` float32: peaky
    magnitudes normalised to 1 per patch, and a share of each as the vocals."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        mixture = rng.random((batch_size, *shape), dtype=np.float32) ** 4
        mixture /= mixture.max(axis=(1, 2, 3), keepdims=True)
        batches.append((mixture, mixture * rng.random(mixture.shape, dtype=np.float32)))
    return batches


def keras_training(setup: dict, dropout: float, batches, init: dict | None = None) -> dict:
    """Keras trains the U-Net as train.py does (seeded, L1, Adam) one step per batch, from
    ``init`` (a state_dict in the twin's layout) when given.

    Returns ``{"init": state_dict, "losses": [...], "running_var": [...]}``: the initial
    weights in the twin's layout, each step's loss (before its update) and after each step
    the running variances of every batch norm (concatenated in the state_dict's order)."""
    import keras

    from pytorch_twin import convert_weights
    from unet_model import build_unet

    keras.utils.set_random_seed(setup["seed"])
    model = build_unet(input_shape=setup["shape"], filters=setup["filters"], dropout=dropout)
    if init is not None:
        convert_weights.state_dict_to_keras(init, model)
    init = convert_weights.keras_to_state_dict(model)
    model.compile(optimizer=keras.optimizers.Adam(setup["lr"]), loss="mean_absolute_error")
    losses, running = [], []
    for mixture, vocals in batches:
        losses.append(float(model.train_on_batch(mixture, vocals, return_dict=True)["loss"]))
        running.append(running_variances(convert_weights.keras_to_state_dict(model)))
    return {"init": init, "losses": losses, "running_var": running}


def twin_training(setup: dict, init: dict, dropout: float, batches, keras_adam_epsilon: bool = False,
                  keras_batchnorm: bool = False, eps: float | None = None) -> dict:
    """The twin trains from ``init`` as pytorch_twin/train_torch.py does (its ``train_step``);
    ``eps`` replaces PyTorch's Adam epsilon (default 1e-8). Returns what :func:`keras_training` does."""
    import torch
    from torch import nn

    from pytorch_twin import train_torch
    from pytorch_twin.unet_torch import UNet

    torch.manual_seed(setup["seed"])
    model = UNet(setup["filters"], dropout=dropout, keras_batchnorm=keras_batchnorm)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()}, strict=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=setup["lr"], **({} if eps is None else {"eps": eps}))
    model.train()
    losses, running = [], []
    for batch in batches:
        mixture, vocals = train_torch.to_torch(batch)
        losses.append(train_torch.train_step(model, optimizer, nn.L1Loss(), mixture, vocals,
                                             keras_adam_epsilon=keras_adam_epsilon))
        running.append(running_variances({k: v.numpy() for k, v in model.state_dict().items()}))
    return {"losses": losses, "running_var": running}


def running_variances(state_dict: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for k, v in sorted(state_dict.items())
                           if k.endswith("running_var")])


def relative_difference(a, b) -> float:
    """The largest ``|a - b| / |b|``, elementwise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def fit_batch_orders(setup: dict, dropout: float, batches: int, epochs: int) -> list[list[int]]:
    """The order in which Keras' ``fit`` asks for the batches of each epoch, recorded: the model
    seeded, built and compiled as train.py does, fitted on a dataset that notes each request."""
    import keras

    from unet_model import build_unet

    class Recorder(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.requests = []

        def __len__(self):
            return batches

        def __getitem__(self, index):
            self.requests.append(index)
            x = np.full((1, *setup["shape"]), 0.5, dtype=np.float32)
            return x, x / 2

    keras.utils.set_random_seed(setup["seed"])
    data = Recorder()
    model = build_unet(input_shape=setup["shape"], filters=setup["filters"], dropout=dropout)
    model.compile(optimizer=keras.optimizers.Adam(setup["lr"]), loss="mean_absolute_error")
    model.fit(data, epochs=epochs, verbose=0)
    trained = data.requests[-batches * epochs:]  # before them fit looks at a batch or two to trace the model
    return [trained[e * batches:(e + 1) * batches] for e in range(epochs)]


def check_rows(setup: dict, batches, epochs: int = 3) -> list[dict]:
    """The check's table: per factor, what is compared, the difference with the switch off and
    on, and the verdict (``aligned``: on within :data:`TOLERANCE`, off outside it)."""
    import keras

    from unet_model import build_unet

    keras_runs = {0.5: keras_training(setup, 0.5, batches)}
    init = keras_runs[0.5]["init"]  # dropout's layers take seeds: without them build_unet draws other weights
    keras_runs[0.0] = keras_training(setup, 0.0, batches, init)

    def twin(dropout=0.0, **switches):
        return twin_training(setup, init, dropout, batches, **switches)

    def losses(run, dropout=0.0, steps=slice(None)):
        return relative_difference(run["losses"][steps], keras_runs[dropout]["losses"][steps])

    def variances(run, step, dropout=0.0):
        return relative_difference(run["running_var"][step], keras_runs[dropout]["running_var"][step])

    default, n = twin(), len(batches)
    rows = [
        row("dropout", "loss of step 1 (same weights and batch)", losses(twin(0.5), 0.5, slice(1)),
            losses(default, 0.0, slice(1))),
        row("adam", f"losses of steps 1-{n} (no dropout)", losses(default),
            losses(twin(keras_adam_epsilon=True))),
        row("adam, eps=1e-7 only", f"losses of steps 1-{n} (no dropout)", losses(default), losses(twin(eps=1e-7)),
            expected=False),
        row("batchnorm", "running variances after step 1 (no dropout)", variances(default, 0),
            variances(twin(keras_batchnorm=True), 0)),
    ]
    n_batches = 5
    dropout = 0.5
    fitted = fit_batch_orders(setup, dropout, n_batches, epochs)
    build = lambda: build_unet(input_shape=setup["shape"], filters=setup["filters"], dropout=dropout)  # noqa: E731
    replayed = keras_batch_orders(setup["seed"], n_batches, epochs, build, keras.backend.backend())
    sequential = [list(range(n_batches))] * epochs
    rows.append(row("order", f"epochs of {n_batches} batches in Keras' order (of {epochs})",
                    sum(o == f for o, f in zip(sequential, fitted)), sum(o == f for o, f in zip(replayed, fitted)),
                    count=epochs))
    aligned = twin(keras_adam_epsilon=True, keras_batchnorm=True)
    rows += [
        row("all", f"losses of steps 1-{n}", losses(twin(0.5), 0.5), losses(aligned)),
        row("all", f"running variances after step {n}", variances(twin(0.5), n - 1, 0.5), variances(aligned, n - 1)),
    ]
    return rows


def row(factor: str, compared: str, off, on, expected: bool = True, count: int | None = None) -> dict:
    """One line of the check; ``count``: the values count agreeing cases out of ``count``."""
    if count is not None:
        ok_on, ok_off = on == count, off == count
        tolerance = f"all {count}"
    else:
        ok_on, ok_off = on <= TOLERANCE, off <= TOLERANCE
        tolerance = f"{TOLERANCE:.0e}"
    if not expected:  # a variant shown for comparison: it is not meant to align
        verdict = "aligned" if ok_on else "not aligned (as expected)"
    elif ok_on:
        verdict = "aligned" if not ok_off else "aligned, but also when off"
    else:
        verdict = "NOT ALIGNED"
    return {"factor": factor, "compared": compared, "off": off, "on": on, "tolerance": tolerance, "verdict": verdict}


def format_check(rows: list[dict]) -> str:
    from separation import metrics

    def shown(value):
        return str(value) if isinstance(value, int) else f"{value:.2e}"

    return metrics.format_table(
        ["factor", "compared (largest relative difference, Keras vs twin)", "switch off", "switch on", "tolerance",
         "verdict"],
        [[r["factor"], r["compared"], shown(r["off"]), shown(r["on"]), r["tolerance"], r["verdict"]] for r in rows])


# --------------------------------------------------------------------------------------------
# The ablation's table: the twin's gap to Keras on PyTorch, per aligned setting and seed
# --------------------------------------------------------------------------------------------

ABLATION_METRICS = ("voc GNSDR", "best val loss")
#: The gap the ablation explains: the twin against Keras on its own backend (same arithmetic).
GAP = ("PyTorch twin", "Keras/PyTorch")


def ablation_parser() -> argparse.ArgumentParser:
    from separation.cli import ArgumentParser

    parser = ArgumentParser(
        prog="pytorch_twin/compare_frameworks.py ablation",
        description="Issue 26's table: for every --align setting trained into all the given comparison folders "
                    "(one per seed, made by 'pytorch_twin/compare_frameworks.py train --seed N [--align F]'), the "
                    "PyTorch twin's difference to Keras/PyTorch seed by seed, its mean and sd, and how much "
                    "aligning the setting changed it (paired by seed, against nothing aligned).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="comparison folders, one per seed")
    parser.add_argument("--out", help="also write the table as CSV to this file")
    return parser


def settings_in(run_dir) -> list[tuple[str, ...]]:
    """The aligned settings whose comparison table lies in ``run_dir``: ``()`` for nothing aligned,
    then single factors, then combinations, all four last."""
    from pathlib import Path

    from pytorch_twin.compare_training import TABLE_FILE

    stem = TABLE_FILE.removesuffix(".csv")
    found = set()
    for path in Path(run_dir).glob(stem + "*.csv"):
        suffix = path.name[len(stem):-len(".csv")]
        if not suffix:
            found.add(())
        elif suffix.startswith("-align-"):
            try:
                found.add(factor_list(suffix.removeprefix("-align-").replace("-", ",")))
            except argparse.ArgumentTypeError:
                pass  # not a name that train --align writes
    return sorted(found, key=setting_order)


def setting_order(factors) -> tuple:
    """Nothing aligned first, then single factors in :data:`FACTORS`' order, then combinations."""
    return len(factors), [FACTORS.index(f) for f in factors]


def setting_label(factors) -> str:
    if not factors:
        return "nothing aligned"
    return "all" if tuple(factors) == FACTORS else ",".join(factors)


def ablation_rows(run_dirs) -> tuple[list[dict], list[str], str]:
    """One row per metric and setting present in every folder: ``{"metric", "setting", "values"
    (twin - Keras/PyTorch per folder), "mean", "sd", "change", "change sd"}`` (change: the values
    minus those with nothing aligned, folder by folder; NaN without that setting). Also the
    settings left out, each with the folders that lack it, and the separation that scored the
    test songs (``compare_training.same_separation``)."""
    from pytorch_twin.compare_training import read_comparison, same_separation, table_file

    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such folder")
    present = [set(settings_in(d)) for d in run_dirs]
    every = sorted(set.union(*present), key=setting_order)
    shown = [f for f in every if all(f in p for p in present)]
    missing = [f"{setting_label(f)} (missing in {', '.join(str(d) for d, p in zip(run_dirs, present) if f not in p)})"
               for f in every if f not in shown]
    if not shown:
        raise UserError(f"no --align setting has a comparison table in all of {', '.join(map(str, run_dirs))}; run "
                        "'pytorch_twin/compare_frameworks.py train --seed N [--align F]' into each first")
    gaps = {f: [read_comparison(d, f) for d in run_dirs] for f in shown}
    separation = same_separation([t for f in shown for t in gaps[f]],
                                 [d / table_file(f) for f in shown for d in run_dirs])
    rows = []
    for metric in ABLATION_METRICS:
        base = None
        for factors in shown:
            values = np.array([t[GAP[0]][metric] - t[GAP[1]][metric] for t in gaps[factors]])
            if not factors:
                base = values
            change = values - base if base is not None else np.full_like(values, np.nan)
            rows.append({"metric": metric, "setting": setting_label(factors), "values": values,
                         "mean": values.mean(), "sd": _sd(values), "change": change.mean(), "change sd": _sd(change)})
    return rows, missing, separation


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def ablation_main(argv=None) -> int:
    from pathlib import Path

    from pytorch_twin.compare_training import run_label, write_csv
    from separation import metrics

    args = ablation_parser().parse_args(argv)
    dirs = [Path(d) for d in args.run_dirs]
    rows, missing, separation = ablation_rows(dirs)
    columns = [run_label(d, i) for i, d in enumerate(dirs)]
    if separation:
        print(f"test songs' separation: {separation}")

    def shown(metric, value, sign="+"):  # losses in thousandths, as 'seeds' prints them
        if not np.isfinite(value):
            return "-"
        return f"{value * 1e3:{sign}.4f}" if metric == "best val loss" else f"{value:{sign}.2f}"

    for metric in ABLATION_METRICS:
        name = f"{metric}{' (x1e-3)' if metric == 'best val loss' else ''}: {GAP[0]} - {GAP[1]}"
        print(f"\n{name}, per setting; change: minus nothing aligned, paired by seed")
        print(metrics.format_table(
            ["--align", *columns, "mean", "sd", "change", "change sd"],
            [[r["setting"], *(shown(metric, v) for v in r["values"]),
              shown(metric, r["mean"]), shown(metric, r["sd"], ""), shown(metric, r["change"]),
              shown(metric, r["change sd"], "")]
             for r in rows if r["metric"] == metric]))
    for line in missing:
        print(f"left out: {line}")
    if args.out:
        write_csv(args.out, ["metric", "setting", *columns, "mean", "sd", "change", "change sd"],
                  [[r["metric"], r["setting"], *map(float, r["values"]),
                    *(float(r[k]) for k in ("mean", "sd", "change", "change sd"))] for r in rows])
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from separation.cli import run_cli

    sys.exit(run_cli(check_main))

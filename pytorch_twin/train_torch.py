"""Train the PyTorch twin of the U-Net (pytorch_twin/unet_torch.py): the coursework's training loop, in plain PyTorch.

    python pytorch_twin/train_torch.py --cache cache/builtin --run-dir runs/builtin-torch --epochs 10 --steps-per-epoch 40 --batch-size 16 --learning-rate 1e-3
    python pytorch_twin/convert_weights.py torch2keras runs/builtin-torch/best.pt runs/builtin-torch/best.keras --params runs/builtin-torch/audio_params.json

The options are train.py's, and so is the recipe: Adam, the L1 or squared error of
``mask * mixture`` against the vocals, the learning rate halved after ``--lr-patience`` epochs
without an improvement of 1e-4 (down to 1e-7), early stopping after ``--patience`` epochs without
improvement, the best and the last model kept. The same command resumes a run that was
interrupted (killed at any moment: every file is written to a temporary file and renamed).

The data are train.py's too: :class:`data_generator.PatchSampler` is the NumPy half of
``data_generator.DataGenerator``, and its batch ``i`` of epoch ``e`` is drawn from ``(seed, e, i)``,
so epoch ``n`` here trains on the batches that Keras' ``fit`` draws for epoch ``n`` (it visits
them in a shuffled order, ``fit``'s ``shuffle=True``), and validation uses the same patches.

What is PyTorch's own, and left so on purpose (these are the differences that
``pytorch_twin/compare_frameworks.py train`` measures): the default initialisation (unless ``--init-from``),
Adam's epsilon (PyTorch 1e-8, Keras 1e-7), the running variance of batch norm (PyTorch keeps
the unbiased estimate, Keras the biased one), the random numbers of dropout, float arithmetic.
``--distribute`` and ``--jit-compile`` are Keras' and refused; the batches are read in the loop
(``--workers`` is ignored).

Alignment with Keras, one difference at a time (issue 26; all off by default, so the twin stays
the coursework's PyTorch): ``--keras-adam-epsilon`` (Keras' Adam update, see
:func:`set_keras_epsilon`), ``--keras-batchnorm`` (Keras' running variance,
``unet_torch.KerasBatchNorm2d``), ``--batch-order FILE`` (each epoch's batches in the order
listed, e.g. Keras' own: ``pytorch_twin/alignment.py``). Dropout is aligned by ``--dropout 0``,
its masks cannot be shared. ``pytorch_twin/compare_frameworks.py train --align`` sets them.

Run folder (``--run-dir``)::

    torch_config.json   the settings (train.py's TrainConfig); a rerun with other ones is refused
    alignment.json      the alignment switches, when one is on; a rerun with other ones is refused
    audio_params.json   the cache's audio parameters
    history.csv         as train.py's: epoch, learning_rate, loss, val_loss
    loss.png            the loss curves
    best.pt, last.pt    state_dicts (the keys of pytorch_twin/unet_torch.py) of the best and the last epoch
    checkpoint.pt       the resume point: model, optimizer, scheduler, early stopping, random state
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import train
from separation import runs
from separation.augment import make_augmentation
from separation.cache import open_cache
from separation.cli import run_cli
from separation.errors import UserError
from separation.files import atomic_output, atomic_write_text

CONFIG_FILE = "torch_config.json"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
CHECKPOINT_FILE = "checkpoint.pt"
ALIGNMENT_FILE = "alignment.json"
KERAS_EPSILON = 1e-7  # keras.optimizers.Adam's default epsilon (PyTorch's is 1e-8)
HISTORY_COLUMNS = ("epoch", "learning_rate", "loss", "val_loss")  # Keras' CSVLogger's (sorted) columns
MIN_DELTA = 1e-4  # what Keras' ReduceLROnPlateau counts as an improvement
MIN_LR = 1e-7


def get_parser():
    parser = train.get_parser()  # the same options, from train.TrainConfig
    parser.prog = "pytorch_twin/train_torch.py"
    parser.description = ("Train the PyTorch twin of the U-Net (pytorch_twin/unet_torch.py) with train.py's options and recipe. "
                          "Running the same command again resumes an interrupted run.")
    group = parser.add_argument_group(
        "alignment with Keras (issue 26; default: PyTorch's own behaviour, as in the coursework)")
    group.add_argument("--keras-adam-epsilon", action="store_true",
                       help="Adam's epsilon as Keras applies it: 1e-7 added to sqrt(v) before v's bias correction "
                            "(PyTorch: 1e-8, after it)")
    group.add_argument("--keras-batchnorm", action="store_true",
                       help="batch norm's running variance updated with the biased batch variance, as Keras does "
                            "(PyTorch: the unbiased one)")
    group.add_argument("--batch-order", metavar="FILE",
                       help="visit each epoch's batches in the order FILE lists (JSON {\"orders\": [[...], ...]}, one "
                            "list per epoch; compare_frameworks.py train --align order writes Keras' own); default: "
                            "0, 1, 2, ...")
    return parser


@dataclasses.dataclass(frozen=True)
class Alignment:
    """The switches that align one of the twin's differences from Keras' training (all off: PyTorch's)."""

    keras_adam_epsilon: bool = False
    keras_batchnorm: bool = False
    batch_order: tuple[tuple[int, ...], ...] | None = None  # one permutation of the batch indices per epoch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"batch_order": self.batch_order and [list(o) for o in self.batch_order]}


def read_batch_order(path, batches: int, epochs: int) -> tuple[tuple[int, ...], ...]:
    """``--batch-order FILE``: one permutation of ``range(batches)`` for each of ``epochs`` epochs
    (UserError naming what is wrong otherwise)."""
    try:
        orders = json.loads(Path(path).read_text())["orders"]
        orders = tuple(tuple(int(i) for i in order) for order in orders)
    except OSError as err:
        raise UserError(f"--batch-order {path}: cannot read ({err.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"--batch-order {path}: not a JSON object with \"orders\", lists of batch indices") from None
    if len(orders) < epochs:
        raise UserError(f"--batch-order {path}: lists {len(orders)} epochs, the run trains {epochs}")
    wrong = next((e for e, order in enumerate(orders) if sorted(order) != list(range(batches))), None)
    if wrong is not None:
        raise UserError(f"--batch-order {path}: epoch {wrong + 1}'s list is not an order of the {batches} batches "
                        f"0..{batches - 1}; make it for this run's --steps-per-epoch")
    return orders


def check_alignment(run_dir: Path, alignment: Alignment) -> None:
    """Write ``alignment.json`` in a new run with a switch on, or refuse a rerun whose switches
    differ. A run without the file has them all off: the folder of a default run is unchanged."""
    path = run_dir / ALIGNMENT_FILE
    wanted = alignment.to_dict()
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        saved = Alignment().to_dict() if (run_dir / CHECKPOINT_FILE).is_file() else None
    except (OSError, ValueError):
        raise UserError(f"{path}: unreadable; give a new --run-dir") from None
    if saved is None:  # nothing trained yet
        if alignment != Alignment():
            atomic_write_text(path, json.dumps(wanted) + "\n")
    elif saved != wanted:
        changed = ", ".join(k for k in wanted if saved.get(k) != wanted[k])
        raise UserError(f"--run-dir {run_dir}: trained with other alignment switches ({changed}); give a new "
                        "--run-dir or the original options")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    config = train.TrainConfig.from_args(args)
    if config.distribute != "none" or config.jit_compile:
        raise UserError("--distribute and --jit-compile are Keras' options; pytorch_twin/train_torch.py trains on one device")
    cache = open_cache(args.cache)
    train_tracks, val_tracks = train.split_tracks(cache, config.split, config.validation_split, config.seed,
                                                  config.validation_from)
    config = dataclasses.replace(config, train_tracks=tuple(train_tracks), validation_tracks=tuple(val_tracks))
    augmentation = make_augmentation(config, cache, train_tracks)
    size = 2 ** len(config.filters)
    if cache.params.n_bins % size or cache.params.patch_frames % size:
        raise UserError(f"--filters: {len(config.filters)} layers need patches divisible by {size}, the cache's "
                        f"are {cache.params.n_bins} x {cache.params.patch_frames}; use fewer filters")

    run_dir = Path(args.run_dir)
    precision, why = train.run_precision(config.precision, run_dir / CONFIG_FILE, auto_precision)
    config = dataclasses.replace(config, precision_used=precision)
    fresh = not (run_dir / CHECKPOINT_FILE).is_file()
    init_state = load_init_state(config.init_from) if config.init_from and fresh else None
    runs.prepare_run_dir(run_dir, config, cache.params, CONFIG_FILE, "pytorch_twin/train_torch.py")  # refuses a Keras run's folder

    from data_generator import PatchSampler

    loader = dict(batch_size=config.batch_size, seed=config.seed)
    train_data = PatchSampler(cache, train_tracks, mode="train", steps_per_epoch=config.steps_per_epoch,
                              augmentation=augmentation, **loader)
    val_data = None
    if val_tracks:
        val_data = PatchSampler(cache, val_tracks, mode="validation", steps_per_epoch=config.validation_steps,
                                **loader)
    order = read_batch_order(args.batch_order, len(train_data), config.epochs) if args.batch_order else None
    alignment = Alignment(args.keras_adam_epsilon, args.keras_batchnorm, order)
    check_alignment(run_dir, alignment)
    return fit(run_dir, config, train_data, val_data, init_state, why, alignment)


def fit(run_dir: Path, config, train_data, val_data, init_state: dict | None = None, why: str = "",
        alignment: Alignment = Alignment()) -> int:
    """The training loop: epochs of Adam steps, validation, the learning-rate schedule, early
    stopping and the files of the run folder (see the module docstring). ``config.precision_used``
    is the arithmetic: float32, or bfloat16 autocast (float32 weights, optimizer and loss);
    ``alignment`` the switches that make one difference from Keras' training Keras'."""
    import torch
    from torch import nn

    from pytorch_twin.unet_torch import UNet

    torch.manual_seed(config.seed)  # initial weights and dropout
    model = UNet(config.filters, kernel_size=config.kernel_size, dropout=config.dropout,
                 keras_batchnorm=alignment.keras_batchnorm)
    # bfloat16: autocast, in the original's channels-first layout (channels-last was slower on an
    # AVX512-BF16 CPU: benchmarks/RESULTS.md, "Mixed-precision training")
    bfloat16 = config.precision_used == "bfloat16"
    if init_state is not None:
        load_init_weights(model, init_state, config.init_from)
        print(f"starting from the weights of {config.init_from}")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # Keras' ReduceLROnPlateau: an improvement is a drop of more than MIN_DELTA, and it halves after
    # `lr_patience` epochs without one (PyTorch's scheduler waits one epoch more than its `patience`).
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=config.lr_patience - 1, threshold=MIN_DELTA,
        threshold_mode="abs", min_lr=MIN_LR)
    criterion = nn.L1Loss() if config.loss == "l1" else nn.MSELoss()
    best, bad_epochs = math.inf, 0

    checkpoint = load_checkpoint(run_dir)
    start = runs.resume_epoch(run_dir, checkpoint, config.epochs, BEST_FILE)  # epochs already trained
    if start is None:  # nothing left to do
        return 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"])
        best, bad_epochs = checkpoint["best"], checkpoint["bad_epochs"]
    n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                                 if not n.endswith("num_batches_tracked"))
    print(f"training {n_params:,} parameters on {len(config.train_tracks)} tracks "
          f"({len(config.validation_tracks)} for validation), in {config.precision_used}{why}")

    began = time.monotonic()
    for epoch in range(start, config.epochs):
        learning_rate = optimizer.param_groups[0]["lr"]
        train_data.epoch = epoch + 1  # Keras' fit advances the data once before its first epoch
        order = alignment.batch_order[epoch] if alignment.batch_order else None
        loss = train_epoch(model, train_data, optimizer, criterion, bfloat16, order, alignment.keras_adam_epsilon)
        val_loss = evaluate(model, val_data, criterion, bfloat16) if val_data is not None else math.nan
        if not (math.isfinite(loss) and (val_data is None or math.isfinite(val_loss))):
            raise UserError(
                f"{run_dir}: the loss became NaN or infinite in epoch {epoch + 1}; the checkpoints keep epoch "
                f"{epoch}. Check the cache for damaged data, or lower --learning-rate in a new --run-dir")
        monitored = val_loss if val_data is not None else loss
        scheduler.step(monitored)
        if monitored < best:  # Keras' EarlyStopping and best checkpoint: any decrease
            best, bad_epochs = monitored, 0
            save(model.state_dict(), run_dir / BEST_FILE)
        else:
            bad_epochs += 1
        save(model.state_dict(), run_dir / LAST_FILE)
        append_history(run_dir / runs.HISTORY_FILE, epoch, learning_rate, loss, val_loss)
        runs.plot_history(run_dir / runs.HISTORY_FILE, run_dir / runs.PLOT_FILE)
        stop = bad_epochs >= config.patience and epoch > 0
        save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "best": best,
              "bad_epochs": bad_epochs, "finished": "early stopping" if stop else None}, run_dir / CHECKPOINT_FILE)
        if config.verbose:
            print(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4g}, val_loss {val_loss:.4g}, "
                  f"learning rate {learning_rate:.3g}", flush=True)
        if stop:
            print(f"{run_dir}: stopped early after epoch {epoch + 1}; best model {run_dir / BEST_FILE}")
            return 0
        if config.max_minutes and time.monotonic() - began > config.max_minutes * 60 and epoch + 1 < config.epochs:
            print(f"{run_dir}: stopped at the time limit after epoch {epoch + 1}; run the same command to continue")
            return 0
    print(f"{run_dir}: finished after epoch {config.epochs}; best model {run_dir / BEST_FILE}")
    return 0


def train_epoch(model, data, optimizer, criterion, bfloat16: bool = False, order=None,
                keras_adam_epsilon: bool = False) -> float:
    """One epoch of Adam steps over ``data``'s batches, in ``order`` (default 0, 1, 2, ...); the
    mean training loss (per patch). ``bfloat16`` and ``keras_adam_epsilon``: see :func:`train_step`."""
    model.train()
    total, count = 0.0, 0
    for index in range(len(data)) if order is None else order:
        mixture, vocals = to_torch(data[index])
        total += train_step(model, optimizer, criterion, mixture, vocals, bfloat16, keras_adam_epsilon) * len(mixture)
        count += len(mixture)
    return total / count


def train_step(model, optimizer, criterion, mixture, vocals, bfloat16: bool = False,
               keras_adam_epsilon: bool = False) -> float:
    """One Adam step on a batch of ``(B, 1, bins, frames)`` tensors; the batch's loss before it.
    ``bfloat16``: the network runs under bfloat16 autocast, the loss in float32;
    ``keras_adam_epsilon``: the step is Keras' Adam update (:func:`set_keras_epsilon`)."""
    optimizer.zero_grad()
    with autocast(bfloat16):
        mask = model(mixture)
    loss = criterion(mask.float() * mixture, vocals)  # the mask applied to the mixture
    loss.backward()
    if keras_adam_epsilon:
        set_keras_epsilon(optimizer)
    optimizer.step()
    return loss.item()


def set_keras_epsilon(optimizer, epsilon: float = KERAS_EPSILON) -> None:
    """Make PyTorch Adam's next step Keras' (``keras.optimizers.Adam``, epsilon 1e-7).

    At step t, with bias corrections ``c1 = 1 - beta1**t`` and ``c2 = 1 - beta2**t``::

        PyTorch: w -= lr * (m / c1) / (sqrt(v / c2) + eps)
        Keras:   w -= lr * sqrt(c2) / c1 * m / (sqrt(v) + epsilon)
                    = lr * (m / c1) / (sqrt(v / c2) + epsilon / sqrt(c2))

    Keras adds its epsilon before v's bias correction ("epsilon hat" in Kingma and Ba), so its
    effective epsilon is ``epsilon / sqrt(c2)``: 32 times 1e-7 at the first step, 1e-7 after a
    few thousand. PyTorch's eps set to that before each step gives Keras' update.
    """
    for group in optimizer.param_groups:
        state = optimizer.state.get(group["params"][0], {})
        step = int(state.get("step", 0)) + 1  # the step about to be taken
        group["eps"] = epsilon / math.sqrt(1 - group["betas"][1] ** step)


def evaluate(model, data, criterion, bfloat16: bool = False) -> float:
    """The mean loss over ``data``'s batches in inference mode (running batch norm, no dropout)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for index in range(len(data)):
            mixture, vocals = to_torch(data[index])
            with autocast(bfloat16):
                mask = model(mixture)
            total += criterion(mask.float() * mixture, vocals).item() * len(mixture)
            count += len(mixture)
    return total / count


def autocast(bfloat16: bool):
    """PyTorch's bfloat16 autocast on the CPU when ``bfloat16``, else nothing."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16)


def auto_precision() -> tuple[str, str]:
    """``--precision auto`` for the twin: bfloat16 where this CPU has bfloat16 instructions for
    oneDNN (AVX512-BF16 or AMX), else float32; and why."""
    import torch

    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bfloat16", "this CPU has bfloat16 instructions"
    return "float32", "no bfloat16 instructions on this CPU"


def to_torch(batch):
    """A batch ``(mixture, vocals)`` of ``(B, bins, frames, 1)`` arrays as ``(B, 1, bins, frames)`` tensors."""
    import torch

    return tuple(torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in batch)


def save(obj, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename (a kill leaves the previous file)."""
    import torch

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def append_history(path: Path, epoch: int, learning_rate: float, loss: float, val_loss: float) -> None:
    """One row of history.csv, with the header of Keras' CSVLogger on a new file (a row cut by
    a kill is dropped by runs.truncate_history when the run resumes); without validation
    there is no val_loss column, as in Keras'."""
    values = [str(epoch), repr(learning_rate), repr(loss)] + ([] if math.isnan(val_loss) else [repr(val_loss)])
    header = ",".join(HISTORY_COLUMNS[:len(values)]) + "\n" if not path.is_file() else ""
    with open(path, "a") as f:
        f.write(header + ",".join(values) + "\n")


def load_init_state(path) -> dict:
    """``--init-from``: the state_dict of a ``.pt`` checkpoint, or of a Keras model (converted)."""
    from pytorch_twin import convert_weights

    if Path(path).suffix in (".pt", ".pth"):
        return convert_weights.load_torch_checkpoint(path)
    import unet_model

    model, _ = unet_model.load_model(unet_model.model_file(path))
    return convert_weights.keras_to_torch(model).state_dict()


def load_init_weights(model, state: dict, source) -> None:
    """Load ``--init-from``'s state_dict into ``model`` (``num_batches_tracked`` optional), or
    refuse it in one line when its keys or shapes are not this run's U-Net's."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)  # shapes are still checked
    except RuntimeError as err:  # "Error(s) in loading state_dict ...:" then one line per mismatch
        missing, unexpected = [line.strip() for line in str(err).splitlines()[1:] if line.strip()], []
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise UserError(f"--init-from {source}: does not fit this run's U-Net ({'; '.join(missing + unexpected)[:300]}); "
                        "give the --filters and --kernel-size it was trained with")


def load_checkpoint(run_dir: Path) -> dict | None:
    """The resume point (checkpoint.pt), or None before the first epoch."""
    import torch

    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(f"{path}: damaged resume point ({err}); give a new --run-dir") from None


if __name__ == "__main__":
    sys.exit(run_cli(main))

"""Would a softer or harder mask pass the voice of produced music better? The mask raised to a power.

    python benchmarks/mask_power_probe.py --model pretrained/unet_mir1k.keras

On the real song the shipped model's vocals are too quiet (`level_probe.py`: RMS 0.048 against
0.063) at a good SIR, as if its mask were too low on the voice. This probe computes each song's
mask once, applies ``mask ** p`` for several powers at the model's rate (mono 8192 Hz, the
accompaniment being the rest) and gives BSS Eval v3 vocal GNSDR (mir_eval, vocals and
accompaniment scored together, weighted by length) on stempeg's sample and the development sets
of issue 18 (``data/produced-dev-low``, ``data/produced-dev``: ``python -m separation.production devset``). p < 1
passes more of every bin, p > 1 less; p = 1 is inference.py.
"""

from __future__ import annotations

import numpy as np

from benchlib import load_average, print_table
from separation import cli  # noqa: E402  (benchlib puts the project on sys.path)


def songs(name: str):
    """``(references at 8192 Hz mono, seconds)`` of each song of a set: "stempeg" or a stems folder."""
    from separation import datasets
    from separation.audio import DEFAULT_PARAMS as PARAMS, resample, to_mono

    if name == "stempeg":
        import stempeg

        stems, rate = stempeg.read_stems(stempeg.example_stem_path())  # mixture, drums, bass, other, vocals
        found = [{"mixture": stems[0], "vocals": stems[4], "accompaniment": stems[1:4].sum(axis=0)}]
        rates = [rate]
    else:
        tracks = datasets.find_tracks("stems", name, "test")
        loaded = [t.load() for t in tracks]
        found, rates = [refs for refs, _ in loaded], [rate for _, rate in loaded]
    for refs, rate in zip(found, rates):
        yield {k: resample(to_mono(np.asarray(v, np.float32)), rate, PARAMS.sample_rate)[:, 0] for k, v in refs.items()}


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained/unet_mir1k.keras", help="a .keras model or run folder")
    parser.add_argument("--powers", type=float, nargs="+", default=[0.5, 0.7, 0.85, 1.0, 1.25, 1.5])
    parser.add_argument("--sets", nargs="+", default=["stempeg", "data/produced-dev-low", "data/produced-dev"],
                        help="'stempeg' or stems folders with a test/ split")
    args = parser.parse_args(argv)

    from separation import metrics
    import inference
    from separation.audio import DEFAULT_PARAMS as PARAMS, magnitude

    separator = inference.Separator(args.model, precision="float32")
    settings = metrics.Settings(families=("v3",))
    rows = []
    for name in args.sets:
        nsdr, seconds = {p: [] for p in args.powers}, []
        for refs in songs(name):
            mixture = refs["mixture"]
            mask = separator.mask(magnitude(mixture, PARAMS))
            methods = {}
            for p in args.powers:
                vocals = separator.apply_mask(mixture[:, None], PARAMS.sample_rate, mask**p)[:, 0]
                methods[str(p)] = {"vocals": vocals, "accompaniment": mixture - vocals}
            scores = metrics.score_methods(refs, methods, PARAMS.sample_rate, settings)
            for p in args.powers:
                nsdr[p].append(scores[str(p)]["v3_vocals_NSDR"])
            seconds.append(len(mixture) / PARAMS.sample_rate)
        rows.append([name, len(seconds), *(float(np.average(nsdr[p], weights=seconds)) for p in args.powers)])
    print_table("The mask raised to a power", f"{args.model}; vocal GNSDR (v3, mono 8192 Hz); load {load_average():.1f}",
                ["set", "songs", *(f"p = {p:g}" for p in args.powers)], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

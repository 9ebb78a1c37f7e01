"""Does a model miss the real song's voice because of its level? The song remixed with a louder voice.

    python benchmarks/level_probe.py --model pretrained/unet_mir1k.keras --model runs/ft-r2-fx/last.keras

stempeg's MUSDB sample (its voice 7.2 dB under the accompaniment) is downmixed to mono at the
model's rate (8192 Hz), and remixed with the vocal stem raised by 0, +6 and +12 dB. Each model
separates each remix; the table gives BSS Eval v3 vocal SDR and SIR (mir_eval, vocals and
accompaniment scored together) and the RMS of the estimated and reference vocals. A model that
learned "a quiet voice is accompaniment" passes almost nothing at 0 dB and recovers as the voice
gets louder.
"""

from __future__ import annotations

import numpy as np

from benchlib import load_average, print_table
from separation import cli  # noqa: E402  (benchlib puts the project on sys.path)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a .keras model or run folder (repeat)")
    parser.add_argument("--gains", type=float, nargs="+", default=[0.0, 6.0, 12.0], help="voice gains, dB")
    args = parser.parse_args(argv)

    import mir_eval
    import stempeg

    import inference
    from separation.audio import DEFAULT_PARAMS as PARAMS, resample

    stems, rate = stempeg.read_stems(stempeg.example_stem_path())  # MUSDB order: mixture, drums, bass, other, vocals
    vocals = resample(stems[4].mean(axis=1, keepdims=True), rate, PARAMS.sample_rate)[:, 0]
    accompaniment = resample(stems[1:4].sum(axis=0).mean(axis=1, keepdims=True), rate, PARAMS.sample_rate)[:, 0]
    level = 10 * np.log10(np.mean(vocals**2) / np.mean(accompaniment**2))
    rows = []
    for model in args.model:
        separator = inference.Separator(model, precision="float32")
        for gain_db in args.gains:
            voice = vocals * 10 ** (gain_db / 20)
            mixture = voice + accompaniment
            estimate = separator.separate(mixture[:, None], PARAMS.sample_rate)["vocals"][:, 0]
            references = np.stack([voice, accompaniment])
            estimates = np.stack([estimate, mixture - estimate])
            sdr, sir, _, _ = mir_eval.separation.bss_eval_sources(references, estimates, compute_permutation=False)
            rows.append([model, f"{level + gain_db:+.1f}", float(sdr[0]), float(sir[0]),
                         float(np.sqrt(np.mean(estimate**2))), float(np.sqrt(np.mean(voice**2)))])
    print_table("The real song with a louder voice", f"stempeg sample, mono 8192 Hz; load {load_average():.1f}",
                ["model", "voice level (dB vs accompaniment)", "vocal SDR", "vocal SIR", "estimate RMS", "reference RMS"],
                rows, digits=3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``pytorch_twin/compare_frameworks.py seeds``: several seeds' comparison tables gathered into one (no
PyTorch needed: it reads the comparison.csv files that ``pytorch_twin/compare_frameworks.py train`` wrote)."""

import csv
import math

import numpy as np
import pytest

from pytorch_twin import compare_frameworks, compare_training
from separation.errors import UserError

LABELS = [t.label for t in compare_training.TRAININGS]


def write_comparison(run_dir, losses, gnsdr):
    """A comparison.csv as compare_training.write_table writes it, one row per framework."""
    run_dir.mkdir(parents=True)
    rows = [{"training": label, "final val loss": loss * 1.1, "best val loss": loss, "epochs": 8, "wall s": 100.0,
             "patches/s": 10.0, "voc GNSDR": g, "voc GSDR": g + 3} for label, loss, g in zip(LABELS, losses, gnsdr)]
    compare_training.write_table(run_dir / compare_training.TABLE_FILE, rows)
    return run_dir


def test_spread_between_seeds_and_differences_paired_by_seed(tmp_path, capsys):
    """Framework rows give each seed's value, the mean and the sample sd; difference rows subtract
    one framework from another seed by seed, so a constant offset has sd 0 even where the seeds
    spread."""
    gnsdr = {0: [4.0, 4.5, 3.0], 1: [5.0, 5.5, 4.2], 2: [6.0, 6.5, 5.1]}
    dirs = [write_comparison(tmp_path / f"seed{s}", [0.003 + s * 1e-4] * 3, gnsdr[s]) for s in range(3)]
    (dirs[1] / "keras-tensorflow").mkdir()
    (dirs[1] / "keras-tensorflow" / "config.json").write_text('{"seed": 7}')  # train.py's record of the seed
    out_csv = tmp_path / "seeds.csv"
    assert compare_frameworks.main(["seeds", *map(str, dirs), "--out", str(out_csv)]) == 0
    out = capsys.readouterr().out
    rows = {(r["metric"], r["what"]): r for r in csv.DictReader(open(out_csv))}
    tf = rows[("voc GNSDR", "Keras/TensorFlow")]
    assert [float(tf[str(d)]) for d in dirs] == [4.0, 5.0, 6.0]
    assert float(tf["mean"]) == pytest.approx(5.0) and float(tf["sd"]) == pytest.approx(1.0)
    torch_diff = rows[("voc GNSDR", "Keras/PyTorch - Keras/TensorFlow")]
    assert float(torch_diff["mean"]) == pytest.approx(0.5) and float(torch_diff["sd"]) == pytest.approx(0.0, abs=1e-9)
    twin_diff = rows[("voc GNSDR", "PyTorch twin - Keras/TensorFlow")]
    assert [float(twin_diff[str(d)]) for d in dirs] == pytest.approx([-1.0, -0.8, -0.9])
    assert float(twin_diff["sd"]) == pytest.approx(np.std([-1.0, -0.8, -0.9], ddof=1))
    pair = rows[("voc GNSDR", "PyTorch twin - Keras/PyTorch")]  # every pair, not only against TensorFlow
    assert [float(pair[str(d)]) for d in dirs] == pytest.approx([-1.5, -1.3, -1.4])
    loss = rows[("best val loss", "Keras/TensorFlow")]
    assert float(loss["sd"]) == pytest.approx(1e-4)
    assert "PyTorch twin - Keras/TensorFlow" in out and "-0.90" in out  # the printed table
    assert "run 1" in out and "seed 7" in out and "run 3" in out  # columns named by seed where recorded
    assert "3.1000" in out  # losses printed in thousandths


def test_one_run_has_no_spread_and_bad_folders_are_one_line_errors(tmp_path, capsys):
    one = write_comparison(tmp_path / "one", [0.003] * 3, [4.0, 4.1, 4.2])
    assert compare_frameworks.main(["seeds", str(one)]) == 0
    assert "4.10" in capsys.readouterr().out
    assert math.isnan(compare_training.seed_tables([compare_training.read_comparison(one)])[0]["sd"])

    with pytest.raises(UserError, match="cannot read.*pytorch_twin/compare_frameworks.py train"):
        compare_frameworks.main(["seeds", str(one), str(tmp_path / "missing")])
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / compare_training.TABLE_FILE).write_text(
        "training,final val loss,best val loss,epochs,wall s,patches/s,voc GNSDR,voc GSDR\n"
        "Keras/TensorFlow,0.1,0.1,2,1,1,3,4\n")
    with pytest.raises(UserError, match="no row for Keras/PyTorch, PyTorch twin"):
        compare_frameworks.main(["seeds", str(partial)])
    (partial / compare_training.TABLE_FILE).write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a comparison table"):
        compare_frameworks.main(["seeds", str(partial)])


def test_ablation_gap_per_setting_and_its_change_paired_by_seed(tmp_path, capsys):
    """``ablation``: per --align setting found in every folder, the twin - Keras/PyTorch gap seed by
    seed and its change from nothing aligned (paired: a constant shift has sd 0); a setting some
    folders lack is left out and named."""
    from pytorch_twin import alignment

    # (Keras/TensorFlow, Keras/PyTorch, twin) GNSDR per seed; the gap twin - Keras/PyTorch is -0.3, -0.2, -0.4
    base = {0: [5.0, 5.7, 5.4], 1: [5.1, 5.6, 5.4], 2: [5.7, 5.8, 5.4]}
    dirs = []
    for seed, (tf, kt, twin) in base.items():
        run_dir = write_comparison(tmp_path / f"seed{seed}", [0.003] * 3, [tf, kt, twin])
        for factors, shift in ((("adam",), 0.3), (alignment.FACTORS, 0.25)):  # aligned: the gap shrinks by shift
            losses = [0.003, 0.0031, 0.0030 + 0.0001 * seed]
            rows = [{"training": label, "final val loss": loss, "best val loss": loss, "epochs": 8, "wall s": 1.0,
                     "patches/s": 1.0, "voc GNSDR": g, "voc GSDR": g}
                    for label, loss, g in zip(LABELS, losses, [tf, kt, twin + shift])]
            compare_training.write_table(run_dir / compare_training.table_file(factors), rows)
        dirs.append(run_dir)
    compare_training.write_table(dirs[0] / compare_training.table_file(("order",)),
                                 list(csv.DictReader(open(dirs[0] / compare_training.TABLE_FILE))))

    out_csv = tmp_path / "ablation.csv"
    assert compare_frameworks.main(["ablation", *map(str, dirs), "--out", str(out_csv)]) == 0
    out = capsys.readouterr().out
    rows = {(r["metric"], r["setting"]): r for r in csv.DictReader(open(out_csv))}
    assert [s for m, s in rows if m == "voc GNSDR"] == ["nothing aligned", "adam", "all"]  # order: none, single, all
    none = rows[("voc GNSDR", "nothing aligned")]
    assert [float(none[c]) for c in ("run 1", "run 2", "run 3")] == pytest.approx([-0.3, -0.2, -0.4])
    assert float(none["mean"]) == pytest.approx(-0.3) and float(none["sd"]) == pytest.approx(0.1)
    assert float(none["change"]) == pytest.approx(0.0)
    adam = rows[("voc GNSDR", "adam")]
    assert float(adam["mean"]) == pytest.approx(0.0, abs=1e-9)
    assert float(adam["change"]) == pytest.approx(0.3) and float(adam["change sd"]) == pytest.approx(0.0, abs=1e-9)
    assert float(rows[("voc GNSDR", "all")]["change"]) == pytest.approx(0.25)
    loss = rows[("best val loss", "all")]  # twin - Keras/PyTorch loss: -0.1e-3, 0, +0.1e-3
    assert float(loss["mean"]) == pytest.approx(0.0, abs=1e-12) and float(loss["sd"]) == pytest.approx(1e-4)
    assert f"left out: order (missing in {dirs[1]}, {dirs[2]})" in out  # seed 0 alone has it
    assert "+0.30" in out and "-0.30" in out  # the printed table, signed


def test_ablation_without_a_common_setting_is_a_one_line_error(tmp_path):
    one = write_comparison(tmp_path / "one", [0.003] * 3, [4.0, 4.1, 4.2])
    other = tmp_path / "other"
    other.mkdir()
    compare_training.write_table(other / compare_training.table_file(("adam",)),
                                 list(csv.DictReader(open(one / compare_training.TABLE_FILE))))
    with pytest.raises(UserError, match="no --align setting has a comparison table in all of"):
        compare_frameworks.main(["ablation", str(one), str(other)])
    with pytest.raises(UserError, match="missing: no such folder"):
        compare_frameworks.main(["ablation", str(one), str(tmp_path / "missing")])


def test_tables_scored_with_and_without_the_second_mask_are_not_compared(tmp_path, capsys):
    dirs = [write_comparison(tmp_path / f"seed{s}", [0.003] * 3, [4.0, 4.1, 4.2]) for s in range(2)]
    for run_dir, separation in zip(dirs, ["refined 4096", "first mask"]):
        rows = list(csv.DictReader(open(run_dir / compare_training.TABLE_FILE)))
        compare_training.write_table(run_dir / compare_training.TABLE_FILE, [{**r, "separation": separation} for r in rows])
    for command in ("seeds", "ablation"):
        with pytest.raises(UserError, match="different separations.*refined 4096 in .*seed0.*first mask in .*seed1"):
            compare_frameworks.main([command, *map(str, dirs)])
    assert compare_frameworks.main(["seeds", str(dirs[1])]) == 0
    assert "test songs' separation: first mask" in capsys.readouterr().out

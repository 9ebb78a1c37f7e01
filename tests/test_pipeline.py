"""The whole coursework in one command (pipeline.py), in miniature."""

import csv

import pytest

import pipeline
from separation.errors import UserError
from helpers import TINY_PIPELINE


@pytest.mark.slow
def test_pipeline_writes_every_step_and_the_unet_row(tiny_pipeline):
    names = {p.name for p in (tiny_pipeline / "data" / "builtin" / "test").iterdir()}
    assert names == {"test000"}
    assert (tiny_pipeline / "cache" / "builtin" / "index.json").is_file()
    assert (tiny_pipeline / "runs" / "builtin" / "best.keras").is_file()
    for stem in ("vocals", "accompaniment"):
        assert (tiny_pipeline / "separated" / "builtin" / "test000" / f"{stem}.wav").is_file()
    with open(tiny_pipeline / "results" / "builtin" / "per_track.csv") as f:
        methods = [row["method"] for row in csv.DictReader(f)]
    assert methods == ["unet", "mixture", "irm", "ibm", "hpss", "nmf"]
    page = (tiny_pipeline / "results" / "builtin" / "report.html").read_text()
    assert page.count("<audio controls") == 3 and "<h3>test000</h3>" in page  # mixture, reference, unet
    assert (tiny_pipeline / "results" / "builtin" / "museval" / "unet" / "test" / "test000.json").is_file()


@pytest.mark.slow
def test_pipeline_prints_the_script_calls_and_reruns_cheaply(tiny_pipeline, capsys):
    """Running again skips the data, the cache and the finished training; it prints each step's command."""
    capsys.readouterr()
    assert pipeline.main(TINY_PIPELINE + ["--work", str(tiny_pipeline)]) == 0
    out = capsys.readouterr().out
    for command in ("$ python data_generator.py synthesize", "$ python data_generator.py prepare",
                    "$ python train.py", "$ python inference.py", "$ python evaluate.py"):
        assert command in out
    assert "0 already there" not in out and "already there" in out  # the cache was reused
    assert "Epoch 1/" not in out  # the finished run was not trained again
    assert "GNSDR" in out and "BSS Eval v4" in out
    assert "len-weighted" not in out  # the per-metric statistics stay in summary.csv


@pytest.mark.slow
def test_pipeline_refuses_a_changed_configuration_of_the_same_run(tiny_pipeline, capsys):
    argv = TINY_PIPELINE + ["--work", str(tiny_pipeline)]
    argv[argv.index("--batch-size") + 1] = "3"
    with pytest.raises(UserError, match="batch_size"):
        pipeline.main(argv)

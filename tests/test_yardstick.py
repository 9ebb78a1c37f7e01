"""benchmarks/yardstick.py's 45-song column (issue 25): the aggregation of evaluate.py's output,
the one-line error for a missing --musdb7 folder, and --parts choosing what is measured. No test
separates or scores the 45 songs."""

import math
import statistics
import sys
from pathlib import Path

import pytest

import evaluate
from separation import metrics

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import yardstick  # noqa: E402


def frames(*sdr):
    """museval's frames of one track (what metrics.score_prepared keeps under "v4_frames")."""
    values = {m: list(sdr) for m in metrics.METRICS["v4"]}
    return {"vocals": values, "accompaniment": {m: [5.0] * len(sdr) for m in metrics.METRICS["v4"]}}


def row(track, v4_frames=None, status="ok"):
    """A per_track.csv row as evaluate.py makes it: the vocal SDR is the median of the finite frames."""
    finite = [v for v in (v4_frames or {}).get("vocals", {}).get("SDR", []) if math.isfinite(v)]
    sdr = statistics.median(finite) if finite else math.nan
    out = {"track": track, "method": "model", "seconds": 7.0, "status": status, "notes": "",
           **{c: math.nan for c in metrics.metric_columns(("v4",))}, "v4_vocals_SDR": sdr}
    if v4_frames:
        out["v4_frames"] = v4_frames
    return out


def fake_evaluate_output(folder: Path, rows: list[dict]) -> Path:
    """per_track.csv and museval's JSON, written by evaluate.py's own writers."""
    folder.mkdir(parents=True, exist_ok=True)
    evaluate.write_csv(folder / "per_track.csv", rows, list(evaluate.ROW_FIELDS) + metrics.metric_columns(("v4",)))
    evaluate.write_museval_json(rows, folder / "museval", "test", metrics.Settings(sr=None, stereo=True))
    return folder


def test_voice_summary_median_mean_and_silent_tracks(tmp_path, capsys):
    nan = math.nan
    out = fake_evaluate_output(tmp_path / "musdb7-v4", [
        row("a", frames(1.0, 1.0, 1.0)),
        row("b", frames(nan, 2.0, 2.5, 1.5)),  # a silent second: scored on the other three (median 2.0)
        row("c", frames(nan, nan, nan)),  # no frame scored: left out, counted
        row("d", status="silent reference vocals: not scored"),  # evaluate.py's silent track: the same
        row("e", frames(9.0, 10.0, 11.0)),
    ])
    summary = yardstick.voice_summary(out, expected=5)
    assert summary == yardstick.VoiceSummary(median=2.0, mean=13.0 / 3, scored=3, all_silent=2, some_silent=1)
    assert summary.cells()[2] == "2 / 1"
    assert capsys.readouterr().err == ""
    yardstick.voice_summary(out, expected=45)
    assert "5 tracks, expected 45" in capsys.readouterr().err


def test_voice_summary_refuses_an_output_without_scores(tmp_path):
    out = fake_evaluate_output(tmp_path / "musdb7-v4", [row("c", frames(math.nan, math.nan))])
    with pytest.raises(SystemExit, match="no track of model has a v4 vocal SDR"):
        yardstick.voice_summary(out, expected=1)


def test_cells():
    assert [yardstick.cell(v) for v in (1.776, math.nan, "0 / 2")] == ["1.78", "", "0 / 2"]


@pytest.mark.parametrize("make", ["missing", "no-test-split"])
def test_missing_musdb7_folder_is_one_line_naming_the_option(tmp_path, make, monkeypatch):
    root = tmp_path / "musdb18-7"
    if make == "no-test-split":
        (root / "train" / "song").mkdir(parents=True)  # the other splits do not count
    monkeypatch.setattr(yardstick, "separate", lambda *a: pytest.fail("no work before the check"))
    model = tmp_path / "model.keras"
    model.touch()
    with pytest.raises(SystemExit) as err:
        yardstick.main(["--model", str(model), "--musdb7", str(root), "--parts", "musdb7,stempeg", "--work", str(tmp_path)])
    message = str(err.value.code)
    assert message.startswith(f"error: --musdb7 {root}: ") and "\n" not in message
    assert ("no such folder" if make == "missing" else "no tracks in its test/ folder") in message


def test_parts_choose_the_columns(tmp_path, monkeypatch, capsys):
    """musdb7 is the first column group and in the default set; --parts measures only what it names."""
    assert yardstick.get_parser().parse_args(["--model", "m"]).parts.split(",")[0] == "musdb7"
    called = []
    fake = {"musdb7": [1.78, 1.77, "0 / 3"], "stempeg": [1.0, 2.0], "dev": [3.0, 4.0], "dev-low": [5.0], "mir1k": [6.0]}

    def stub(part):
        def scores(work, args):
            called.append(part)
            return fake[part]
        return scores

    for part, function in (("musdb7", "musdb7_scores"), ("stempeg", "stempeg_scores"), ("dev", "devset_scores"),
                           ("dev-low", "devset_low_scores"), ("mir1k", "mir1k_scores")):
        monkeypatch.setattr(yardstick, function, stub(part))
    (tmp_path / "musdb18-7" / "test" / "song").mkdir(parents=True)
    model = tmp_path / "model.keras"
    model.touch()
    common = ["--model", str(model), "--musdb7", str(tmp_path / "musdb18-7"), "--work", str(tmp_path / "work")]

    assert yardstick.main(common + ["--parts", "musdb7", "--label", "shipped", "--header"]) == 0
    header, rule, line = capsys.readouterr().out.splitlines()
    assert called == ["musdb7"]
    assert header.split(" | ")[1].startswith("MUSDB18-7 test v4 SDR median")
    assert line == "| shipped | 1.78 | 1.77 | 0 / 3 |  |  |  |  |  |  |"
    assert line.count("|") == header.count("|")

    called.clear()
    assert yardstick.main(common + ["--parts", "mir1k,stempeg", "--label", "x"]) == 0
    assert called == ["stempeg", "mir1k"]  # in the table's order
    assert capsys.readouterr().out.strip() == "| x |  |  |  | 1.00 | 2.00 |  |  |  | 6.00 |"

    called.clear()
    assert yardstick.main(common + ["--label", "all", "--skip-mir1k"]) == 0
    assert called == ["musdb7", "stempeg", "dev", "dev-low"]


def test_the_shared_previews_test_split():
    """The default --musdb7 is the shared copy beside the checkout, whose test split holds the 45 songs."""
    if not yardstick.MUSDB7_DEFAULT.is_dir():
        pytest.skip(f"MUSDB18's 7-second previews not found at {yardstick.MUSDB7_DEFAULT}")
    tracks, n = yardstick.musdb7_tracks(yardstick.MUSDB7_DEFAULT)
    assert tracks == yardstick.MUSDB7_DEFAULT / "test" and n == 45

"""Tests of cli.py: the one-line error and the argparse bounds."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from separation import cli
from separation.errors import UserError


def test_run_cli_turns_user_errors_into_one_line(capsys):
    def main(argv):
        raise UserError(f"{argv[0]}: broken")

    assert cli.run_cli(main, ["song.wav"]) == 2
    err = capsys.readouterr().err
    assert err == "error: song.wav: broken\n"
    assert cli.run_cli(lambda argv: 0, []) == 0


def test_bounded_types_refuse_values_outside_their_range_in_one_line(capsys):
    parser = cli.ArgumentParser(prog="x")
    parser.add_argument("--overlap", type=cli.bounded(float, 0, 1, high_open=True))
    parser.add_argument("--steps", type=cli.bounded(int, 1))
    assert parser.parse_args(["--overlap", "0", "--steps", "3"]) == argparse.Namespace(overlap=0.0, steps=3)
    for argv, words in ((["--overlap", "1"], "[0, 1)"), (["--overlap", "nan"], "not a finite number"),
                        (["--steps", "0"], "[1, inf]"), (["--steps", "2.5"], "not an integer")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: argument ") and "x --help" in err
        assert argv[0] in err and words in err


@pytest.fixture()
def clean_import_state(monkeypatch):
    """quiet_tensorflow changes the environment and the import hooks: restored after the test."""
    monkeypatch.setattr(sys, "meta_path", [finder for finder in sys.meta_path if not isinstance(finder, cli._QuietImport)])
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


def quiet() -> bool:
    return any(isinstance(finder, cli._QuietImport) for finder in sys.meta_path)


def test_every_parser_has_verbose_and_hides_tensorflows_log_without_it(clean_import_state):
    parser = cli.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run")
    assert parser.parse_args(["run", "--verbose"]).verbose is True and not quiet()
    assert parser.parse_args(["--verbose", "run"]).verbose is True and not quiet()
    assert not hasattr(parser.parse_args(["run"]), "verbose") and quiet()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_a_scripts_own_verbose_option_is_kept(clean_import_state):
    parser = cli.ArgumentParser(prog="train")
    parser.add_argument("--verbose", type=int, default=2, help="Keras' progress output")
    assert parser.parse_args([]).verbose == 2 and quiet()  # not the flag: TensorFlow's log stays hidden


QUIET_IMPORT = """
import sys
sys.path.insert(0, sys.argv[1])
from separation import cli
cli.ArgumentParser().parse_args(sys.argv[2:])
import tensorflow
print("imported")
"""


@pytest.mark.slow
def test_tensorflows_start_up_log_shows_with_verbose():
    """TensorFlow's C++ libraries print a start-up log while they load (absl's, before any level
    applies: the oneDNN notice on x86): --verbose shows it. That the command lines hide it
    otherwise is tested on inference.py as a process (test_inference_outputs.py)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", QUIET_IMPORT, str(Path(cli.__file__).parent), "--verbose"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout == "imported\n", proc.stderr[-2000:]
    assert "absl::InitializeLog" in proc.stderr

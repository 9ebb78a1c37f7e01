"""Tests of cli.py: the one-line error and the argparse bounds."""

import argparse

import pytest

import cli
from cli import UserError


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

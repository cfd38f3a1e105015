import subprocess
import sys

import pytest

from mrhd import __version__
from mrhd.cli import COMMANDS, build_parser, main


def test_help_lists_the_six_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("extract", "predict", "train", "eval", "weights", "features"):
        assert name in out
    assert set(COMMANDS) == {"extract", "predict", "train", "eval", "weights", "features"}


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mrhd {__version__}"


@pytest.mark.parametrize("argv, flags", [
    (["extract", "v.mp4", "--out", "o"], ["encoders", "queries", "device", "batch_size", "num_workers",
                                          "shard", "overwrite", "random_weights"]),
    (["predict", "v.mp4", "a query"], ["model", "weights", "device", "out", "plot", "top_k"]),
    (["train", "--model", "m", "--features", "f", "--train", "t", "--val", "v", "--out", "o"],
     ["profile", "epochs", "batch_size", "lr", "device", "seed", "resume"]),
    (["eval", "--submission", "s", "--gt", "g"], ["out", "dataset", "strict"]),
])
def test_design_flags_exist(argv, flags):
    args = build_parser().parse_args(argv)
    for flag in flags:
        assert hasattr(args, flag), flag


def test_weights_actions():
    parser = build_parser()
    assert parser.parse_args(["weights", "list"]).action == "list"
    assert parser.parse_args(["weights", "download", "x"]).id == "x"
    a = parser.parse_args(["weights", "convert", "a", "b", "--model", "qd_detr"])
    assert (a.src, a.dst, a.model) == ("a", "b", "qd_detr")
    assert parser.parse_args(["weights", "info", "p"]).path == "p"


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "mrhd", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "predict" in res.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out

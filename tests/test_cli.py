import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrhd import __version__
from mrhd.cli import COMMANDS, DEMO_QUERY, DEMO_VIDEO, build_parser, demo_argv, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_six_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("extract", "predict", "serve", "train", "eval", "weights", "features"):
        assert name in out
    assert set(COMMANDS) == {"extract", "predict", "serve", "train", "eval", "weights", "features"}


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
    (["serve"], ["model", "weights", "host", "port", "device", "videos", "max_duration", "max_upload_mb"]),
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


# ./run.sh demo ARGS -> the `mrhd predict` arguments it runs
DEMO_ARGS = [
    ([], ["predict", DEMO_VIDEO, DEMO_QUERY]),
    (["--weights", "random"], ["predict", DEMO_VIDEO, DEMO_QUERY, "--weights", "random"]),
    (["--weights=random", "--no-cache"], ["predict", DEMO_VIDEO, DEMO_QUERY, "--weights=random", "--no-cache"]),
    (["v.mp4"], ["predict", "v.mp4", DEMO_QUERY]),
    (["v.mp4", "a dog", "a cat", "--top-k", "3"], ["predict", "v.mp4", "a dog", "a cat", "--top-k", "3"]),
    (["--weights", "random", "v.mp4", "a dog"], ["predict", "v.mp4", "a dog", "--weights", "random"]),
    (["--no-cache", "v.mp4", "--gt", "2-6", "a dog"], ["predict", "v.mp4", "a dog", "--no-cache", "--gt", "2-6"]),
]


@pytest.mark.parametrize("args, expected", DEMO_ARGS, ids=[" ".join(a) or "none" for a, _ in DEMO_ARGS])
def test_demo_takes_flags_first_and_video_and_query_optional(args, expected):
    assert demo_argv(args) == expected
    build_parser().parse_args(expected)   # predict accepts what the demo passes on


def test_run_sh_demo_goes_through_the_demo_function():
    """run.sh passes every argument to mrhd.cli.demo (no positional guessing in bash)."""
    text = (ROOT / "run.sh").read_text()
    assert "from mrhd.cli import demo" in text and '"$@"' in text


def _commands(parser=None, name="mrhd"):
    """(command name, parser) of every command and sub-action."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def _options():
    for name, parser in _commands():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                yield pytest.param(name, action, id=f"{name} {'/'.join(action.option_strings) or action.dest}")


@pytest.mark.parametrize("command, action", list(_options()))
def test_every_option_has_help_with_its_default_and_choices(command, action):
    assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest} has no help"
    if action.default not in (None, False, [], argparse.SUPPRESS) and not action.required:
        assert "default" in action.help and str(action.default) in action.help, action.help
    for choice in action.choices or ():
        assert str(choice) in action.help, f"{choice} missing from: {action.help}"


@pytest.mark.parametrize("command", ["predict", "train"])
def test_model_and_profile_helps_list_their_choices(command):
    from mrhd.features.profiles import available_profiles
    from mrhd.models.registry import available_models

    parser = dict(_commands())[f"mrhd {command}"]
    helps = {a.dest: a.help for a in parser._actions}
    assert all(m in helps["model"] for m in available_models())
    assert all(p in helps["profile"] for p in available_profiles())


def test_train_help_gives_the_official_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--epochs N training epochs (default: 200", "--batch-size N", "(default: 32; mesm: 12",
                  "--lr LR AdamW learning rate (default: 0.0001", "--seed N", "(default: 2018; tr_detr: 2017"):
        assert words in text, words


def test_closed_pipe_ends_quietly(tmp_path):
    """`mrhd weights list | head -0`: the reader has gone; no traceback, the shell's SIGPIPE status."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails, as once `head` has exited
    try:
        res = subprocess.run([sys.executable, "-m", "mrhd", "weights", "list"], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert res.returncode == 141, res.stderr
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr

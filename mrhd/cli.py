"""The ``mrhd`` command: extract | predict | serve | train | eval | weights | features.

Each subcommand lives in ``mrhd/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them together and turns user errors into one line.
:func:`demo` is ``./run.sh demo``: ``mrhd predict`` with a generated sample video and a default query.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path

from mrhd import __version__
from mrhd.errors import MrhdError

COMMANDS = {
    "extract": "decode videos and write per-clip encoder features to HDF5 stores",
    "predict": "find the moments of a video that match a sentence, and its saliency curve",
    "serve": "a web page on a warm model: upload a video, type queries, click the moments",
    "train": "train a grounding model on features from the store",
    "eval": "score a prediction file with the official metrics",
    "weights": "list, download, convert and inspect checkpoints",
    "features": "import released features into stores; info and verify a folder of stores",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrhd",
        description="Video moment retrieval and highlight detection.",
    )
    parser.add_argument("--version", action="version", version=f"mrhd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"mrhd.commands.{name}")
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe is met here, not in the interpreter's exit
        return code
    except MrhdError as err:
        print(f"mrhd {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"mrhd {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`mrhd predict ... | head`): stop quietly as other tools do;
        # stdout goes to /dev/null so that the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


DEMO_VIDEO = "out/sample.mp4"
DEMO_QUERY = "a white bar sweeps across a colourful screen"


def demo_argv(args: list[str]) -> list[str]:
    """``./run.sh demo [VIDEO] [QUERY...] [predict flags]`` as ``mrhd predict`` arguments: flags may
    come first, and a missing video or query gets the demo's own. Which flags take a value is read
    off predict's parser, so the two never disagree."""
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    takes_value = {opt for action in predict._actions if action.nargs != 0 for opt in action.option_strings}
    positional, options = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional += args[i + 1:]
            break
        if arg.startswith("-") and len(arg) > 1:
            options.append(arg)
            if arg in takes_value and i + 1 < len(args):
                options.append(args[i + 1])
                i += 1
        else:
            positional.append(arg)
        i += 1
    video, queries = (positional[0], positional[1:]) if positional else (DEMO_VIDEO, [])
    return ["predict", video, *(queries or [DEMO_QUERY]), *options]


def demo(args: list[str]) -> int:
    """``./run.sh demo``: write the sample video when the default one is used and missing, then run
    ``mrhd predict`` (see :func:`demo_argv`)."""
    argv = demo_argv(args)
    if argv[1] == DEMO_VIDEO and not Path(DEMO_VIDEO).is_file() and not {"-h", "--help"} & set(argv):
        from mrhd.extract.synthetic import write_video

        write_video(DEMO_VIDEO, duration=40)
        print(f"wrote sample video {DEMO_VIDEO} (40 s, generated)")
    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

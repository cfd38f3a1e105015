"""The ``mrhd`` command: extract | predict | train | eval | weights | features.

Each subcommand lives in ``mrhd/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them together and turns user errors into one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mrhd import __version__
from mrhd.errors import MrhdError

COMMANDS = {
    "extract": "decode videos and write per-clip encoder features to HDF5 stores",
    "predict": "find the moments of a video that match a sentence, and its saliency curve",
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
        return int(args._run(args) or 0)
    except MrhdError as err:
        print(f"mrhd {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"mrhd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

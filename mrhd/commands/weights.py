"""List, download, convert and inspect checkpoints (grounding models and encoders)."""

from __future__ import annotations

import argparse

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the registered checkpoints")
    d = sub.add_parser("download", help="download a checkpoint into $MRHD_CACHE")
    d.add_argument("id", metavar="ID")
    c = sub.add_parser("convert", help="convert an authors' checkpoint into mrhd's format")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    c.add_argument("--model", required=True, help="model name")
    i = sub.add_parser("info", help="describe a checkpoint file")
    i.add_argument("path", metavar="PATH")


def run(args: argparse.Namespace) -> int:
    raise MrhdError("`mrhd weights` is not available in this build yet")

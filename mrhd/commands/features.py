"""Bring released features in, and look inside a folder of feature stores.

  mrhd features import SRC --out DIR [--layout NAME] [--streams a,b] [--clip-len S] [--queries ANN]
  mrhd features info DIR        streams, dims, clip length, counts, weights/recipe, first problems
  mrhd features verify DIR      every entry checked; non-zero exit status on any problem

import converts an authors' released feature folder (npz/npy/pt files or merged HDF5) into one
<stream>.h5 store per stream, values unchanged, root attributes saying where they came from
(docs/STORE.md). It recognises the layout by itself (--layout to choose): moment_detr, univtg,
mesm, umt, internvideo2, glove (docs/FEATURES.md, "Released features"). Resumable: re-running skips
what is stored. A file that cannot be read is named and skipped (exit status 1).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mrhd.features.layouts import LAYOUTS

    sub = p.add_subparsers(dest="features_command", metavar="ACTION")
    imp = sub.add_parser("import", help="convert a released feature folder into <stream>.h5 stores",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("src", metavar="SRC", help="the release's folder (or one merged .hdf5 / glove .txt file)")
    imp.add_argument("--out", required=True, metavar="DIR", help="folder for the <stream>.h5 stores")
    imp.add_argument("--layout", default=None, choices=sorted(LAYOUTS),
                     help=f"the release's layout: {', '.join(sorted(LAYOUTS))} (default: recognised from SRC)")
    imp.add_argument("--streams", default=None, metavar="a,b",
                     help="import only these streams (each must be in SRC)")
    imp.add_argument("--clip-len", type=float, default=None, metavar="S",
                     help="seconds per feature row (default: from the release: Charades-STA 1, VGG 1/6, "
                          "InternVideo2 _w<N>s folders N, otherwise 2)")
    imp.add_argument("--dataset", default=None, metavar="NAME",
                     help="the benchmark (qvhighlights, charades_sta, tacos, tvsum) when the video ids do not say")
    imp.add_argument("--queries", default=None, metavar="ANN.jsonl",
                     help="an annotation file: needed by the glove layout; otherwise reports how much of it is covered")
    imp.add_argument("--overwrite", action="store_true", help="replace stores that exist in DIR")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(_features_run=_run_import)
    for name, full, help_text in (("info", False, "streams, dims, clip length, counts, provenance, first problems"),
                                  ("verify", True, "check every entry of every store")):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("dir", metavar="DIR", help="folder of <stream>.h5 stores")
        if full:
            cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
        cmd.set_defaults(_features_run=_run_inspect, _full=full)


def _run_import(args: argparse.Namespace) -> int:
    from mrhd.features.importing import import_features

    streams = [s.strip() for s in args.streams.split(",") if s.strip()] if args.streams else None
    summary = import_features(args.src, args.out, layout=args.layout, streams=streams, clip_len=args.clip_len,
                              dataset=args.dataset, queries=args.queries, overwrite=args.overwrite,
                              progress=not args.no_progress and sys.stderr.isatty())
    print(summary.report())
    if summary.interrupted:
        return 130
    return 1 if summary.broken else 0


def _run_inspect(args: argparse.Namespace) -> int:
    from mrhd.features.inspect import folder_report

    text, problems = folder_report(args.dir, full=args._full,
                                   progress=args._full and not args.no_progress and sys.stderr.isatty())
    print(text)
    return 1 if problems and args._full else 0


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "_features_run", None):
        print("mrhd features: choose an action: import, info or verify (mrhd features --help)", file=sys.stderr)
        return 2
    return args._features_run(args)

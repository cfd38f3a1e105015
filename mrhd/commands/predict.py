"""Find the moments of VIDEO that match each QUERY and its saliency curve (one score per 2-s clip).

Features are extracted once per video and cached in $MRHD_CACHE (by file content); prints a table
and writes JSON. Videos longer than the model's window (150 s) run as overlapping windows whose
moments are merged by temporal NMS and whose saliency is stitched over the whole video.

  mrhd predict video.mp4 "a man opens the fridge" --out preds.json --plot saliency.png
  mrhd predict video.mp4 "a man opens the fridge" --weights random     # offline, random networks
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

from mrhd.errors import MrhdError, OfflineError


@contextlib.contextmanager
def _quiet_root_logger(enabled: bool):
    root = logging.getLogger()
    level = root.level
    if enabled:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mrhd.features.profiles import available_profiles
    from mrhd.models.registry import available_models

    p.add_argument("video", metavar="VIDEO", help="video file")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="one or more sentences")
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"model: {', '.join(available_models())} (default: the checkpoint's; without "
                        "--weights, the best CLIP-only release)")
    p.add_argument("--weights", default=None, metavar="ID|PATH|random",
                   help="registry id (`mrhd weights list`), checkpoint file (e.g. RUN_DIR/best.ckpt of "
                        "`mrhd train`), or 'random' for an offline end-to-end run with meaningless scores "
                        "(default: the best CLIP-only release)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="write the predictions as JSON (.jsonl: one object per line); `mrhd eval` reads both")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the saliency curve and top moments")
    p.add_argument("--top-k", type=int, default=5, help="moments to print per query (default: 5)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help=f"feature profile: {', '.join(available_profiles())} (default: the checkpoint's own; "
                        "'clip' for random weights)")
    p.add_argument("--random-encoders", action="store_true", default=None,
                   help="random-weight encoders (default: those the checkpoint was trained with, as "
                        "`mrhd train` records them; the released ones for an authors' checkpoint)")
    p.add_argument("--encoder-size", choices=("full", "tiny"), default=None,
                   help="encoder size: full or tiny (tiny: reduced random encoders, for checkpoints trained on "
                        "`mrhd extract --random-weights --encoder-size tiny` features; default: the checkpoint's)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--gt", action="append", default=None, metavar="START-END",
                   help="ground-truth window in seconds to draw on the plot (repeatable)")


def meaningless_scores_notice(predictor) -> str | None:
    """The line a run with random weights prints above its results, so nobody takes them for real."""
    if predictor.weights == "random":
        return ("NOTE: random weights (model and encoders): these moments and scores are meaningless; the run "
                "only shows that the pipeline works. Drop --weights random (downloads the default model) or "
                "pass a trained checkpoint for real predictions.")
    if predictor.profile.random_encoders:
        return (f"NOTE: the features come from {predictor.profile.encoders_text()}: the scores say nothing about "
                "what the video shows; the run only shows that extract -> train -> predict works. Train on "
                "features of the released encoders for real predictions.")
    return None


def _parse_gt(values) -> list[list[float]] | None:
    if not values:
        return None
    windows = []
    for v in values:
        try:
            st, ed = (float(x) for x in v.split("-"))
        except ValueError:
            raise MrhdError(f"--gt {v!r}: expected START-END in seconds, e.g. 26-36") from None
        if not 0 <= st < ed:
            raise MrhdError(f"--gt {v!r}: start must be >= 0 and before the end")
        windows.append([st, ed])
    return windows


def build_predictor(weights: str | None, *, model: str | None, device: str, profile: str | None,
                    cache: bool = True, encoder_size: str | None = None, random_encoders: bool | None = None):
    """The predictor a command asked for: ``--model`` alone picks that model's released CLIP-only
    checkpoint; offline, the error says how to run without downloads."""
    from mrhd.inference.predict import Predictor

    if weights is None and model is not None:
        from mrhd.weights import entries

        matching = [e.id for e in entries() if e.kind == "model" and e.model == model and e.profile == "clip"
                    and e.urls]
        if not matching:
            raise MrhdError(f"no released CLIP-only checkpoint of {model} is registered; pass --weights "
                            "ID|PATH (see `mrhd weights list`) or --weights random")
        weights = matching[0]
    released = weights is None or (weights != "random" and not Path(weights).is_file())
    if released and (encoder_size == "tiny" or random_encoders):
        raise MrhdError("--encoder-size tiny / --random-encoders run only with --weights random or a checkpoint "
                        "trained on such features (`mrhd train`); a released checkpoint needs the full encoders")
    with _quiet_root_logger(weights == "random"):   # open_clip logs "initialized randomly"
        try:
            return Predictor.from_pretrained(weights, device=device, model=model, profile=profile, cache=cache,
                                             encoder_size=encoder_size, random_encoders=random_encoders)
        except OfflineError as err:
            raise OfflineError(f"{err} (or run the whole pipeline offline with --weights random)") from None


def run(args: argparse.Namespace) -> int:
    from mrhd.inference.results import format_table, write_predictions
    from mrhd.io import check_writable

    video = Path(args.video)
    if not video.is_file():
        raise MrhdError(f"video {video} not found; check the path")
    if any(not q.strip() for q in args.queries):
        raise MrhdError("empty query; give a sentence such as \"a man opens the fridge\"")
    if args.top_k < 1:
        raise MrhdError("--top-k must be at least 1")
    for path, what in ((args.out, "output"), (args.plot, "plot")):
        if path:
            check_writable(path, what)
    gt = _parse_gt(args.gt)
    if args.plot and not args.plot.lower().endswith(".png"):
        raise MrhdError(f"--plot writes a PNG; give a file name ending in .png, not {args.plot}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = build_predictor(args.weights, model=args.model, device=args.device, profile=args.profile,
                                    cache=not args.no_cache, encoder_size=args.encoder_size,
                                    random_encoders=args.random_encoders)
        features = predictor.encode_video(video)
        preds = predictor.predict(features, args.queries)
    for w in caught:
        print(f"mrhd predict: warning: {w.message}", file=sys.stderr)

    print(f"{predictor.model_name} ({predictor.weights}), profile {predictor.profile.name}, "
          f"{features.n_clips} clips")
    notice = meaningless_scores_notice(predictor)
    if notice:
        print(notice)
    for pred in preds:
        print(format_table(pred, args.top_k))
    if args.out:
        write_predictions(args.out, preds)
        print(f"wrote {args.out}")
    if args.plot:
        from mrhd.inference.plots import plot_predictions

        plot_predictions(args.plot, preds, top_k=min(args.top_k, 3),
                         gt_windows=[gt] * len(preds) if gt else None)
        print(f"wrote {args.plot}")
    return 0

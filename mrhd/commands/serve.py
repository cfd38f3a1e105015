"""Serve a web page: upload a video (or pick one from --videos), type queries, watch the moments.

The model and its encoders load once; a video's features are extracted once (with progress on the
page) and kept, so every later query on it costs only the text encoder and the grounding model.
The page lists the ranked moments (click one to play it), draws the saliency curve with the
moments shaded and the player's position, shows the top clips, and downloads the predictions as
`mrhd predict --out` writes them. There is no login: keep --host 127.0.0.1 unless every machine
that can reach the port may use it.

  mrhd serve                                   # http://127.0.0.1:7860 with the default CLIP-only model
  mrhd serve --videos ~/clips --port 8080      # also pick videos from a folder on the server
  mrhd serve --weights random                  # offline, random networks
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from mrhd.errors import MrhdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name (default: the best CLIP-only checkpoint)")
    p.add_argument("--weights", default=None, metavar="ID|PATH|random",
                   help="registry id, checkpoint file, or 'random' for an offline run")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                   "machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0: any free port)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--videos", action="append", default=[], metavar="DIR",
                   help="a folder whose videos the page may pick (searched recursively; repeatable)")
    p.add_argument("--max-duration", type=float, default=3600, metavar="SECONDS",
                   help="longest video accepted (default: 3600)")
    p.add_argument("--max-upload-mb", type=float, default=4096, metavar="MB",
                   help="largest upload accepted (default: 4096)")
    p.add_argument("--profile", default=None, help="feature profile (default: the checkpoint's own)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the grounding model at start-up (minutes; then ~10 ms less per query on a "
                        "CPU; needs a C++ compiler there, else it warns and runs eagerly)")
    p.add_argument("--no-cache", action="store_true",
                   help="keep features in memory only, not in $MRHD_CACHE")
    p.add_argument("--random-encoders", action="store_true", default=None,
                   help="random-weight encoders (default: those the checkpoint was trained with)")
    p.add_argument("--encoder-size", choices=("full", "tiny"), default=None,
                   help="encoder size: full or tiny (tiny: reduced random encoders, with --weights random or a "
                        "checkpoint trained on tiny features; default: the checkpoint's)")


def run(args: argparse.Namespace) -> int:
    if args.max_duration <= 0:
        raise MrhdError("--max-duration must be a positive number of seconds")
    if args.max_upload_mb <= 0:
        raise MrhdError("--max-upload-mb must be positive")
    if args.threads is not None and args.threads < 1:
        raise MrhdError("--threads must be at least 1")
    for folder in args.videos:
        if not Path(folder).expanduser().is_dir():
            raise MrhdError(f"--videos {folder}: not a folder; give a folder of video files")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MrhdError("mrhd serve needs the 'serve' extra; install it with: pip install 'mrhd[serve]'") from None

    from mrhd.extract.cpu_sharing import share_cores_with_decoders
    from mrhd.heap import keep_freed_memory
    from mrhd.serve.server import OPENMP_SPIN_ROUNDS, bind, serve_forever, url_of

    share_cores_with_decoders(args.device, OPENMP_SPIN_ROUNDS)   # before torch is first imported
    if args.device.startswith("cpu"):
        keep_freed_memory()   # every query frees and allocates again the same 1-20 MB activations
    sock = bind(args.host, args.port)   # a busy port fails before minutes of loading
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from mrhd.commands.predict import build_predictor
        from mrhd.inference.predict import CompileFailedWarning
        from mrhd.inference.results import fmt_time
        from mrhd.serve.app import build_app
        from mrhd.serve.library import VideoLibrary
        from mrhd.serve.service import MomentService

        predictor = build_predictor(args.weights, model=args.model, device=args.device, profile=args.profile,
                                    cache=not args.no_cache, encoder_size=args.encoder_size,
                                    random_encoders=args.random_encoders)
        library = VideoLibrary(tempfile.mkdtemp(prefix="mrhd-serve-uploads-"), args.videos,
                               max_duration=args.max_duration, max_upload_mb=args.max_upload_mb)
        service = MomentService(predictor, library)
        try:
            if args.compile:
                print(f"mrhd serve: compiling {predictor.model_name} (torch.compile; minutes)...", flush=True)
                predictor.compile_model()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CompileFailedWarning)
                service.warm_up()   # with --compile: the compilation, before the port answers
            for w in caught:
                if issubclass(w.category, CompileFailedWarning):
                    print(f"mrhd serve: warning: {w.message}", file=sys.stderr, flush=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            app = build_app(service)
            print(f"mrhd serve: {predictor.model_name} ({predictor.weights}), profile {predictor.profile.name}, "
                  f"device {predictor.device}, torch threads {torch.get_num_threads()}; videos up to "
                  f"{fmt_time(args.max_duration)}", flush=True)
            if not sock.getsockname()[0].startswith(("127.", "::1")):
                print(f"mrhd serve: warning: listening on {args.host}: anyone who can reach this port can upload "
                      "videos and run queries (there is no login)", file=sys.stderr, flush=True)
            print(f"serving on {url_of(sock)}  (Ctrl+C stops)", flush=True)
            serve_forever(app, sock)
        finally:
            service.close()
    finally:
        sock.close()
    print("mrhd serve: stopped", file=sys.stderr)
    return 0

"""List, download, convert and inspect checkpoints (grounding models and encoders).

  mrhd weights list                              the registry, and which files are cached
  mrhd weights download ID                       fetch into $MRHD_CACHE (resumes, verifies sha256)
  mrhd weights convert SRC DST --model NAME      an authors' checkpoint -> mrhd format
  mrhd weights info PATH                         model, profile, config summary, keys
"""

from __future__ import annotations

import argparse

# config fields worth showing in `info` (whichever the model has)
_SUMMARY_FIELDS = ("hidden_dim", "nheads", "enc_layers", "dec_layers", "num_queries", "v_feat_dim",
                   "t_feat_dim", "a_feat_dim", "max_v_l", "max_q_l", "clip_len", "clip_length")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the registered checkpoints")
    d = sub.add_parser("download", help="download a checkpoint into $MRHD_CACHE")
    d.add_argument("id", metavar="ID", help="registry id (see `mrhd weights list`)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("convert", help="convert an authors' checkpoint into mrhd's format")
    c.add_argument("src", metavar="SRC", help="the authors' checkpoint file (model_best.ckpt)")
    c.add_argument("dst", metavar="DST", help="the mrhd checkpoint to write")
    from mrhd.models.registry import available_models

    c.add_argument("--model", required=True, metavar="NAME", help=f"model: {', '.join(available_models())}")
    i = sub.add_parser("info", help="describe a checkpoint file")
    i.add_argument("path", metavar="PATH", help="checkpoint file or registry id (cached)")


def _list() -> int:
    from mrhd.weights import cached_path, entries

    rows = [("ID", "KIND", "MODEL", "PROFILE", "DATASET", "SOURCE", "CACHED")]
    for e in entries():
        rows.append((e.id, e.kind, e.model, e.profile or "-", e.dataset or "-",
                     "url" if e.urls else "manual", "yes" if cached_path(e).is_file() else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _download(weights_id: str, quiet: bool) -> int:
    from mrhd.weights import get_entry, resolve_weights

    get_entry(weights_id)
    path = resolve_weights(weights_id, progress=not quiet)
    print(path)
    return 0


def _convert(src: str, dst: str, model: str) -> int:
    from mrhd.models.convert import convert_checkpoint

    summary = convert_checkpoint(src, dst, model=model)
    print(f"wrote {dst}: model {summary['model']}, profile {summary['profile']}, {summary['keys']} tensors")
    return 0


def _info(path_or_id: str) -> int:
    from pathlib import Path

    import torch

    from mrhd.models.convert import profile_from_opt
    from mrhd.weights import cached_path, find_entry
    from mrhd.weights.checkpoint import (
        MODEL_CHECKPOINT_FIX,
        is_mrhd_checkpoint,
        load_checkpoint,
        official_opt,
        official_state_dict,
    )

    path = Path(path_or_id)
    entry = find_entry(path_or_id)
    if not path.is_file() and entry is not None:
        _entry_info(entry)
        path = cached_path(entry)
        if not path.is_file():
            print(f"cached:   no (run `mrhd weights download {entry.id}`)")
            return 0
    ckpt = load_checkpoint(path, what="model checkpoint", fix=MODEL_CHECKPOINT_FIX)
    if is_mrhd_checkpoint(ckpt):
        fmt, model, profile, config = ckpt["format"], ckpt["model"], ckpt["profile"], ckpt["config"]
        sd = ckpt["state_dict"]
    else:
        fmt, model, config = "authors' checkpoint (convert with `mrhd weights convert`)", "?", official_opt(ckpt)
        sd = official_state_dict(ckpt)
        profile = profile_from_opt(config, default="?")
    tensors = [v for v in sd.values() if torch.is_tensor(v)]
    summary = ", ".join(f"{k}={config[k]}" for k in _SUMMARY_FIELDS if k in config)
    print(f"file:     {path}")
    print(f"format:   {fmt}")
    print(f"model:    {model}")
    print(f"profile:  {profile}")
    print(f"config:   {summary or '-'}")
    print(f"keys:     {len(tensors)} tensors, {sum(t.numel() for t in tensors):,} values")
    if "versions" in ckpt:
        print("versions: " + ", ".join(f"{k} {v}" for k, v in ckpt["versions"].items()))
    return 0


def _entry_info(entry) -> None:
    """What the registry knows about an id: source, licence, the published numbers."""
    print(f"id:       {entry.id} ({entry.kind} {entry.model})")
    if entry.profile:
        print(f"profile:  {entry.profile}   dataset: {entry.dataset or '-'}")
    print(f"licence:  {entry.licence}")
    print(f"page:     {entry.page or '-'}")
    for url in entry.urls or ["(no direct download: get the file from the page above)"]:
        print(f"url:      {url}")
    print(f"sha256:   {entry.sha256 or 'not published'}")
    for label, numbers in (("val", entry.val), ("paper", entry.paper)):
        if numbers:
            print(f"{label + ':':<9} " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    if entry.notes:
        print(f"notes:    {entry.notes}")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    if args.action == "download":
        return _download(args.id, args.quiet)
    if args.action == "convert":
        return _convert(args.src, args.dst, args.model)
    return _info(args.path)

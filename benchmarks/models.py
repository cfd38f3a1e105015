"""Forward and forward+backward time per batch, and parameter counts, of every registered model.

Usage: ``python benchmarks/models.py [--device cpu|cuda] [--batch-size 32] [--clips 75]
[--text-len 32] [--repeats 3] [--models a,b] [--threads N]``

Each model of ``mrhd.models.registry.MODEL_MODULES`` that can be imported is built with its default
(full, official) config and random weights and fed a padded batch in the official input layout:
``src_vid`` (B, clips, v_feat_dim), ``src_txt`` (B, text_len, t_feat_dim), float masks (1 = valid),
plus any other forward argument the model names (``vid``/``qid`` metadata lists, ``src_aud``,
``src_cls``) where its config says it is used. Models that are not available are listed as skipped.
Forward runs in eval mode under no_grad; forward+backward runs in train mode and back-propagates the
sum of the means of every floating output, so every model is timed on the same, loss-independent
work. Times are medians over ``--repeats`` after one warm-up run.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrhd.errors import MrhdError  # noqa: E402
from mrhd.models.registry import MODEL_MODULES, get_spec, make_config  # noqa: E402


def make_inputs(model, cfg, batch: int, clips: int, text_len: int, device) -> dict:
    """Keyword arguments for ``model.forward`` in the official layout (last sample half padded)."""
    g = torch.Generator().manual_seed(0)
    v_dim = getattr(cfg, "v_feat_dim", 2818)
    t_dim = getattr(cfg, "t_feat_dim", 512)
    vmask = torch.ones(batch, clips)
    tmask = torch.ones(batch, text_len)
    if batch > 1:
        vmask[-1, clips // 2:] = 0
        tmask[-1, text_len // 2:] = 0
    kwargs = {"src_txt": torch.randn(batch, text_len, t_dim, generator=g), "src_txt_mask": tmask,
              "src_vid": torch.randn(batch, clips, v_dim, generator=g), "src_vid_mask": vmask}
    params = inspect.signature(model.forward).parameters
    if "vid" in params:
        kwargs["vid"] = [f"bench{i}_0.0_{2.0 * clips}" for i in range(batch)]
    if "qid" in params:
        kwargs["qid"] = list(range(batch))
    a_dim = getattr(cfg, "a_feat_dim", 0) or 0
    if "src_aud" in params and a_dim:
        kwargs["src_aud"] = torch.randn(batch, clips, a_dim, generator=g)
        kwargs["src_aud_mask"] = vmask.clone()
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise MrhdError(f"forward needs {missing}, which this benchmark cannot make")
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}


def float_outputs(tree):
    if torch.is_tensor(tree):
        return [tree] if tree.is_floating_point() and tree.requires_grad else []
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in float_outputs(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in float_outputs(v)]
    return []


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, args, device) -> dict:
    spec = get_spec(name)
    cfg = make_config(name)
    torch.manual_seed(0)
    model = spec.build(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inputs = make_inputs(model, cfg, args.batch_size, args.clips, args.text_len, device)

    def forward():
        with torch.no_grad():
            model(**inputs)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        outs = float_outputs(model(**inputs))
        sum(t.float().mean() for t in outs).backward()

    model.eval()
    t_fwd = timed(forward, device, args.repeats)
    model.train()
    t_fb = timed(forward_backward, device, args.repeats)
    return {"model": name, "params": n_params, "trainable": n_trainable, "fwd_ms": t_fwd * 1e3,
            "fwd_bwd_ms": t_fb * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clips", type=int, default=75)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODEL_MODULES))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} threads) batch={args.batch_size} clips={args.clips} "
          f"text={args.text_len} torch={torch.__version__}")
    print(f"{'model':<12} {'params':>12} {'trainable':>12} {'fwd ms':>10} {'fwd+bwd ms':>11}")
    for name in [m for m in args.models.split(",") if m]:
        try:
            r = bench_model(name, args, device)
        except MrhdError as err:
            print(f"{name:<12} skipped: {err}")
            continue
        print(f"{r['model']:<12} {r['params']:>12,} {r['trainable']:>12,} {r['fwd_ms']:>10.1f} {r['fwd_bwd_ms']:>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds from the end of the imports to the first training step of `mrhd train`, at QVHighlights scale.

Start-up scales with the number of lines and stored videos, not with feature sizes, so the stores
hold QVHighlights' counts (7,218 training and 1,550 validation queries over as many videos) with
2-clip features. Measured in a fresh process, as ``mrhd train`` runs: the imports (torch, mrhd, the
model's package with scipy.optimize, torch._dynamo which torch loads with the first optimiser),
then the Trainer (store listing, annotation checks against the stores, model, optimiser), then the
first batch, where the first step begins. Each phase is printed.

    .venv/bin/python benchmarks/startup.py [--model qd_detr] [--n-train 7218] [--n-val 1550]
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def write_data(root: Path, n_train: int, n_val: int) -> dict:
    """Stores of every stream of the slowfast_clip profile + annotations, tiny features."""
    import numpy as np

    from mrhd.encoders.streams import STREAMS
    from mrhd.features.write import write_store

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n_train + n_val):
        lines.append({"qid": i, "query": "a person walks into the room and sits down", "duration": 4.0,
                      "vid": f"v{i:05d}_0.0_4.0", "relevant_windows": [[0.0, 2.0]], "relevant_clip_ids": [0],
                      "saliency_scores": [[2, 3, 4]]})
    videos = {ln["vid"]: rng.normal(size=(2, 1)) for ln in lines}
    for stream in ("slowfast", "clip"):
        dim = STREAMS[stream].dim
        write_store(root / f"{stream}.h5", stream, videos={k: np.repeat(v, dim, 1) for k, v in videos.items()},
                    dtype="float16")
    write_store(root / "clip_text.h5", "clip_text", texts={ln["qid"]: rng.normal(size=(11, 512)) for ln in lines})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:n_train]))
    (root / "val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[n_train:]))
    return {"features": root, "train": root / "train.jsonl", "val": root / "val.jsonl"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qd_detr")
    p.add_argument("--n-train", type=int, default=7218)
    p.add_argument("--n-val", type=int, default=1550)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data is None:    # write the data, then measure in a fresh process (cold imports)
        import subprocess

        with tempfile.TemporaryDirectory() as tmp:
            write_data(Path(tmp), args.n_train, args.n_val)
            return subprocess.call([sys.executable, __file__, "--model", args.model, "--data", tmp])

    from mrhd.commands.train import OPENMP_SPIN_ROUNDS
    from mrhd.extract.cpu_sharing import share_cores_with_decoders

    share_cores_with_decoders("cpu", OPENMP_SPIN_ROUNDS)   # as `mrhd train` does, before torch loads
    # The imports: mrhd's training modules, the model's package (which loads scipy.optimize for the
    # matcher) and torch._dynamo, which torch loads when the first optimiser is made (the authors'
    # code pays both as well).
    import torch._dynamo  # noqa: F401

    from mrhd.models.registry import get_spec
    from mrhd.training.config import load_train_config
    from mrhd.training.trainer import Trainer

    get_spec(args.model)
    t_imports = time.perf_counter()
    c_imports = time.process_time()

    root = Path(args.data)
    cfg = load_train_config(args.model, progress=False, epochs=1)
    phases = {}
    trainer = Trainer(cfg, root, root / "train.jsonl", root / "val.jsonl", Path(tempfile.mkdtemp()) / "run",
                      log=lambda m: None)
    phases["Trainer (stores, annotations, model, optimiser)"] = time.perf_counter() - t_imports
    t = time.perf_counter()
    next(trainer.epoch_batches())
    phases["first batch"] = time.perf_counter() - t
    total = time.perf_counter() - t_imports
    cpu = time.process_time() - c_imports
    load = os.getloadavg()
    print(f"{args.model}: {len(trainer.train_set)} training / {len(trainer.val_set)} validation lines, "
          f"load average {load[0]:.2f}")
    print(f"  imports                                   {t_imports - T_START:6.2f} s (process start to imports done)")
    for name, secs in phases.items():
        print(f"  {name:42s}{secs:6.2f} s")
    print(f"  imports done -> first step begins          {total:6.2f} s ({cpu:.2f} s of CPU time: what other "
          "processes on the cores do not change)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

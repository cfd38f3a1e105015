"""Time `mrhd eval` on the full QVHighlights val split (1550 queries).

    .venv/bin/python benchmarks/eval.py [--submission PRED.jsonl] [--gt GT.jsonl] [--repeat 5]

Defaults: the released Moment-DETR sample predictions from the eval fixtures and the val
annotations from $MRHD_SHARED/data. Prints the time to read, validate and score (median of the
repeats) and checks the result against the published metrics.json when the fixture has one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrhd.io import read_jsonl  # noqa: E402
from mrhd.paths import fixtures_dir, shared_dir  # noqa: E402
from mrhd.pipeline.evaluate import evaluate_qvhighlights, validate  # noqa: E402


def main() -> int:
    default_case = fixtures_dir() / "eval" / "moment_detr_sample_val"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submission", type=Path, default=default_case / "submission.jsonl")
    p.add_argument("--gt", type=Path,
                   default=shared_dir() / "data" / "qvhighlights" / "highlight_val_release.jsonl")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    t0 = time.perf_counter()
    preds, gt = read_jsonl(args.submission), read_jsonl(args.gt)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    issues = validate("qvhighlights", preds, gt)
    t_validate = time.perf_counter() - t0

    times, metrics = [], None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        metrics = evaluate_qvhighlights(preds, gt)
        times.append(time.perf_counter() - t0)

    print(f"queries          {len(preds)}")
    print(f"read both files  {t_load:.3f} s")
    print(f"validate         {t_validate:.3f} s ({len(issues)} issues)")
    print(f"evaluate         {statistics.median(times):.3f} s median of {len(times)} "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    published = args.submission.parent / "metrics.json"
    if published.is_file():
        same = json.dumps(json.loads(json.dumps(metrics))) == json.dumps(json.loads(published.read_text()))
        print(f"equals {published.name}: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

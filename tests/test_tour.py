"""The README's five-minute offline tour, run command by command through the real CLI.

The commands are read from the README's tour block, so the documentation cannot drift from what
works: extract with tiny random encoders -> train on those features -> eval -> predict with the
run's own checkpoint (which must rebuild the encoders it was trained on) -> eval of predict's output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tour_commands() -> list[list[str]]:
    """The shell lines of the README block under "Five-minute offline tour" (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Five-minute offline tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def _argv(words: list[str]) -> list[str]:
    if words[0] == "mrhd":
        return [sys.executable, "-m", "mrhd", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"the tour runs only mrhd and python, not {words[0]}")


@pytest.mark.slow
def test_readme_tour_runs_offline_end_to_end(tmp_path):
    commands = tour_commands()
    assert [c[:2] for c in commands] == [["python", "-m"], ["mrhd", "extract"], ["mrhd", "train"],
                                         ["mrhd", "eval"], ["mrhd", "predict"], ["mrhd", "eval"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MRHD_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1",   # the suite shares two cores; threads would only fight
           "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    outputs = []
    for words in commands:
        res = subprocess.run(_argv(words), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{' '.join(words)}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr
        outputs.append(res)
    tour = tmp_path / "tour"
    assert (tour / "run" / "best.ckpt").is_file() and (tour / "saliency.png").read_bytes()[:4] == b"\x89PNG"
    assert "tiny" in outputs[2].stderr and "pipeline check" in outputs[2].stderr      # train says what it trains on
    metrics = json.loads((tour / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert metrics["brief"]
    assert "NOTE: the features come from random tiny encoders" in outputs[4].stdout                        # predict says the scores mean nothing
    preds = json.loads((tour / "preds.json").read_text())
    assert [p["vid"] for p in preds] == ["vid3", "vid3"]
    assert "matched to ground-truth qids by vid and query" in outputs[5].stderr
    assert "scored: moment retrieval (MR), highlight detection (HD)" in outputs[5].stdout

"""`Predictor.compile_model` / `mrhd serve --compile`: the compiled grounding network predicts what
the eager one does, for every query length without compiling again; where compiling fails, one
warning and the eager network's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mrhd.inference.predict import CompileFailedWarning, Predictor
from mrhd.inference.results import CLIP_LEN
from mrhd.inference.video_features import VideoFeatures

ROOT = Path(__file__).resolve().parents[1]
# CG-DETR (the default model) with one layer per stack: the same code, a shorter compilation
SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "max_v_l": 8, "enc_layers": 1, "dec_layers": 1,
         "t2v_layers": 1, "dummy_layers": 1, "num_dummies": 3}
QUERIES = ["a man opens the fridge", "dog", "someone cooks pasta in a small kitchen while music plays"]


def _predictor(model: str | None = None) -> Predictor:
    config = SMALL if model is None else {k: SMALL[k] for k in ("hidden_dim", "nheads", "dim_feedforward", "max_v_l")}
    return Predictor.from_pretrained("random", model=model, encoder_size="tiny", cache=False, random_config=config)


def _features(p: Predictor, n_clips: int = 21) -> VideoFeatures:
    """Made-up features of a video of ``n_clips`` clips: more than one window of the small model."""
    rng = np.random.default_rng(7)
    streams = {s: rng.standard_normal((n_clips, p.video_encoders[s].dim)).astype(np.float32)
               for s in p.profile.video + p.profile.audio}
    return VideoFeatures(path="made-up", vid="made-up", duration=n_clips * CLIP_LEN, content_hash="",
                         streams=streams, encoders={s: e.info.weights for s, e in p.video_encoders.items()})


def _same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert [w[:2] for w in x.windows] == [w[:2] for w in y.windows]
        np.testing.assert_allclose([w[2] for w in x.windows], [w[2] for w in y.windows], atol=2e-4)
        np.testing.assert_allclose(x.saliency, y.saliency, atol=2e-4)


def test_compiled_network_predicts_as_the_eager_one_for_every_query_length(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))   # nothing from earlier runs
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    p = _predictor()
    short, long = _features(p, n_clips=p.window), _features(p)   # one window; several
    eager = {"short": p.predict(short, QUERIES[:1]), "pair": p.predict(short, QUERIES[:2]),
             "long": p.predict(long, QUERIES), "dog": p.predict(long, QUERIES[1:2])}
    p.compile_model()
    assert p.net is not p.eager_net
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFailedWarning)
        # what `mrhd serve --compile` warms up with: a batch of one, then of two (compiled here)
        _same(p.predict(short, QUERIES[:1]), eager["short"])
        _same(p.predict(short, QUERIES[:2]), eager["pair"])
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 1
        # other query lengths and batch sizes: the same dynamic graphs, no new compilation
        _same(p.predict(long, QUERIES), eager["long"])
        _same(p.predict(long, QUERIES[1:2]), eager["dog"])
        assert counters["stats"]["unique_graphs"] == graphs
    assert p.net is not p.eager_net


_BROKEN_COMPILER = """
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
from tests.test_predict_compile import QUERIES, _features, _predictor
from mrhd.inference.predict import CompileFailedWarning
p = _predictor("moment_detr")     # the fallback is the same for every model; this one compiles fastest
feats = _features(p)
eager = [x.to_json() for x in p.predict(feats, QUERIES)]
p.compile_model()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = [x.to_json() for x in p.predict(feats, QUERIES)]
    second = [x.to_json() for x in p.predict(feats, QUERIES)]
notes = [str(w.message) for w in caught if issubclass(w.category, CompileFailedWarning)]
print(json.dumps({"eager": eager, "first": first, "second": second, "notes": notes,
                  "eager_again": p.net is p.eager_net}))
"""


def _without_a_compiler(tmp_path) -> dict:
    """The environment of a machine without a C++ compiler (inductor reads CXX when it loads; no
    conda here to fetch one) and with nothing compiled before."""
    return {**os.environ, "CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
            "PYTHONUNBUFFERED": "1"}


def test_a_failed_compilation_warns_once_and_the_eager_network_answers(tmp_path):
    env = _without_a_compiler(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _BROKEN_COMPILER, str(ROOT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["notes"]) == 1, out["notes"]
    note = out["notes"][0]
    assert "torch.compile of" in note and "C++ compiler" in note and "eager" in note and "\n" not in note
    assert out["eager_again"]
    assert out["first"] == out["eager"] and out["second"] == out["eager"]


def test_mrhd_serve_compile_without_a_compiler_says_so_in_one_line_and_serves(tmp_path):
    code = "import sys\nfrom mrhd.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = _without_a_compiler(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--weights", "random", "--model", "moment_detr",
                             "--encoder-size", "tiny", "--port", "0", "--compile", "--no-cache"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, lines = time.monotonic() + 600, []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving on "):
                break
        assert lines and lines[-1].startswith("serving on "), "".join(lines) + proc.stderr.read()
        assert any("compiling" in x for x in lines)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    notes = [x for x in err.splitlines() if "torch.compile of" in x]
    assert len(notes) == 1 and notes[0].startswith("mrhd serve: warning: ") and "eager" in notes[0], err
    assert "Traceback" not in err

"""The batch job: packing clips of several videos into batches, resume, overwrite, shards, bad input,
worker processes, and a job killed with SIGKILL / stopped with SIGTERM then re-run to completion."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mrhd.errors import MrhdError
from mrhd.extract.audio import iter_audio_chunks
from mrhd.extract.decode import VideoDecoder
from mrhd.extract.job import ExtractJob, read_queries
from mrhd.extract.sources import expand_inputs, parse_shard, shard
from mrhd.extract.synthetic import write_video
from mrhd.features.store import FeatureStore, store_path
from tests.helpers.extract_encoders import StatsEncoder, clip_statistics
from tests.helpers.videos import write_audio_only, write_broken

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "a": write_video(d / "a.mp4", duration=5.0, fps=25, width=96, height=64),
        "b": write_video(d / "sub" / "b.mp4", duration=3.0, fps=30, width=64, height=96, audio=False),
        "c": write_video(d / "c.mp4", duration=4.2, fps=24, width=80, height=60),
    }


def _encoders(tag="v1", picklable=True):
    return [StatsEncoder("clip", "clip_frame", tag, picklable),
            StatsEncoder("slowfast", "slowfast_clip", tag, picklable),
            StatsEncoder("pann", "audio_chunk", tag, picklable)]


def _expected(path: Path, stream: str) -> np.ndarray:
    if stream == "pann":
        return np.stack([clip_statistics(x) for _, x in iter_audio_chunks(path)])
    kind = {"clip": "clip_frame", "slowfast": "slowfast_clip"}[stream]
    return np.stack([clip_statistics(x) for _, _, x in VideoDecoder(path, [kind])])


def _job(out, tag="v1", **kw):
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    return ExtractJob(_encoders(tag, kw.pop("picklable", True)), out, **kw)


def _sources(*paths):
    return expand_inputs([str(p) for p in paths]).sources


def test_batches_pack_videos_and_match_direct_decoding(tmp_path, videos):
    job = _job(tmp_path, batch_size=5, chunk=2)
    summary = job.run_videos(_sources(*videos.values()))
    # b has no audio: only its pann stream fails, with a clear reason; b is counted as partly stored
    assert (summary.inputs, summary.stored, summary.partial, summary.skipped, summary.failed) == (3, 2, 1, 0, 0)
    assert summary.report().startswith("3 inputs: 2 stored, 0 already stored, 1 partly stored (a stream failed), 0 failed")
    assert [(Path(f.path).name, f.stream) for f in summary.failures] == [("b.mp4", "pann")]
    assert "no audio track" in summary.failures[0].reason
    for stream in ("clip", "slowfast", "pann"):
        store = FeatureStore(store_path(tmp_path, stream))
        names = [v for v in ("a", "b", "c") if not (stream == "pann" and v == "b")]
        assert store.video_ids() == names
        for v in names:
            np.testing.assert_allclose(store.read(v), _expected(videos[v], stream), rtol=1e-5, atol=1e-5)
            attrs = store.read_attrs(v)
            assert attrs["n_clips"] == store.read(v).shape[0] and attrs["duration"] > 0
    # clip counts of FEATURES.md: CLIP ~round(D/2), SlowFast ceil(D/2), PANN floor(D/2)
    clip, sf, pann = (FeatureStore(store_path(tmp_path, s)) for s in ("clip", "slowfast", "pann"))
    assert [clip.read(v).shape[0] for v in "abc"] == [3, 2, 2]
    assert [sf.read(v).shape[0] for v in "abc"] == [3, 2, 3]
    assert [pann.read(v).shape[0] for v in "ac"] == [2, 2]
    # clips of different videos shared batches: fewer encode calls than (video, chunk) pairs
    assert job.encoders[0].calls < 4


def test_resume_skips_and_overwrite_recomputes(tmp_path, videos):
    srcs = _sources(videos["a"], videos["c"])
    _job(tmp_path).run_videos(srcs)
    again = _job(tmp_path)
    summary = again.run_videos(srcs)
    assert summary.skipped == 2 and summary.stored == 0 and all(e.calls == 0 for e in again.encoders)
    over = _job(tmp_path, overwrite=True)
    assert over.run_videos(srcs).stored == 2 and all(e.calls > 0 for e in over.encoders)
    # a video missing from one store only is computed for that stream only
    extra = _job(tmp_path)
    extra.encoders.append(StatsEncoder("blip2", "clip_frame"))
    summary = extra.run_videos(srcs)
    assert summary.stored == 2 and [e.calls > 0 for e in extra.encoders] == [False, False, False, True]


def test_an_audio_only_pass_records_the_stored_video_length(tmp_path, videos):
    """A run that finds the video streams stored and only audio to do (a killed run resumed, an audio
    encoder added later) stores the same ``duration`` as one run of all streams: the video's decoded
    length, not the padded audio's."""
    from mrhd.extract.audio import AudioChunks

    srcs = _sources(videos["a"], videos["c"])
    _job(tmp_path / "once").run_videos(srcs)
    first = ExtractJob(_encoders()[:2], tmp_path / "resumed", num_workers=0, progress=False)
    assert first.run_videos(srcs).stored == 2
    resumed = _job(tmp_path / "resumed")
    assert resumed.run_videos(srcs).stored == 2
    assert [e.calls > 0 for e in resumed.encoders] == [False, False, True]   # the audio pass only
    for v in ("a", "c"):
        audio = AudioChunks(videos[v])
        for _ in audio:
            pass
        video = VideoDecoder(videos[v], ["clip_frame"])
        for _ in video:
            pass
        assert audio.seconds != pytest.approx(float(video.t_end), abs=1e-4)   # else the test shows nothing
        for stream in ("clip", "slowfast", "pann"):
            want = FeatureStore(store_path(tmp_path / "once", stream)).read_attrs(v)["duration"]
            got = FeatureStore(store_path(tmp_path / "resumed", stream)).read_attrs(v)["duration"]
            assert got == want == pytest.approx(float(video.t_end)), (v, stream)


def test_encoder_failure_fails_its_videos_only(tmp_path, videos):
    class Broken(StatsEncoder):
        def encode(self, batch):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    job = ExtractJob([Broken("clip", "clip_frame"), StatsEncoder("slowfast", "slowfast_clip")], tmp_path,
                     num_workers=0, progress=False)
    summary = job.run_videos(_sources(videos["a"], videos["c"]))
    assert {(Path(f.path).name, f.stream) for f in summary.failures} == {("a.mp4", "clip"), ("c.mp4", "clip")}
    assert all("lower --batch-size" in f.reason for f in summary.failures)
    assert FeatureStore(store_path(tmp_path, "slowfast")).video_ids() == ["a", "c"]


def test_store_of_another_recipe_is_refused(tmp_path, videos):
    _job(tmp_path).run_videos(_sources(videos["a"]))
    with pytest.raises(MrhdError, match="another recipe"):
        _job(tmp_path, tag="v2").run_videos(_sources(videos["a"]))


def test_preprocess_in_main_process_when_not_picklable(tmp_path, videos):
    _job(tmp_path / "x", picklable=False, batch_size=4).run_videos(_sources(videos["a"]))
    np.testing.assert_allclose(FeatureStore(store_path(tmp_path / "x", "clip")).read("a"),
                               _expected(videos["a"], "clip"), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_worker_processes_give_the_same_features(tmp_path, videos):
    summary = _job(tmp_path, num_workers=2, batch_size=4, chunk=3).run_videos(_sources(*videos.values()))
    assert summary.stored == 2 and summary.partial == 1 and len(summary.failures) == 1
    assert summary.decode_s > 0
    for stream in ("clip", "slowfast"):
        store = FeatureStore(store_path(tmp_path, stream))
        for v in "abc":
            np.testing.assert_allclose(store.read(v), _expected(videos[v], stream), rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_reported_and_the_rest_extracts(tmp_path, videos):
    d = tmp_path / "in"
    write_video(d / "good.mp4", duration=2.5, fps=10, width=64, height=48)
    write_broken(d / "truncated.mp4", "truncated", source=videos["a"])
    write_broken(d / "corrupt.mp4", "corrupt", source=videos["a"])
    write_broken(d / "empty.mp4", "empty")
    write_broken(d / "notes.mp4", "text")
    write_broken(d / "garbage.mp4", "garbage")
    write_audio_only(d / "song.m4a", duration=4.5)
    listing = expand_inputs([str(d), str(tmp_path / "missing.mp4"), str(d / "song.m4a")])
    job = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("pann", "audio_chunk")],
                     tmp_path / "out", num_workers=0, progress=False)
    summary = job.run_videos(listing.sources)
    reasons = {Path(f.path).name: f.reason for f in summary.failures if f.stream == "clip"}
    assert "missing.mp4" in dict((Path(p).name, r) for p, r in listing.problems)
    assert "empty" in reasons["empty.mp4"]
    assert "not a readable video" in reasons["notes.mp4"] and "not a readable video" in reasons["garbage.mp4"]
    assert "no video stream" in reasons["song.m4a"]
    assert "truncated.mp4" in reasons  # moov atom lost
    assert all("\n" not in r for r in reasons.values())
    stored = FeatureStore(store_path(tmp_path / "out", "clip")).video_ids()
    assert "good" in stored
    # a damaged middle is decoded as far as possible (as ffmpeg does) or reported, never a crash
    assert ("corrupt" in stored) != ("corrupt.mp4" in reasons)
    assert "song" in FeatureStore(store_path(tmp_path / "out", "pann")).video_ids()  # audio still works
    report = summary.report()
    assert "FAILED" in report and "empty.mp4" in report


def test_unwritable_output_folder(tmp_path, videos):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MrhdError, match="writable"):
        _job(blocker / "out").run_videos(_sources(videos["a"]))


def test_sources_lists_and_shards(tmp_path, videos):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# videos\n{videos['a']}\n{videos['b'].parent}\n\nnope.mp4\n")
    listing = expand_inputs([str(lst), str(videos["c"])])
    assert sorted(s.video_id for s in listing.sources) == ["a", "b", "c"]
    assert [Path(p).name for p, _ in listing.problems] == ["nope.mp4"]
    parts = [shard(listing.sources, i, 2) for i in range(2)]
    assert sorted(s.video_id for p in parts for s in p) == ["a", "b", "c"]
    assert not {s.video_id for s in parts[0]} & {s.video_id for s in parts[1]}
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(MrhdError):
            parse_shard(bad)
    dup = tmp_path / "other" / "a.mp4"
    dup.parent.mkdir()
    dup.write_bytes(videos["a"].read_bytes())
    with pytest.raises(MrhdError, match="2 inputs would share a video id.*--video-id-from path"):
        expand_inputs([str(videos["a"]), str(dup)])


def test_read_queries(tmp_path):
    ann = tmp_path / "ann.jsonl"
    ann.write_text('{"qid": 1, "query": "a dog runs", "vid": "x"}\n{"qid": 2, "query": "  "}\nnot json\n'
                   '{"qid": 3, "query": "a cat"}\n')
    from mrhd.extract.job import Summary

    summary = Summary()
    assert [row[:2] for row in read_queries(ann, summary)] == [("1", "a dog runs"), ("3", "a cat")]
    assert [Path(f.path).name for f in summary.query_failures] == ["ann.jsonl:2", "ann.jsonl:3"]
    with pytest.raises(MrhdError, match="empty"):
        read_queries(ann)
    # several files: a qid seen again with the same text is one query, with another text a problem
    other = tmp_path / "val.jsonl"
    other.write_text('{"qid": 3, "query": "a cat"}\n{"qid": 1, "query": "a bird"}\n{"qid": 4, "query": "rain"}\n')
    summary = Summary()
    assert [row[:2] for row in read_queries([ann, other], summary)] == [("1", "a dog runs"), ("3", "a cat"),
                                                                        ("4", "rain")]
    clash = [f for f in summary.query_failures if f.path.endswith("val.jsonl:2")]
    assert len(clash) == 1 and "another query at" in clash[0].reason and "ann.jsonl:1" in clash[0].reason


# ------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_queries_and_real_clip_encoder(tmp_path, videos, capsys):
    """The real CLIP module (tiny, random weights) through the CLI, video and text stores."""
    pytest.importorskip("mrhd.encoders.clip")
    from mrhd.encoders.factory import build_encoder

    ann = tmp_path / "ann.jsonl"
    ann.write_text(json.dumps({"qid": 5, "query": "a white bar moves"}) + "\n"
                   + json.dumps({"qid": 9, "query": "colours"}) + "\n")
    out = tmp_path / "out"
    from mrhd.cli import main

    rc = main(["extract", str(videos["a"]), str(videos["c"]), "--encoders", "clip", "--out", str(out),
               "--random-weights", "--encoder-size", "tiny", "--num-workers", "0", "--queries", str(ann),
               "--batch-size", "4"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    assert "2 inputs: 2 stored" in stdout and "2 queries" in stdout
    enc = build_encoder("clip", random_weights=True, size="tiny")
    store = FeatureStore(out / "clip.h5")
    assert store.info["weights"] == "random" and store.info["recipe"] == json.loads(enc.info.recipe_json())
    frames = [x for _, _, x in VideoDecoder(videos["a"], ["clip_frame"])]
    want = enc.encode(enc.preprocess(frames)).numpy()
    np.testing.assert_allclose(store.read("a"), want.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-3)
    text = build_encoder("clip_text", random_weights=True, size="tiny")
    tokens, pooled = FeatureStore(out / "clip_text.h5").read_text(5)
    want_tok, want_pool = text.encode_texts(["a white bar moves"])[0]
    np.testing.assert_allclose(tokens, want_tok.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled, want_pool.numpy(), rtol=1e-5, atol=1e-5)


def test_cli_user_errors_are_one_line(tmp_path, videos, capsys):
    from mrhd.cli import main

    for argv, msg in ((["--encoders", "nope"], "unknown encoder"), (["--shard", "2/2"], "--shard"),
                      (["--encoder-size", "tiny"], "--random-weights"), (["--device", "tpu"], "cpu or cuda"),
                      (["--weights", "clip"], "STREAM=ID|PATH"),
                      (["--weights", "blip2=/m/blip2.pth"], "not a stream of --encoders")):
        assert main(["extract", str(videos["a"]), "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, err


def test_cli_text_streams_take_the_video_weights_and_only_shard_0_writes_them(tmp_path, videos, monkeypatch,
                                                                             capsys):
    """--weights STREAM= also reaches STREAM_text unless that has its own; --shard 1/2 says that it
    leaves the queries to shard 0 (and writes no text store). The builder is replaced by a recorder."""
    import mrhd.encoders.factory as factory
    from mrhd.cli import main
    from mrhd.commands.extract import add_arguments
    from mrhd.encoders.internvideo2.frames import SegmentMiddles

    built = {}

    def recorder(name, *, device="cpu", weights=None, random_weights=False, size="full"):
        built[name] = weights
        if name.endswith("_text"):
            return object()  # never asked: shard 1 encodes no query
        enc = StatsEncoder(name, {"clip": "clip_frame", "internvideo2": "window_frames"}[name])
        enc.window_frame_picker = SegmentMiddles(8) if name == "internvideo2" else None  # same-size windows
        return enc

    monkeypatch.setattr(factory, "build_encoder", recorder)
    ann = tmp_path / "ann.jsonl"
    ann.write_text(json.dumps({"qid": 1, "query": "a bar"}) + "\n")
    out = tmp_path / "out"
    rc = main(["extract", str(videos["a"]), str(videos["c"]), "--encoders", "clip,internvideo2", "--out", str(out),
               "--weights", "clip=/m/ViT-B-32.pt", "--weights", "internvideo2=/m/iv2.pt",
               "--weights", "internvideo2_text=/m/iv2-text.pt", "--queries", str(ann), "--shard", "1/2",
               "--num-workers", "0"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    assert built == {"clip": "/m/ViT-B-32.pt", "clip_text": "/m/ViT-B-32.pt", "internvideo2": "/m/iv2.pt",
                     "internvideo2_text": "/m/iv2-text.pt"}
    assert "1 input: 1 stored" in stdout and "shard 1/2 leaves the text stores to shard 0" in stdout
    assert sorted(p.name for p in out.glob("*.h5")) == ["clip.h5", "internvideo2.h5"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions}
    assert "shard 0 only" in helps["shard"] and "internvideo2_text" in helps["weights"]


_KILLABLE = """
import sys, time
import numpy as np
import mrhd.extract.job as extract_job
from mrhd.extract.job import ExtractJob
from mrhd.extract.sources import expand_inputs
from tests.helpers.extract_encoders import StatsEncoder

class Slow(StatsEncoder):
    def encode(self, batch):
        time.sleep(0.15)
        return super().encode(batch)

extract_job.COMMIT_EVERY_S = 0.0
job = ExtractJob([Slow("clip", "clip_frame"), Slow("slowfast", "slowfast_clip")], sys.argv[1],
                 batch_size=2, num_workers=0, progress=False, chunk=1)
undo = extract_job.install_sigterm()
try:
    s = job.run_videos(expand_inputs([sys.argv[2]]).sources)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("stored", s.stored, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_job_reruns_to_completion(tmp_path, sig):
    src = tmp_path / "in"
    for i in range(5):
        write_video(src / f"v{i}.mp4", duration=4.0 + i % 2, fps=15, width=48, height=32, audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(out), str(src)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = out / ".clip.parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until at least one video is stored, then strike
        if (out / "clip.h5").exists() and (list(parts.glob("*.h5")) or _n_stored(out) > 0):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in stdout
    else:
        assert proc.returncode == -signal.SIGKILL
    # re-run to completion; every video present exactly once and equal to a direct computation
    job = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("slowfast", "slowfast_clip")], out,
                     num_workers=0, progress=False)
    summary = job.run_videos(expand_inputs([str(src)]).sources)
    assert summary.stored + summary.skipped == 5 and summary.skipped >= 1 and not summary.failures
    for stream, kind in (("clip", "clip_frame"), ("slowfast", "slowfast_clip")):
        store = FeatureStore(store_path(out, stream))
        assert store.video_ids() == [f"v{i}" for i in range(5)]
        for i in range(5):
            want = np.stack([clip_statistics(x) for _, _, x in VideoDecoder(src / f"v{i}.mp4", [kind])])
            np.testing.assert_allclose(store.read(f"v{i}"), want, rtol=1e-5, atol=1e-5)
    assert not list(parts.glob("*.h5"))


def _n_stored(out: Path) -> int:
    try:
        return len(FeatureStore(out / "clip.h5").video_ids())
    except Exception:  # noqa: BLE001  (the writer may hold the file)
        return 0


@pytest.mark.slow
def test_real_audio_encoder_through_the_job(tmp_path, videos):
    """PANNs (audio_chunk, tiny and random) with worker-side preprocessing: floor(D/2) rows equal to a
    direct encode. (InternVideo2's window_frames run through the job in test_encoders_internvideo2.)"""
    from mrhd.encoders.factory import build_encoder

    try:
        enc = build_encoder("pann", random_weights=True, size="tiny")
    except MrhdError as err:
        pytest.skip(str(err))
    summary = ExtractJob([enc], tmp_path, num_workers=0, progress=False, batch_size=3).run_videos(
        _sources(videos["a"], videos["c"]))
    assert summary.stored == 2 and not summary.failures
    store = FeatureStore(store_path(tmp_path, "pann"))
    for v, n in (("a", 2), ("c", 2)):
        got = store.read(v)
        assert got.shape == (n, enc.dim)  # floor(5 / 2), floor(4.2 / 2)
        chunks = [x for _, x in iter_audio_chunks(videos[v])]
        want = enc.encode(enc.preprocess(chunks)).numpy().astype(np.dtype(enc.store_dtype)).astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_a_crashed_worker_fails_one_video_and_is_replaced(tmp_path, videos):
    from tests.helpers.extract_encoders import CrashOnce

    enc = StatsEncoder("clip", "clip_frame")
    enc.preprocessor = CrashOnce(str(tmp_path / "crashed.marker"))
    job = ExtractJob([enc], tmp_path / "out", num_workers=1, progress=False, batch_size=2, chunk=1)
    summary = job.run_videos(_sources(videos["a"], videos["c"]))
    assert [(Path(f.path).name, f.reason) for f in summary.failures] == [("a.mp4", "decoder crashed (exit code 3)")]
    store = FeatureStore(store_path(tmp_path / "out", "clip"))
    assert store.video_ids() == ["c"]
    np.testing.assert_allclose(store.read("c"), _expected(videos["c"], "clip"), rtol=1e-5, atol=1e-5)


def test_window_streams_share_a_picker_only_when_they_pick_alike():
    from mrhd.encoders.internvideo2.frames import SegmentMiddles
    from mrhd.extract.worker import StreamSpec, _shared_picker

    a, b, c = (StreamSpec(n, "window_frames", None, p) for n, p in
               (("a", SegmentMiddles(8)), ("b", SegmentMiddles(8)), ("c", SegmentMiddles(4))))
    assert _shared_picker([a, b]) == SegmentMiddles(8)
    assert _shared_picker([a, c]) is None and _shared_picker([]) is None  # whole windows: each picks its own
    assert _shared_picker([a, StreamSpec("d", "window_frames", None)]) is None
    import pickle

    assert pickle.loads(pickle.dumps(a)) == a  # travels to the decoding workers


# ------------------------------------------------------------------ CPU sharing with the workers
_SPIN_PROBE = """
import json, os, sys
from mrhd.extract.cpu_sharing import share_cores_with_decoders
gpu_too = sys.argv[2] == "gpu_too"
before_torch = share_cores_with_decoders(sys.argv[1], gpu_too=gpu_too)
value = os.environ.get("GOMP_SPINCOUNT")
import torch  # noqa: F401
after_torch = share_cores_with_decoders(sys.argv[1], gpu_too=gpu_too)
print(json.dumps([before_torch, value, after_torch]))
"""


@pytest.mark.parametrize("device, gpu_too, env, want", [
    ("cpu", "", {}, [True, "30000", False]),
    ("cuda:0", "", {}, [False, None, False]),
    ("cuda:0", "gpu_too", {}, [True, "30000", False]),
    ("cpu", "", {"GOMP_SPINCOUNT": "7"}, [False, "7", False]),
    ("cuda", "gpu_too", {"GOMP_SPINCOUNT": "7"}, [False, "7", False]),
    ("cpu", "", {"OMP_WAIT_POLICY": "ACTIVE"}, [False, None, False]),
])
def test_openmp_spin_is_shortened_before_torch_loads(device, gpu_too, env, want):
    """libgomp reads GOMP_SPINCOUNT when torch loads it: set before, never after, never over the
    user's own OpenMP settings, and for a GPU run only where asked (`mrhd extract`)."""
    import os

    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", _SPIN_PROBE, device, gpu_too or "-"], cwd=ROOT,
                          env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == want


def test_main_process_threads_leave_the_cores_to_the_decoders_on_a_gpu():
    from mrhd.extract.cpu_sharing import GPU_MAIN_THREADS, main_process_threads

    assert main_process_threads("cpu", None, cores=16) == 16          # on a CPU the model is the work
    assert main_process_threads("cuda:1", None, cores=16) == GPU_MAIN_THREADS < 16
    assert main_process_threads("cuda", None, cores=2) == 2
    assert main_process_threads("cuda", 7, cores=16) == main_process_threads("cpu", 7, cores=16) == 7


def test_extract_command_shortens_the_spin_before_importing_torch(tmp_path, videos):
    """The real command in a fresh interpreter: the setting is made, and made before torch loads;
    --threads sets this process's torch threads."""
    import os

    code = ("import os, sys\nfrom mrhd.cli import main\nassert 'torch' not in sys.modules\n"
            "rc = main(sys.argv[1:])\nimport torch\n"
            "print('SPIN', os.environ.get('GOMP_SPINCOUNT'), rc, 'THREADS', torch.get_num_threads())\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", code, "extract", str(videos["a"]), "--encoders", "clip",
                           "--out", str(tmp_path / "out"), "--random-weights", "--encoder-size", "tiny",
                           "--num-workers", "0", "--no-progress", "--threads", "1"],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "SPIN 30000 0 THREADS 1" in proc.stdout
    assert FeatureStore(tmp_path / "out" / "clip.h5").read("a").shape[0] == 3

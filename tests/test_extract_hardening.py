"""Issue 21, extraction side: no wrong answer with exit 0. A truncated store is repaired, not taken
as busy; a store knows which file each entry came from; a file cut short stores what decoded and
says so; runs sharing a folder share the work; the summary's counts add up; ids are checked before
any work; files honour the umask; bad command lines get one line, no traceback, no output."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mrhd.errors import MrhdError
from mrhd.extract.claims import holder_pid, try_claim
from mrhd.extract.job import ExtractJob
from mrhd.extract.sources import expand_inputs
from mrhd.extract.synthetic import write_video
from mrhd.features.store import FeatureStore, store_path
from tests.helpers.extract_encoders import StatsEncoder
from tests.helpers.videos import write_broken

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three short silent videos in one folder."""
    d = tmp_path_factory.mktemp("clips")
    for i, seconds in enumerate((4.0, 5.0, 6.0)):
        write_video(d / f"v{i}.mp4", duration=seconds, fps=10, width=48, height=32, audio=False)
    return d


def _job(out, **kw) -> ExtractJob:
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    return ExtractJob([StatsEncoder("clip", "clip_frame")], out, **kw)


def _run(out, *inputs, id_from="stem", **kw):
    job = _job(out, **kw)
    return job, job.run_videos(expand_inputs([str(p) for p in inputs], id_from=id_from).sources)


def _counts(summary) -> tuple:
    return (summary.inputs, summary.stored, summary.skipped, summary.by_other_run, summary.partial, summary.failed)


# ------------------------------------------------------------------ 1. a truncated store is repaired
def test_truncated_store_is_salvaged_by_the_next_run_not_taken_as_busy(tmp_path, clips):
    out = tmp_path / "out"
    _run(out, clips)
    main = store_path(out, "clip")
    with open(main, "r+b") as fh:  # disk full, copy cut short
        fh.truncate(main.stat().st_size // 2)
    with pytest.raises(MrhdError, match="damaged or truncated|cannot be read"):
        FeatureStore(main).video_ids()  # a reader says so; it never reads a part of it as the whole
    job, summary = _run(out, clips)
    assert _counts(summary) == (3, 3, 0, 0, 0, 0)  # redone, not "skipped, already stored"
    assert any("truncated" in w.reason for w in summary.warnings)
    assert "WARNING" in summary.report() and "truncated" in summary.report()
    assert FeatureStore(main).video_ids() == ["v0", "v1", "v2"]
    assert not list((out / ".clip.parts").glob("*.h5"))  # merged: parts do not pile up
    assert len(list(out.glob("clip.h5.corrupt-*"))) == 1  # the damaged file is kept aside
    assert _counts(_run(out, clips)[1]) == (3, 0, 3, 0, 0, 0)


def test_a_truncated_store_with_pending_parts_is_not_read_as_the_parts_alone(tmp_path, clips):
    out = tmp_path / "out"
    _run(out, clips)
    main = store_path(out, "clip")
    writer = FeatureStore(main, "a", StatsEncoder("clip", "clip_frame").info, store_dtype="float32")
    writer.write("extra", np.ones((1, 3)), 2.0)  # a part not merged yet
    writer.close_reader()
    with open(main, "r+b") as fh:
        fh.truncate(main.stat().st_size // 2)
    with pytest.raises(MrhdError, match="damaged or truncated"):
        FeatureStore(main).video_ids()  # was: ["extra"], as if the store held one video


# ------------------------------------------------------------------ 2. which file an entry came from
def test_another_file_with_the_same_id_is_refused_and_a_changed_file_is_extracted_again(tmp_path, clips):
    out = tmp_path / "out"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(clips / "v0.mp4", a / "clip.mp4")
    shutil.copy(clips / "v1.mp4", b / "clip.mp4")  # same stem, another video
    _run(out, a / "clip.mp4")
    store = FeatureStore(store_path(out, "clip"))
    first = store.read("clip")
    source = store.source_of("clip")
    assert source["path"] == str((a / "clip.mp4").resolve()) and source["size"] == (a / "clip.mp4").stat().st_size
    assert len(source["sha256"]) == 64
    del store
    job, summary = _run(out, b / "clip.mp4")
    assert _counts(summary) == (1, 0, 0, 0, 0, 1) and job.encoders[0].calls == 0  # refused before decoding
    assert "another file" in summary.failures[0].reason and "--video-id-from" in summary.failures[0].reason
    np.testing.assert_array_equal(FeatureStore(store_path(out, "clip")).read("clip"), first)  # kept
    # refused in every store, also where the id is still free: else the stores would mix two videos
    both = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("slowfast", "slowfast_clip")], out,
                      num_workers=0, progress=False)
    summary = both.run_videos(expand_inputs([str(b / "clip.mp4")]).sources)
    assert _counts(summary) == (1, 0, 0, 0, 0, 1) and {f.stream for f in summary.failures} == {"clip", "slowfast"}
    assert FeatureStore(store_path(out, "slowfast")).video_ids() == []
    # the same content elsewhere (a copy, a move) is the same video: skipped without work
    shutil.copy(a / "clip.mp4", tmp_path / "clip.mp4")
    assert _counts(_run(out, tmp_path / "clip.mp4")[1]) == (1, 0, 1, 0, 0, 0)
    # the file changed in place: its old features are stale, it is extracted again (and said so)
    shutil.copy(clips / "v2.mp4", a / "clip.mp4")
    job, summary = _run(out, a / "clip.mp4")
    assert _counts(summary) == (1, 1, 0, 0, 0, 0) and "changed since" in summary.warnings[0].reason
    assert FeatureStore(store_path(out, "clip")).read("clip").shape[0] == 3  # v2: 6 s
    # --overwrite replaces another file's entry
    assert _counts(_run(out, b / "clip.mp4", overwrite=True)[1]) == (1, 1, 0, 0, 0, 0)
    assert FeatureStore(store_path(out, "clip")).source_of("clip")["path"] == str((b / "clip.mp4").resolve())


def test_an_entry_written_before_sources_were_recorded_is_still_read_and_skipped(tmp_path, clips):
    out = tmp_path / "out"
    with FeatureStore(store_path(out, "clip"), "a", StatsEncoder("clip", "clip_frame").info,
                      store_dtype="float32") as store:
        store.write("v0", np.ones((2, 3)), 4.0)  # no source: as older versions wrote
    assert FeatureStore(store_path(out, "clip")).source_of("v0") is None
    assert _counts(_run(out, clips / "v0.mp4")[1]) == (1, 0, 1, 0, 0, 0)


def test_video_id_from_path_and_hash(tmp_path, clips):
    tree = tmp_path / "tree"
    for sub, src in (("cooking", "v0"), ("sports", "v1")):
        (tree / sub).mkdir(parents=True)
        shutil.copy(clips / f"{src}.mp4", tree / sub / "001.mp4")
    with pytest.raises(MrhdError, match="would share a video id"):
        expand_inputs([str(tree)])
    out = tmp_path / "out"
    job, summary = _run(out, tree, id_from="path")
    assert _counts(summary) == (2, 2, 0, 0, 0, 0)
    assert FeatureStore(store_path(out, "clip")).video_ids() == ["cooking__001", "sports__001"]
    listing = expand_inputs([str(tree / "cooking" / "001.mp4")], id_from="hash")
    from mrhd.io import file_sha256

    digest = file_sha256(tree / "cooking" / "001.mp4")
    assert [(s.video_id, s.sha256) for s in listing.sources] == [(digest[:16], digest)]
    job, summary = _run(tmp_path / "out_hash", tree / "cooking" / "001.mp4", id_from="hash")
    assert FeatureStore(store_path(tmp_path / "out_hash", "clip")).source_of(digest[:16])["sha256"] == digest
    with pytest.raises(MrhdError, match="--video-id-from"):
        expand_inputs([str(tree)], id_from="name")


def test_a_reserved_id_is_reported_before_any_decoding(tmp_path, clips):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(clips / "v0.mp4", d / "qid7.mp4")
    shutil.copy(clips / "v1.mp4", d / "ok.mp4")
    listing = expand_inputs([str(d)])
    assert [s.video_id for s in listing.sources] == ["ok"]
    assert [(Path(p).name, "qid" in r and "--video-id-from hash" in r) for p, r in listing.problems] == [
        ("qid7.mp4", True)]
    with pytest.raises(MrhdError, match="qid"):  # the store's own guard stays
        FeatureStore(store_path(tmp_path / "o", "clip"), "a", StatsEncoder().info).write("qid7", np.ones((1, 3)), 2.0)


# ------------------------------------------------------------------ 3. a file cut short
def test_a_cut_faststart_mp4_stores_the_decoded_duration_and_says_so(tmp_path):
    src = write_video(tmp_path / "whole.mp4", duration=12.0, fps=10, width=64, height=48)
    cut = write_broken(tmp_path / "in" / "cut.mp4", "cut_faststart", source=src)
    out = tmp_path / "out"
    job = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("pann", "audio_chunk")], out,
                     num_workers=0, progress=False)
    summary = job.run_videos(expand_inputs([str(cut)]).sources)
    attrs = FeatureStore(store_path(out, "clip")).read_attrs("cut")
    assert 2.0 < attrs["duration"] < 9.0  # was 12.0, the header's
    assert attrs["n_clips"] == round(attrs["duration"] / 2)
    pann = FeatureStore(store_path(out, "pann")).read_attrs("cut")
    assert pann["duration"] == attrs["duration"] and pann["n_clips"] <= attrs["duration"] // 2
    assert _counts(summary) == (1, 1, 0, 0, 0, 0) and summary.ok  # stored, exit 0, with a warning
    [warning] = summary.warnings
    assert "header says 12.0 s" in warning.reason and "cut" in warning.reason
    assert "WARNING" in summary.report() and "cut.mp4" in summary.report()
    # a whole file says nothing
    whole = ExtractJob([StatsEncoder("clip", "clip_frame")], tmp_path / "out2", num_workers=0, progress=False)
    assert not whole.run_videos(expand_inputs([str(src)]).sources).warnings
    assert FeatureStore(store_path(tmp_path / "out2", "clip")).read_attrs("whole")["duration"] == 12.0


def test_audio_alone_of_a_cut_file_says_so_too(tmp_path):
    cut = write_broken(tmp_path / "cut.mp4", "cut_faststart")
    job = ExtractJob([StatsEncoder("pann", "audio_chunk")], tmp_path / "out", num_workers=0, progress=False)
    summary = job.run_videos(expand_inputs([str(cut)]).sources)
    assert [w.reason.split(" ")[0] for w in summary.warnings] == ["audio"]
    assert FeatureStore(store_path(tmp_path / "out", "pann")).read_attrs("cut")["duration"] < 9.0


# ------------------------------------------------------------------ 5. runs sharing a folder
_SHARING_RUN = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mrhd.extract.job import ExtractJob
    from mrhd.extract.sources import expand_inputs
    from tests.helpers.extract_encoders import StatsEncoder

    class Slow(StatsEncoder):
        def encode(self, batch):
            time.sleep(0.2)
            return super().encode(batch)

    out, folder, go = sys.argv[1:4]
    job = ExtractJob([Slow("clip", "clip_frame")], out, batch_size=1, num_workers=int(sys.argv[4]), progress=False,
                     chunk=1)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.02)
    s = job.run_videos(expand_inputs([folder]).sources)
    print(json.dumps({"stored": s.stored, "skipped": s.skipped, "by_other": s.by_other_run, "failed": s.failed,
                      "calls": job.encoders[0].calls, "report": s.report()}), flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 1])
def test_two_concurrent_runs_share_the_list(tmp_path, num_workers):
    """Two real processes on one output folder: every video is encoded by exactly one of them, both
    finish with every video counted, and the store holds each once and right."""
    src = tmp_path / "in"
    for i in range(8):
        write_video(src / f"v{i}.mp4", duration=4.0, fps=10, width=48, height=32, audio=False)
    out, go = tmp_path / "out", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _SHARING_RUN, str(out), str(src), str(go), str(num_workers)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("go")
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sum(r["stored"] for r in results) == 8, results  # nothing done twice
    assert all(r["stored"] > 0 for r in results), results  # both did a share of it
    for r in results:
        assert r["stored"] + r["skipped"] + r["by_other"] == 8 and r["failed"] == 0, r
        assert r["report"].startswith("8 inputs: ")
    store = FeatureStore(store_path(out, "clip"))
    assert store.video_ids() == [f"v{i}" for i in range(8)]
    _run(tmp_path / "alone", src)
    alone = FeatureStore(store_path(tmp_path / "alone", "clip"))
    for vid in store.video_ids():
        np.testing.assert_allclose(store.read(vid), alone.read(vid), rtol=1e-6)
    assert not list((out / ".clip.parts").glob("*.claim"))  # claims are cleaned up


def test_a_claim_is_exclusive_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "v.claim"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mrhd.extract.claims import try_claim
        claim = try_claim({str(path)!r})
        print("held" if claim else "refused", flush=True)
        time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_claim(path) is None and holder_pid(path) == holder.pid
    finally:
        holder.kill()  # as kill -9 would: no clean-up runs
        holder.wait()
    claim = try_claim(path)  # the kernel dropped the dead holder's lock
    assert claim is not None and holder_pid(path) == os.getpid()
    assert try_claim(path) is None  # one holder at a time, also within a process
    claim.release()
    assert not path.exists() and try_claim(path) is not None


def test_a_video_left_by_a_run_that_failed_on_it_is_taken_over(tmp_path, clips):
    out = tmp_path / "out"
    job = _job(out)
    job._open_stores()
    other = try_claim(job._streams["clip"].store.claim_path("v1"))  # another run works on v1...
    import threading

    threading.Timer(1.0, other.release).start()  # ... and lets go without storing it (it failed)
    summary = job.run_videos(expand_inputs([str(clips)]).sources)
    assert _counts(summary) == (3, 3, 0, 0, 0, 0)
    assert FeatureStore(store_path(out, "clip")).video_ids() == ["v0", "v1", "v2"]


# ------------------------------------------------------------------ 6, 9. the summary and the command line
@pytest.fixture(scope="module")
def mixed(tmp_path_factory, clips) -> Path:
    """Twelve inputs: five good videos, one cut short, one reserved name, four broken, one audio-only."""
    from tests.helpers.videos import write_audio_only

    d = tmp_path_factory.mktemp("mixed")
    for i in range(5):
        write_video(d / f"good{i}.mp4", duration=4.0 + i, fps=10, width=48, height=32)  # with audio
    write_broken(d / "cut.mp4", "cut_faststart")
    (d / "cut_source.mp4").unlink()
    (d / "cut_faststart.mp4").unlink()
    shutil.copy(clips / "v0.mp4", d / "qid7.mp4")
    for kind in ("empty", "garbage", "text", "truncated"):
        write_broken(d / f"{kind}.mp4", kind, source=clips / "v2.mp4")
    write_audio_only(d / "song.mp4")
    assert len(list(d.iterdir())) == 12
    return d


def test_the_summary_counts_add_up_and_name_each_category(tmp_path, mixed):
    out = tmp_path / "out"
    listing = expand_inputs([str(mixed), str(tmp_path / "missing.mp4")])
    job = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("pann", "audio_chunk")], out,
                     num_workers=0, progress=False)
    job.summary.add_bad_inputs(listing.problems)
    summary = job.run_videos(listing.sources)
    s = summary
    assert s.inputs == 13 == s.stored + s.skipped + s.by_other_run + s.partial + s.failed
    # good0-4 and the cut file: both streams; the audio-only file: pann only; the others: nothing
    assert (s.stored, s.partial, s.failed) == (6, 1, 6), s.report()
    head = s.report().splitlines()[0]
    assert head == "13 inputs: 6 stored, 0 already stored, 1 partly stored (a stream failed), 6 failed", head
    failed_names = {Path(f.path).name for f in s.failures}
    assert failed_names == {"empty.mp4", "garbage.mp4", "text.mp4", "truncated.mp4", "song.mp4", "qid7.mp4",
                            "missing.mp4"}
    assert not s.ok  # exit status 1
    again = ExtractJob([StatsEncoder("clip", "clip_frame"), StatsEncoder("pann", "audio_chunk")], out,
                       num_workers=0, progress=False).run_videos(listing.sources)
    assert again.report().splitlines()[0] == "11 inputs: 0 stored, 6 already stored, 1 partly stored (a stream failed), 4 failed"


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    from mrhd.cli import main

    rc = main(["extract", *argv])
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.mark.parametrize("case", ["same-id", "bad-id-rule", "missing-queries", "nothing-to-do", "queries-dir"])
def test_bad_command_lines_are_one_line_and_leave_nothing(tmp_path, clips, capsys, case):
    twin = tmp_path / "twin" / "v0.mp4"
    twin.parent.mkdir()
    shutil.copy(clips / "v1.mp4", twin)
    out = tmp_path / "out"
    argv, message = {
        "same-id": ([str(clips), str(twin)], "2 inputs would share a video id.*'v0'.*--video-id-from path"),
        "bad-id-rule": ([str(clips), "--video-id-from", "name"], "--video-id-from 'name': choose one of stem, path, hash"),
        "missing-queries": ([str(clips), "--queries", str(tmp_path / "nope.jsonl")], "--queries .*nope.jsonl: file not found"),
        "nothing-to-do": ([], "give at least one PATH"),
        "queries-dir": (["--queries", str(tmp_path)], "file not found"),
    }[case]
    rc, stdout, stderr = _cli(capsys, [*argv, "--encoders", "clip", "--out", str(out), "--random-weights",
                                       "--encoder-size", "tiny", "--num-workers", "0"])
    assert rc == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    import re

    assert re.search(message, stderr), stderr
    assert not out.exists()  # no work, no output


@pytest.mark.slow
def test_a_broken_file_in_a_batch_is_named_and_the_others_complete(tmp_path, clips, capsys):
    """The real command with a decoding worker: the broken file is named with its reason, the
    others are stored, the counts add up, the exit status is 1."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        shutil.copy(clips / f"v{i}.mp4", d / f"v{i}.mp4")
    write_broken(d / "broken.mp4", "truncated", source=clips / "v2.mp4")
    out = tmp_path / "out"
    rc, stdout, stderr = _cli(capsys, [str(d), "--encoders", "clip", "--out", str(out), "--random-weights",
                                       "--encoder-size", "tiny", "--num-workers", "1", "--no-progress"])
    assert rc == 1 and "Traceback" not in stderr
    lines = stdout.splitlines()
    assert lines[0] == "4 inputs: 3 stored, 0 already stored, 1 failed", stdout
    assert len(lines) == 2 and lines[1].startswith(f"  FAILED {d / 'broken.mp4'} [clip]: "), stdout
    assert FeatureStore(store_path(out, "clip")).video_ids() == ["v0", "v1", "v2"]


# ------------------------------------------------------------------ 8. files honour the umask
def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


def test_every_file_written_honours_the_umask(tmp_path, clips, monkeypatch):
    """umask 002 (a group-shared folder): files 664, folders 775 -- store, parts, lock, claims, a
    salvaged store and predict's feature cache alike (mkstemp-style 600 files would lock the group
    out)."""
    old = os.umask(0o002)
    try:
        out = tmp_path / "out"
        job = _job(out)
        job._open_stores()
        parts = out / ".clip.parts"
        claim = try_claim(job._streams["clip"].store.claim_path("v0"))
        assert stat.S_IMODE((parts / "v0.claim").stat().st_mode) == 0o664
        claim.release()
        writer = FeatureStore(store_path(out, "clip"), "a", StatsEncoder().info, store_dtype="float32")
        writer.write("pending", np.ones((1, 3)), 2.0)  # a part, as a killed run leaves it
        assert stat.S_IMODE((parts / "pending.h5").stat().st_mode) == 0o664
        writer.close_reader()
        _run(out, clips)
        main = store_path(out, "clip")
        with open(main, "r+b") as fh:
            fh.truncate(main.stat().st_size // 2)
        _run(out, clips)  # salvaged: a new main file
        from mrhd.inference.video_features import FeatureCache

        cache = FeatureCache(tmp_path / "cache")
        cache.save("ab" * 32, "clip", "k", np.ones((2, 3), np.float32), 4.0, "{}")
        modes = {**_modes(out), **{f"cache/{k}": v for k, v in _modes(tmp_path / "cache").items()}}
    finally:
        os.umask(old)
    assert "clip.h5" in modes and ".clip.h5.lock" in modes and any(k.startswith("clip.h5.corrupt-") for k in modes)
    assert any(k.endswith(".npy") for k in modes) and any(k.endswith(".json") for k in modes)
    wrong = {k: oct(m) for k, m in modes.items()
             if m != (0o775 if (out / k).is_dir() or (tmp_path / k).is_dir() else 0o664)}
    assert not wrong, wrong


# ------------------------------------------------------------------ 7. --queries: several files, no videos needed
def test_queries_of_several_files_without_videos_and_a_clashing_annotation_set(tmp_path, capsys):
    train, val, other = tmp_path / "train.jsonl", tmp_path / "val.jsonl", tmp_path / "other.jsonl"
    train.write_text('{"qid": 1, "query": "a dog runs"}\n{"qid": 2, "query": "a cat sleeps"}\n')
    val.write_text('{"qid": 3, "query": "rain falls"}\n')
    other.write_text('{"qid": 3, "query": "a car turns"}\n')  # another dataset, same qid numbers
    out = tmp_path / "out"
    common = ["--encoders", "clip", "--out", str(out), "--random-weights", "--encoder-size", "tiny"]
    rc, stdout, _ = _cli(capsys, [*common, "--queries", str(train), str(val)])
    assert rc == 0 and stdout.startswith("no videos; 3 queries encoded"), stdout
    assert sorted(p.name for p in out.glob("*.h5")) == ["clip_text.h5"]  # no empty video store
    text = FeatureStore(store_path(out, "clip_text"))
    assert text.query_ids() == ["1", "2", "3"] and text.entry_attrs("qid3")["query"] == "rain falls"
    rc, stdout, _ = _cli(capsys, [*common, "--queries", str(other)])
    assert rc == 1 and "qid 3 is already in clip_text.h5 with another query ('rain falls')" in stdout, stdout
    tokens = FeatureStore(store_path(out, "clip_text")).read_text(3)[0]
    rc, stdout, _ = _cli(capsys, [*common, "--queries", str(val)])  # the same text again: nothing to do
    assert rc == 0 and "queries encoded" not in stdout
    np.testing.assert_array_equal(FeatureStore(store_path(out, "clip_text")).read_text(3)[0], tokens)


def test_with_the_progress_bar_a_failure_is_named_when_it_happens(tmp_path, clips, capsys):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(clips / "v0.mp4", d / "a.mp4")
    write_broken(d / "b.mp4", "garbage")
    shutil.copy(clips / "v1.mp4", d / "c.mp4")
    summary = _job(tmp_path / "out", progress=True).run_videos(expand_inputs([str(d)]).sources)
    err = capsys.readouterr().err
    assert f"mrhd extract: FAILED {d / 'b.mp4'} [clip]: not a readable video" in err
    assert _counts(summary) == (3, 2, 0, 0, 0, 1)

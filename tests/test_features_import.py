"""`mrhd features import`: every released layout read back equal to the source arrays, the summary,
resume after a kill, and the bad inputs (unknown layout, missing stream, other widths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrhd.cli import main
from mrhd.errors import MrhdError
from mrhd.features.importing import import_features
from mrhd.features.profiles import load_profile, open_stores
from mrhd.features.store import FeatureStore, store_path
from tests.helpers import releases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_store_equals(out, release, *, dtypes=True):
    """Every array of ``release`` is in ``out`` with the same numbers (and dtype), nothing else."""
    for stream, arrays in release.items():
        store = FeatureStore(store_path(out, stream))
        text = stream.endswith("_text") or stream == "glove"
        listed = store.query_ids() if text else store.video_ids()
        assert listed == sorted(arrays), stream
        for key, want in arrays.items():
            if text:
                tokens, pooled = store.read_text(key)
                assert np.array_equal(tokens, want.astype(np.float32)), (stream, key)
                if stream in release.pooled:
                    assert np.array_equal(pooled, release.pooled[stream][key])
                name = f"qid{key}"
            else:
                assert np.array_equal(store.read(key), want.astype(np.float32)), (stream, key)
                name = key
            if dtypes:
                assert store.describe(name)[1] == want.dtype, (stream, key)
        store.close_reader()


def test_moment_detr_layout_round_trip(tmp_path, capsys):
    src = tmp_path / "features"
    release = releases.moment_detr(src)
    os.makedirs(src / "clip_sub_features")           # another folder of the tarball: told, not read
    rc = main(["features", "import", str(src), "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1                                   # the broken file makes the run report failure
    assert_store_equals(tmp_path / "out", release)
    assert "layout moment_detr" in out and "qvhighlights video ids" in out
    assert release.broken[0] in out                  # the broken file is named
    assert "clip_sub_features/" in out               # and what no rule read
    # SlowFast is one clip longer than CLIP for every video: reported, stored as released
    assert f"{len(releases.QVH_VIDS)} video(s) whose streams differ in length (by at most 2" in out
    clip = FeatureStore(store_path(tmp_path / "out", "clip"))
    assert clip.info["clip_len"] == 2.0 and clip.info["weights"] == "released:moment_detr"
    assert clip.info["recipe"]["files"] == "clip_features/*.npz"
    source = json.loads(clip.root["source"])
    assert source["layout"] == "moment_detr" and source["path"] == str(src.resolve())
    assert clip.read_attrs(releases.QVH_VIDS[0])["source"] == f"clip_features/{releases.QVH_VIDS[0]}.npz"


def test_charades_release_has_one_second_clips_and_vgg_a_sixth(tmp_path):
    release = releases.cg_detr_charades(tmp_path / "charades")
    summary = import_features(tmp_path / "charades", tmp_path / "out")
    assert summary.dataset == "charades_sta" and not summary.broken
    assert_store_equals(tmp_path / "out", release)
    assert FeatureStore(store_path(tmp_path / "out", "clip")).info["clip_len"] == 1.0
    assert FeatureStore(store_path(tmp_path / "out", "vgg")).info["clip_len"] == pytest.approx(1 / 6)


def test_tacos_text_without_qid_prefix_and_npy_fallback(tmp_path):
    release = releases.cg_detr_tacos(tmp_path / "tacos")
    summary = import_features(tmp_path / "tacos", tmp_path / "out")
    assert summary.dataset == "tacos"
    assert_store_equals(tmp_path / "out", release)
    assert FeatureStore(store_path(tmp_path / "out", "clip")).info["clip_len"] == 2.0


@pytest.mark.parametrize("writer, layout", [
    (releases.univtg, "univtg"), (releases.mesm, "mesm"), (releases.umt_tvsum, "umt"),
    (releases.internvideo2, "internvideo2")])
def test_each_layout_is_recognised_and_read_back_exactly(tmp_path, writer, layout):
    release = writer(tmp_path / "src")
    summary = import_features(tmp_path / "src", tmp_path / "out")
    assert summary.layout == layout and not summary.broken
    assert {r.stream for r in summary.streams} == set(release)
    assert_store_equals(tmp_path / "out", release, dtypes=layout != "internvideo2")


def test_internvideo2_dtypes_and_window_from_folder_name(tmp_path):
    release = releases.internvideo2(tmp_path / "qv")
    import_features(tmp_path / "qv", tmp_path / "out")
    store = FeatureStore(store_path(tmp_path / "out", "internvideo2"))
    assert store.describe(releases.QVH_VIDS[0])[1] == np.float16        # float16 stays float16
    text = FeatureStore(store_path(tmp_path / "out", "internvideo2_text"))
    assert text.describe("qid5")[1] == np.float32                        # bfloat16: its exact float32 values
    assert np.array_equal(text.read_text(5)[0], release["internvideo2_text"]["5"])
    assert store.info["clip_len"] == 2.0
    # the released text is CLIP-6B's LLaMA tokens (4096-d), not the 1B default's 1024: the 6B profile reads it
    assert text.info["dim"] == 4096
    assert set(open_stores(tmp_path / "out", load_profile("internvideo2_6b"))) == {"internvideo2", "internvideo2_text"}
    with pytest.raises(MrhdError, match="has dim 4096, expected 1024 .*--profile internvideo2_6b"):
        open_stores(tmp_path / "out", load_profile("internvideo2"))
    releases.internvideo2(tmp_path / "ch", window="w1s", vids=releases.CHARADES_VIDS)
    import_features(tmp_path / "ch", tmp_path / "out_ch")
    assert FeatureStore(store_path(tmp_path / "out_ch", "internvideo2")).info["clip_len"] == 1.0


def test_glove_vectors_of_the_query_words(tmp_path):
    queries = [{"qid": 0, "vid": "AO8RW", "query": "a person Opens the door."},
               {"qid": 1, "vid": "Y6R7T", "query": "zyxunknown person sits"}]
    ann = tmp_path / "charades_train_release.jsonl"
    ann.write_text("".join(json.dumps(q) + "\n" for q in queries))
    release, vectors = releases.glove(tmp_path / "glove", queries)
    with pytest.raises(MrhdError, match="--queries"):
        import_features(tmp_path / "glove", tmp_path / "out")
    summary = import_features(tmp_path / "glove", tmp_path / "out", queries=ann)
    assert summary.layout == "glove"
    assert_store_equals(tmp_path / "out", release)
    tokens = FeatureStore(store_path(tmp_path / "out", "glove")).read_text(1)[0]
    assert not tokens[0].any() and np.array_equal(tokens[1], vectors["person"])   # unknown word: zeros


def test_rerun_skips_what_is_stored(tmp_path):
    src = tmp_path / "features"
    releases.moment_detr(src, broken=False)
    first = import_features(src, tmp_path / "out")
    again = import_features(src, tmp_path / "out")
    assert all(r.imported == 0 and r.skipped > 0 for r in again.streams)
    assert [r.skipped for r in again.streams] == [r.imported for r in first.streams]


def test_queries_coverage_is_reported(tmp_path):
    src = tmp_path / "features"
    releases.moment_detr(src, broken=False, audio=False, blip=False)
    ann = tmp_path / "ann.jsonl"
    ann.write_text(json.dumps({"qid": 2579, "vid": releases.QVH_VIDS[0], "query": "q"}) + "\n"
                   + json.dumps({"qid": 1, "vid": "missing_0.0_150.0", "query": "q"}) + "\n")
    summary = import_features(src, tmp_path / "out", queries=ann)
    assert "clip: 1/2 videos of ann.jsonl" in summary.report()
    assert "clip_text: 1/2 queries of ann.jsonl" in summary.report()


# ---- bad inputs: one line, non-zero exit, nothing written ---------------------------------------
def _fails(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err
    return err


def test_unknown_layout_and_folder(tmp_path, capsys):
    (tmp_path / "src" / "random_stuff").mkdir(parents=True)
    _fails(capsys, ["features", "import", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
           "holds no released feature layout")
    _fails(capsys, ["features", "import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], "not found")
    with pytest.raises(MrhdError, match="unknown layout"):
        import_features(tmp_path / "src", tmp_path / "out", layout="no_such_layout")
    with pytest.raises(SystemExit):   # argparse refuses a layout it does not list
        main(["features", "import", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--layout", "nope"])
    assert not (tmp_path / "out").exists()


def test_missing_stream_is_refused_before_writing(tmp_path, capsys):
    releases.moment_detr(tmp_path / "src", audio=False, broken=False)
    err = _fails(capsys, ["features", "import", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                          "--streams", "clip,pann"], "has no pann files")
    assert "pann_features" in err
    assert not (tmp_path / "out").exists()


def test_dims_that_disagree_are_refused_before_writing(tmp_path, capsys):
    src = tmp_path / "src"
    releases.moment_detr(src, broken=False, audio=False, blip=False)
    for f in (src / "clip_features").iterdir():       # ViT-L/14 features in the ViT-B/32 folder
        np.savez(f, features=np.zeros((75, 768), np.float32))
    _fails(capsys, ["features", "import", str(src), "--out", str(tmp_path / "out")], "width 768")
    assert not (tmp_path / "out").exists()


def test_store_from_other_files_is_refused(tmp_path):
    releases.univtg(tmp_path / "u")
    import_features(tmp_path / "u", tmp_path / "out")
    releases.moment_detr(tmp_path / "m", broken=False)
    with pytest.raises(MrhdError, match="--overwrite"):
        import_features(tmp_path / "m", tmp_path / "out")
    import_features(tmp_path / "m", tmp_path / "out", overwrite=True)
    assert FeatureStore(store_path(tmp_path / "out", "clip")).info["weights"] == "released:moment_detr"


KILLER = """
import os, sys
import mrhd.features.importing as imp
from mrhd.features.store import FeatureStore
imp.BATCH_ENTRIES = 1
written = [0]
original = FeatureStore.write_entries
def write_then_die(self, entries, part=None):
    original(self, entries, part)
    written[0] += 1
    if written[0] == 4:
        os._exit(9)      # no cleanup, no commit: as a kill -9
FeatureStore.write_entries = write_then_die
imp.import_features(sys.argv[1], sys.argv[2])
"""


def test_rerun_after_a_kill_completes_the_import(tmp_path):
    src = tmp_path / "features"
    release = releases.moment_detr(src, broken=False)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(src), str(out)], env=env, capture_output=True)
    assert killed.returncode == 9, killed.stderr.decode()
    parts = list(out.glob(".*.parts/*.h5"))
    assert parts                                       # whole batches survived the kill as parts
    summary = import_features(src, out)
    assert sum(r.skipped for r in summary.streams) == 4
    assert_store_equals(out, release)
    assert not list(out.glob(".*.parts/*.h5"))         # merged


def test_hand_written_store_following_the_docs_is_read(tmp_path, capsys, monkeypatch):
    """docs/STORE.md's h5py example, run as written: the store it makes is read and verifies clean."""
    doc = (Path(ROOT) / "docs" / "STORE.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/STORE.md", "exec"), {})
    store = FeatureStore(tmp_path / "features" / "clip.h5")
    assert store.video_ids() == ["RoripwjYFp8_60.0_210.0"] and store.info["clip_len"] == 2.0
    assert store.read("RoripwjYFp8_60.0_210.0").shape == (75, 512)
    assert store.describe("RoripwjYFp8_60.0_210.0")[1] == np.float16
    text = FeatureStore(tmp_path / "features" / "clip_text.h5")
    tokens, pooled = text.read_text(2579)
    assert tokens.shape == (14, 512) and pooled.shape == (512,)
    assert main(["features", "verify", str(tmp_path / "features"), "--no-progress"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_info_and_verify_report_problems(tmp_path, capsys):
    with h5py.File(tmp_path / "clip.h5", "w") as f:
        f.attrs.update({"format": "mrhd-features/1", "encoder": "clip", "dim": 512})   # no clip_len
        f.create_dataset("good", data=np.ones((4, 512), np.float32))
        f.create_dataset("nan", data=np.full((2, 512), np.nan, np.float32))
        f.create_dataset("wide", data=np.ones((2, 768), np.float32))
    assert main(["features", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no 'clip_len' root attribute" in out and "wide: width 768" in out
    assert "NaN" not in out                                             # info does not read the numbers
    assert main(["features", "verify", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "nan: 1024 values are NaN or infinite" in out


def test_ctrl_c_keeps_whole_batches_and_says_how_to_finish(tmp_path, monkeypatch, capsys):
    import mrhd.features.importing as importing

    src = tmp_path / "features"
    release = releases.moment_detr(src, broken=False, audio=False, blip=False)
    monkeypatch.setattr(importing, "BATCH_ENTRIES", 1)
    calls = []
    original = FeatureStore.write_entries

    def interrupted(self, entries, part=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(part)
        original(self, entries, part)

    monkeypatch.setattr(FeatureStore, "write_entries", interrupted)
    rc = main(["features", "import", str(src), "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 130 and "interrupted: re-run the same command to finish" in out
    assert FeatureStore(store_path(tmp_path / "out", "slowfast")).video_ids() == sorted(release["slowfast"])[:2]
    monkeypatch.setattr(FeatureStore, "write_entries", original)
    assert main(["features", "import", str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert_store_equals(tmp_path / "out", release)


def test_writing_api_of_the_docs(tmp_path, monkeypatch):
    """docs/STORE.md's FeatureStore example, run as written, then the checks it promises."""
    doc = (Path(ROOT) / "docs" / "STORE.md").read_text()
    example = doc.split("## Writing from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/STORE.md", "exec"), {})
    feats = np.random.default_rng(0).normal(size=(75, 512))
    store = FeatureStore(tmp_path / "out" / "clip.h5")
    assert store.video_ids() == ["video_1", "video_2"] and store.info["clip_len"] == 2.0
    assert np.array_equal(store.read("video_1"), feats.astype(np.float32))    # create(dtype="float32"), the default
    assert store.describe("video_1")[1] == np.float32
    assert store.describe("video_2")[1] == np.float16 and store.read_attrs("video_1")["duration"] == 150.0
    assert not list((tmp_path / "out").glob(".clip.parts/*.h5"))                             # committed
    tokens, pooled = FeatureStore(tmp_path / "out" / "clip_text.h5").read_text(2579)
    assert tokens.shape == (14, 512) and pooled.shape == (512,)
    writer = FeatureStore.create(tmp_path / "out" / "clip.h5", stream="clip", dim=512, clip_len=2.0,
                                 weights="my-weights", recipe={"fps": 0.5})
    for name, array in (("a/b", np.ones((2, 512))), ("pooled/v1", np.ones(512)), ("pooled", np.ones((2, 512))),
                        ("..", np.ones((2, 512))), ("v3", np.ones((2, 256))), ("pooled/qid1", np.ones((2, 512)))):
        with pytest.raises(MrhdError, match="cannot be stored|expected"):
            writer.write_entries({"ok": (np.ones((2, 512)), {}), name: (array, {})})
    writer.close()
    assert FeatureStore(tmp_path / "out" / "clip.h5").video_ids() == ["video_1", "video_2"]   # nothing half-written
    with pytest.raises(MrhdError, match="clip_len"):
        FeatureStore.create(tmp_path / "out" / "clip.h5", stream="clip", dim=512, clip_len=1.0,
                            weights="my-weights", recipe={"fps": 0.5})


def test_a_store_left_by_a_killed_merge_is_rebuilt_and_said_in_the_summary(tmp_path, recwarn):
    src = tmp_path / "features"
    release = releases.moment_detr(src, broken=False, audio=False, blip=False)
    import_features(src, tmp_path / "out")
    with h5py.File(store_path(tmp_path / "out", "clip"), "a") as f:   # as a merge killed mid-way leaves it
        f.attrs["merging"] = 1
    summary = import_features(src, tmp_path / "out")
    assert "warning: " in summary.report() and "interrupted merge" in summary.report()
    assert not [w for w in recwarn if "interrupted merge" in str(w.message)]   # no Python warning line
    assert_store_equals(tmp_path / "out", release)

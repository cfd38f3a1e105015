"""The HDF5 feature store: layout and attributes of DESIGN.md, atomic writes, recipe/weights checks,
and survival of a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrhd.encoders.base import EncoderInfo
from mrhd.errors import MrhdError
from mrhd.features.store import FORMAT, FeatureStore, root_attrs, store_path

ROOT = Path(__file__).resolve().parents[1]


def _info(weights="random", recipe=None, dim=4, stream="clip"):
    return EncoderInfo(stream=stream, dim=dim, weights=weights, recipe=recipe or {"fps": 0.5, "layer": "x"})


def test_layout_and_root_attributes(tmp_path):
    path = store_path(tmp_path, "clip")
    feats = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    with FeatureStore(path, "a", _info()) as store:
        store.write("vid_a", feats, duration=5.5)
        assert store.has("vid_a")  # visible before the merge
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        assert f.attrs["encoder"] == "clip"
        assert int(f.attrs["dim"]) == 4
        assert float(f.attrs["clip_len"]) == 2.0
        assert f.attrs["weights"] == "random"
        assert json.loads(f.attrs["recipe"]) == {"fps": 0.5, "layer": "x"}
        ds = f["vid_a"]
        assert ds.shape == (3, 4) and ds.dtype == np.float16
        assert float(ds.attrs["duration"]) == 5.5 and int(ds.attrs["n_clips"]) == 3
    assert not list((tmp_path / ".clip.parts").glob("*.h5"))  # merged and cleaned up
    reader = FeatureStore(path)
    assert reader.video_ids() == ["vid_a"]
    assert reader.info["recipe"] == {"fps": 0.5, "layer": "x"} and reader.info["dim"] == 4
    out = reader.read("vid_a")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, feats.astype(np.float16).astype(np.float32))
    assert reader.read_attrs("vid_a") == {"duration": 5.5, "n_clips": 3}
    assert not reader.has("vid_b")
    with pytest.raises(MrhdError, match="vid_b"):
        reader.read("vid_b")


def test_a_lock_released_before_it_is_looked_at_is_taken_again(tmp_path, monkeypatch):
    """HDF5 refuses its lock while another process has the file open for a moment (a concurrent run's
    short read); when that handle is gone by the time the writer looks, the writer tries again instead
    of failing the run (test_two_concurrent_runs_share_the_list failed on it in a CI run)."""
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("vid_a", np.ones((2, 4), np.float32), duration=4.0)
    real, refused = h5py.File, []

    def busy_once(name, mode="r", *args, **kwargs):
        if mode == "a" and not refused:
            refused.append(name)
            raise BlockingIOError(11, "Unable to synchronously open file (unable to lock file, errno = 11, "
                                      "error message = 'Resource temporarily unavailable')")
        return real(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", busy_once)
    with FeatureStore(path, "a", _info()) as store:
        store.write("vid_b", np.zeros((3, 4), np.float32), duration=6.0)
    monkeypatch.undo()
    assert refused == [path]
    assert FeatureStore(path).video_ids() == ["vid_a", "vid_b"]
    with h5py.File(path, "r") as f:   # merged into the main file, not left waiting in a part
        assert "vid_b" in f


def test_text_entries(tmp_path):
    path = store_path(tmp_path, "clip_text")
    info = _info(stream="clip_text")
    tokens = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with FeatureStore(path, "a", info, store_dtype="float32") as store:
        store.write_texts([(7, tokens, tokens[-1]), (8, tokens[:2], None)])
    reader = FeatureStore(path)
    got, pooled = reader.read_text(7)
    np.testing.assert_array_equal(got, tokens)
    np.testing.assert_array_equal(pooled, tokens[-1])
    got8, pooled8 = reader.read_text("8")
    assert got8.shape == (2, 4) and pooled8 is None
    assert reader.query_ids() == ["7", "8"]
    assert reader.video_ids() == []
    with h5py.File(path, "r") as f:
        assert f["qid7"].shape == (5, 4) and f["pooled/qid7"].shape == (4,)


def test_other_weights_or_recipe_is_an_error(tmp_path):
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("v", np.zeros((1, 4)), 1.0)
    with pytest.raises(MrhdError, match="weights='random'"):
        FeatureStore(path, "a", _info(weights="openai"))
    with pytest.raises(MrhdError, match="another recipe"):
        FeatureStore(path, "a", _info(recipe={"fps": 1.0, "layer": "x"}))
    with pytest.raises(MrhdError, match="dim"):
        FeatureStore(path, "a", _info(dim=8))
    # the same settings reopen fine; "w" starts over with the new settings
    FeatureStore(path, "a", _info()).close()
    FeatureStore(path, "w", _info(weights="openai")).close()
    assert FeatureStore(path).info["weights"] == "openai"
    assert FeatureStore(path).video_ids() == []


def test_pending_parts_from_other_settings_are_refused(tmp_path):
    path = store_path(tmp_path, "clip")
    store = FeatureStore(path, "a", _info())
    store.write("v", np.ones((2, 4)), 4.0)  # left as a part, never committed
    with pytest.raises(MrhdError, match="another recipe"):
        FeatureStore(path, "a", _info(recipe={"other": 1}))


def test_incomplete_dataset_is_not_taken_as_stored(tmp_path):
    path = store_path(tmp_path, "clip")
    store = FeatureStore(path, "a", _info())
    store.write("done", np.ones((2, 4)), 4.0)
    store.commit()
    store.write("half", np.full((3, 4), 7.0), 6.0)   # its part stays pending
    with h5py.File(path, "a") as f:  # what a merge of "half" killed before `complete` leaves
        f.attrs["merging"] = 1
        f.create_dataset("half", data=np.ones((1, 4), np.float16))
    reader = FeatureStore(path)
    assert reader.video_ids() == ["done", "half"]
    assert np.array_equal(reader.read("half"), np.full((3, 4), 7.0, np.float32))   # never the cut copy
    assert reader.describe("half")[0] == (3, 4)


def _hand_written_store_with_a_killed_merge(path):
    """A store written by another tool (no `complete` flags), into which a merge of "half" was then
    killed: `merging` set, "half" cut short and unflagged, its part still pending."""
    with h5py.File(path, "w") as f:
        f.attrs.update(root_attrs(_info()))
        f.create_dataset("plain", data=np.full((3, 4), 0.5, np.float32))
    store = FeatureStore(path, "a", _info())
    store.write("half", np.full((3, 4), 7.0), 6.0)              # the part the killed merge was copying
    with h5py.File(path, "a") as f:
        f.attrs["merging"] = 1
        f.create_dataset("half", data=np.zeros((1, 4), np.float16))
    return store


def test_a_killed_merge_into_a_hand_written_store_keeps_its_datasets(tmp_path):
    """Under `merging` only what a pending part holds is suspect: the hand-written entries (no part,
    no flag) stay stored for readers and through the next writer's rebuild of the main file."""
    path = store_path(tmp_path, "clip")
    _hand_written_store_with_a_killed_merge(path)
    reader = FeatureStore(path)
    assert reader.video_ids() == ["half", "plain"]
    assert np.array_equal(reader.read("half"), np.full((3, 4), 7.0, np.float32))     # the part's copy
    assert np.array_equal(reader.read("plain"), np.full((3, 4), 0.5, np.float32))
    reader.close_reader()
    with pytest.warns(UserWarning, match="rebuilt it from its 1 finished entries"):
        writer = FeatureStore(path, "a", _info())                  # rebuilds without `merging` and "half"
    with h5py.File(path, "r") as f:
        assert "merging" not in f.attrs and "plain" in f and "half" not in f
    writer.close()                                                  # merges "half" again
    reader = FeatureStore(path)
    assert reader.video_ids() == ["half", "plain"]
    assert np.array_equal(reader.read("half"), np.full((3, 4), 7.0, np.float32))


def test_unflagged_dataset_counts_outside_a_merge(tmp_path):
    """`complete` matters only under a `merging` root flag: a file written in one go by another
    tool needs no per-dataset flag (docs/STORE.md)."""
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("done", np.ones((2, 4)), 4.0)
    with h5py.File(path, "a") as f:
        f.create_dataset("plain", data=np.full((3, 4), 0.5, np.float32))
    reader = FeatureStore(path)
    assert reader.video_ids() == ["done", "plain"]
    assert np.array_equal(reader.read("plain"), np.full((3, 4), 0.5, np.float32))


def test_interrupted_merge_is_rebuilt_from_finished_entries(tmp_path):
    """A main file whose root still says ``merging`` was left by a killed merge: it is rebuilt from
    the entries that merge had finished (HDF5 metadata may be inconsistent even where it reads well),
    its unfinished entries merge again from the parts, and no damaged copy is kept."""
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("old", np.full((2, 4), 3.0), 4.0)
    writer = FeatureStore(path, "a", _info())
    writer.write("new", np.full((3, 4), 5.0), 6.0)  # a part, not merged yet
    writer.close_reader()
    with h5py.File(path, "a") as f:  # what a merge killed after starting on "new" leaves
        f.attrs["merging"] = 1
        f.create_dataset("new", data=np.zeros((1, 4), np.float16))
    with pytest.warns(UserWarning, match="interrupted merge"):
        with FeatureStore(path, "a", _info()) as store:
            store.commit()
    reader = FeatureStore(path)
    assert reader.video_ids() == ["new", "old"]
    np.testing.assert_array_equal(reader.read("new"), np.full((3, 4), 5.0))
    np.testing.assert_array_equal(reader.read("old"), np.full((2, 4), 3.0))
    with h5py.File(path, "r") as f:
        assert "merging" not in f.attrs
    assert not list(tmp_path.glob("clip.h5.corrupt-*"))


def test_corrupt_main_file_is_salvaged(tmp_path):
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("a", np.ones((2, 4)), 4.0)
    path.write_bytes(b"\0" * 64 + path.read_bytes()[64:])  # superblock destroyed
    with pytest.warns(UserWarning, match="damaged"):
        store = FeatureStore(path, "a", _info())
    store.write("b", np.ones((1, 4)), 2.0)
    store.close()
    assert FeatureStore(path).video_ids() == ["b"]
    assert list(tmp_path.glob("clip.h5.corrupt-*"))


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(MrhdError, match="writable"):
        FeatureStore(blocker / "out" / "clip.h5", "a", _info())
    if os.geteuid() == 0:
        return  # root writes through permission bits
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(MrhdError, match="writable"):
            FeatureStore(locked / "clip.h5", "a", _info())
    finally:
        locked.chmod(0o700)


def test_missing_store_for_reading(tmp_path):
    with pytest.raises(MrhdError, match="does not exist"):
        FeatureStore(tmp_path / "clip.h5")


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from mrhd.encoders.base import EncoderInfo
    from mrhd.features.store import FeatureStore
    info = EncoderInfo(stream="clip", dim=64, weights="random", recipe={"r": 1})
    store = FeatureStore(sys.argv[1], "a", info)
    for i in range(100000):
        vid = f"v{i % 400:03d}"
        store.write(vid, np.full((50, 64), i % 400, np.float32), duration=100.0)
        if i % 7 == 6:
            store.commit()
        if i == 20:
            print("ready", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 0.9])
def test_writer_killed_with_sigkill(tmp_path, delay):
    """Kill a writer that commits continuously; every entry that a new writer then sees must be whole
    and right, and the store must keep working."""
    path = store_path(tmp_path, "clip")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    info = EncoderInfo(stream="clip", dim=64, weights="random", recipe={"r": 1})
    with FeatureStore(path, "a", info) as store:
        store.commit()
        ids = store.video_ids()
        assert ids
        for vid in ids:
            feats = store.read(vid)
            assert feats.shape == (50, 64)
            assert np.all(feats == int(vid[1:]))
        store.write("after", np.zeros((1, 64)), 2.0)
    assert "after" in FeatureStore(path).video_ids()
    assert not [p for p in (tmp_path / ".clip.parts").iterdir() if p.name.startswith(".tmp")]


def test_merge_waits_while_another_process_reads(tmp_path):
    """A training job reading the store blocks the merge (HDF5 file lock): the parts stay, readers
    still see them, and a later commit merges them."""
    path = store_path(tmp_path, "clip")
    with FeatureStore(path, "a", _info()) as store:
        store.write("first", np.ones((1, 4)), 2.0)
    reader = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time\n"
                               "f = h5py.File(sys.argv[1], 'r'); print('open', flush=True); time.sleep(60)",
                               str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        store = FeatureStore(path, "a", _info())
        store.write("second", np.full((2, 4), 3.0), 4.0)
        merged = store.commit()
        if merged:
            pytest.skip("HDF5 file locking is disabled here (HDF5_USE_FILE_LOCKING)")
        assert store.has("second") and list((tmp_path / ".clip.parts").glob("*.h5"))
        with pytest.raises(MrhdError, match="another recipe"):  # still checked while the file is held
            FeatureStore(path, "a", _info(recipe={"other": 2}))
    finally:
        reader.kill()
        reader.wait()
    assert store.commit() == 1
    assert FeatureStore(path).video_ids() == ["first", "second"]
    np.testing.assert_array_equal(FeatureStore(path).read("second"), np.full((2, 4), 3.0))
    assert not list(tmp_path.glob("clip.h5.corrupt-*"))  # a busy file is never mistaken for a damaged one

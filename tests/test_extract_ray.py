"""``mrhd extract --ray``: the cluster job writes the store the local job writes (every array byte for
byte, every attribute: the files' provenance, the decoded durations), prints the same summary, keeps
going when a worker process or a whole node is killed, resumes after its driver is killed, and
shares the list with another driver on the same folder.

The cluster is real and local: a head node and two worker nodes (separate raylets with their own
object stores) on loopback, started here and shut down after the module. Encoders are tiny
random-weight CLIP and PANN models in CPU actors; the videos are generated, one of them broken and
one cut short (it decodes shorter than its header says).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError
from mrhd.extract.job import ExtractJob
from mrhd.extract.sources import expand_inputs
from mrhd.extract.synthetic import write_video
from mrhd.features.store import FeatureStore, store_path
from tests.helpers.videos import write_broken

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ("clip", "pann")
BATCH = 3  # clips of consecutive videos share batches
DURATIONS = (5.0, 3.0, 6.5, 4.0, 7.0, 2.5, 5.5)
STORED = len(DURATIONS) + 1  # and the video cut short
INPUTS = STORED + 1  # and the broken one
# the command every cluster run of this module gives (each actor 1 CPU and so 1 torch thread)
ARGS = ["--encoders", ",".join(STREAMS), "--random-weights", "--encoder-size", "tiny", "--batch-size", str(BATCH),
        "--ray-cpus-per-actor", "1", "--no-progress"]
# Ray on loopback only (the node address it would pick is the machine's outward one), no token files
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
MIB = 1024 * 1024


def _require_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ray is not installed; ./run.sh test installs it with the 'all' extra")
        pytest.skip("ray is not installed (pip install 'mrhd[ray]')")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ray-videos")
    for i, duration in enumerate(DURATIONS):
        write_video(d / f"v{i}.mp4", duration=duration, fps=10, width=96, height=64)
    write_broken(d / "v9_truncated.mp4", "truncated", source=d / "v2.mp4")
    with tempfile.TemporaryDirectory() as tmp:  # its helper files stay out of the folder
        shutil.copy(write_broken(Path(tmp) / "v8_cut.mp4", "cut_faststart"), d / "v8_cut.mp4")
    return d


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    ann = tmp_path_factory.mktemp("ray-queries") / "ann.jsonl"
    ann.write_text('{"qid": 1, "query": "a bar sweeps across"}\n{"qid": 2, "query": "a colourful screen"}\n')
    return ann


@pytest.fixture(scope="module")
def local_store(videos, queries, tmp_path_factory) -> Path:
    """The local job's store (its summaries beside it, ``report-*.txt``): decoding inline, one torch
    thread (as each actor here)."""
    out = tmp_path_factory.mktemp("local") / "store"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoders = [build_encoder(s, random_weights=True, size="tiny") for s in STREAMS]
        text = [build_encoder("clip_text", random_weights=True, size="tiny")]
        job = ExtractJob(encoders, out, text_encoders=text, batch_size=BATCH, num_workers=0, progress=False)
        summary = job.run_videos(expand_inputs([str(videos)]).sources)
        (out.parent / "report-videos.txt").write_text(summary.report() + "\n")
        job.run_queries([queries])
    finally:
        torch.set_num_threads(threads)
    assert (summary.inputs, summary.stored, summary.failed, summary.queries) == (INPUTS, STORED, 1, 2)
    assert {f.path for f in summary.failures} == {str(videos / "v9_truncated.mp4")}
    assert [w.path for w in summary.warnings] == [str(videos / "v8_cut.mp4")]
    # the duration stored is the decoded one, not the header's 12 s
    assert FeatureStore(store_path(out, "clip")).read_attrs("v8_cut")["duration"] < 9.0
    (out.parent / "report-queries.txt").write_text(summary.report() + "\n")
    return out


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPU: it only schedules, as on a real cluster) + two worker nodes of 2 CPUs on loopback.
    The last test of the module kills a node and adds another."""
    _require_ray()
    # the nodes' workers import this checkout's mrhd, as every node of a real cluster needs the driver's
    env = {**RAY_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from ray.cluster_utils import Cluster

    # a dead node is noticed after 3 missed health checks of 1 s (Ray's default waits longer)
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * MIB,
                                "_system_config": {"health_check_period_ms": 1000,
                                                   "health_check_failure_threshold": 3}})
    try:
        for _ in range(2):
            c.add_node(num_cpus=2, object_store_memory=80 * MIB)
        c.wait_for_nodes()
        yield c
    finally:
        started = {info.process.pid for node in c.list_all_nodes()
                   for infos in node.all_processes.values() for info in infos}
        started |= set(_ray_processes("ray::"))  # the nodes' worker processes
        c.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    deadline = time.monotonic() + 30
    while (alive := [pid for pid in started if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"Ray processes left running after the cluster's shutdown: {alive}"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited, its parent has not reaped it yet


def _extract(videos: Path, out: Path, address: str, *extra: str, args=ARGS) -> subprocess.Popen:
    env = {**os.environ, **RAY_ENV}  # the cluster fixture put this checkout on PYTHONPATH
    return subprocess.Popen([sys.executable, "-m", "mrhd", "extract", str(videos), "--out", str(out), *args,
                             *extra, "--ray", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 420) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mrhd extract --ray did not finish in {timeout} s:\n{out}\n{err[-3000:]}")
    return proc.returncode, out, err


def _parts(out: Path, stream: str) -> set[str]:
    """Videos of a stream written by this run and not merged yet (finished part files)."""
    folder = out / f".{stream}.parts"
    return {p.stem for p in folder.glob("v*.h5")} if folder.is_dir() else set()


def _wait_for_videos(proc: subprocess.Popen, out: Path, at_least: int, timeout: float = 300) -> None:
    """Until the running job has written ``at_least`` videos in every stream (seen as part files, which
    merges remove)."""
    seen: dict[str, set[str]] = {s: set() for s in STREAMS}
    deadline = time.monotonic() + timeout
    while len(set.intersection(*seen.values())) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"the job ended before writing {at_least} video(s): {proc.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {at_least} video(s) written in {timeout} s")
        for stream in STREAMS:
            seen[stream] |= _parts(out, stream)
        time.sleep(0.05)


def _stored_in_every_stream(out: Path) -> set[str]:
    return set.intersection(*(set(FeatureStore(store_path(out, s)).video_ids()) for s in STREAMS))


def _ray_processes(title: str) -> list[int]:
    """PIDs of Ray worker processes whose title (``ray::<task or actor>``) starts with ``title``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(title):
            pids.append(int(entry.name))
    return pids


def _attrs(obj) -> dict:
    """An HDF5 object's attributes as plain Python values (comparable with ==)."""
    return {k: v.tolist() if isinstance(v, np.ndarray | np.generic) else v for k, v in obj.attrs.items()}


def _objects(f: h5py.File) -> dict[str, h5py.HLObject]:
    """Every group and dataset of a file by its path."""
    found: dict[str, h5py.HLObject] = {}
    f.visititems(lambda name, obj: found.setdefault(name, obj) and None)
    return found


def assert_same_store(got: Path, want: Path, streams=STREAMS) -> None:
    """The same groups and datasets, every array equal byte for byte, every attribute equal (the
    file's, each group's and each entry's: provenance, durations, recipe)."""
    for stream in streams:
        with h5py.File(got / f"{stream}.h5", "r") as g, h5py.File(want / f"{stream}.h5", "r") as w:
            assert _attrs(g) == _attrs(w), stream
            objects, expected = _objects(g), _objects(w)
            assert sorted(objects) == sorted(expected), stream
            for name, b in expected.items():
                a = objects[name]
                assert _attrs(a) == _attrs(b), (stream, name)
                if isinstance(b, h5py.Dataset):
                    assert a.dtype == b.dtype and a.shape == b.shape, (stream, name)
                    assert a[()].tobytes() == b[()].tobytes(), f"{stream}/{name}: arrays differ"
        assert not list((got / f".{stream}.parts").glob("*.h5")), "parts left uncommitted"


def local_report(local_store: Path, queries: bool = False) -> str:
    """The local job's summary, as ``mrhd extract`` prints it (with ``--queries`` or without)."""
    return (local_store.parent / f"report-{'queries' if queries else 'videos'}.txt").read_text()


# ------------------------------------------------------------------------------------- no cluster
def test_ray_missing_says_how_to_install(monkeypatch, tmp_path, capsys):
    from mrhd.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from mrhd.extract.ray_job import import_ray

    with pytest.raises(MrhdError, match=r"pip install 'mrhd\[ray\]'"):
        import_ray()
    video = write_video(tmp_path / "a.mp4", duration=2.5, fps=10, width=64, height=48)
    rc = main(["extract", str(video), "--out", str(tmp_path / "o"), "--encoders", "clip", "--random-weights",
               "--encoder-size", "tiny", "--ray"])
    assert rc != 0 and not (tmp_path / "o" / "clip.h5").exists()
    assert "pip install 'mrhd[ray]'" in capsys.readouterr().err


def test_ray_flags_are_checked(tmp_path, capsys):
    from mrhd.cli import main

    video = write_video(tmp_path / "a.mp4", duration=2.5, fps=10, width=64, height=48)
    base = ["extract", str(video), "--out", str(tmp_path / "o"), "--encoders", "clip", "--random-weights",
            "--encoder-size", "tiny"]
    assert main(base + ["--ray-actors", "2"]) != 0
    assert "need --ray" in capsys.readouterr().err
    # `--ray PATH ...`: the path was taken for the address
    assert main(["extract", "--ray", str(video), str(video), "--out", str(tmp_path / "o"), "--encoders", "clip"]) != 0
    assert "not a cluster address" in capsys.readouterr().err
    assert main(base + ["--ray", "auto", "--device", "cuda:1"]) != 0
    assert "use --device cuda" in capsys.readouterr().err


def test_actor_plan_defaults_and_refusals():
    from mrhd.extract.ray_job import ActorPlan, plan_actors

    gpu_node = {"CPU": 16.0, "GPU": 4.0}
    # every GPU holds one actor of each encoder
    assert plan_actors(gpu_node, 2, "cuda", None, None, None) == ActorPlan(4, 0.5, 1)
    assert plan_actors(gpu_node, 1, "cuda", None, 2.0, 4) == ActorPlan(2, 2.0, 4)
    assert plan_actors({"CPU": 8.0}, 2, "cpu", None, None, 3) == ActorPlan(1, 0.0, 3)
    with pytest.raises(MrhdError, match="no GPU"):
        plan_actors({"CPU": 8.0}, 1, "cuda", None, None, None)
    with pytest.raises(MrhdError, match="none for decoding"):
        plan_actors({"CPU": 4.0}, 2, "cpu", 1, None, 2)
    with pytest.raises(MrhdError, match="needs --device cuda"):
        plan_actors({"CPU": 4.0}, 1, "cpu", None, 0.5, None)


def test_clips_ref_slices_like_the_list_it_stands_for():
    from mrhd.extract.ray_job import ClipsRef

    clips, ref = list(range(7)), ClipsRef("r", 0, 7)
    for a, b in ((3, None), (None, 3), (2, 5)):
        part = ref[a:b]
        assert clips[part.lo:part.hi] == clips[a:b]
    rest = ref[3:]
    assert clips[rest[1:].lo:rest[1:].hi] == clips[3:][1:] and rest[:2] == ClipsRef("r", 3, 5)


# ------------------------------------------------------------------------------------- on a cluster
@pytest.mark.slow
def test_cluster_store_equals_the_local_job(cluster, videos, queries, local_store, tmp_path):
    out = tmp_path / "ray"
    rc, stdout, stderr = _finish(_extract(videos, out, cluster.address, "--queries", str(queries)))
    assert rc == 1, stderr[-3000:]  # the broken video fails, the rest is stored
    # the same summary, line for line: counts, the failed file with its reason, the file cut short
    assert stdout == local_report(local_store, queries=True), stdout
    assert stdout.startswith(f"{INPUTS} inputs: {STORED} stored, 0 already stored, 1 failed; 2 queries encoded")
    assert "FAILED" in stdout and "v9_truncated.mp4 [clip,pann]" in stdout and "WARNING" in stdout
    assert "3 node(s)" in stderr and "1 actor(s) of 1 CPU per encoder" in stderr
    assert_same_store(out, local_store, STREAMS + ("clip_text",))
    # each entry names its file as the driver sees it, as the local job's does (a re-run trusts it)
    source = FeatureStore(store_path(out, "clip")).source_of("v0")
    assert source["path"] == str((videos / "v0.mp4").resolve()) and len(source["sha256"]) == 64
    rc, stdout, _ = _finish(_extract(videos, out, cluster.address))
    assert stdout.startswith(f"{INPUTS} inputs: 0 stored, {STORED} already stored, 1 failed"), stdout


@pytest.mark.slow
def test_an_encoder_that_cannot_start_is_one_line(cluster, videos, tmp_path):
    """Weights that the node does not have: the actor's error, before any video starts."""
    proc = _extract(videos, tmp_path / "ray", cluster.address, "--weights", f"clip={tmp_path / 'missing.pt'}",
                    args=["--encoders", "clip", "--no-progress"])
    rc, stdout, stderr = _finish(proc)
    last = stderr.strip().splitlines()[-1]
    assert rc != 0 and last.startswith("mrhd extract: error: encoder clip did not start on the Ray cluster ("), stderr
    assert "missing.pt" in last and last.endswith("every node needs mrhd and the weights (docs/cluster.md)")
    assert not (tmp_path / "ray" / "clip.h5").exists()


@pytest.mark.slow
def test_killed_workers_are_redone_and_nothing_is_lost_or_doubled(cluster, videos, local_store, tmp_path):
    out = tmp_path / "ray"
    proc = _extract(videos, out, cluster.address, "--num-workers", "1")
    _wait_for_videos(proc, out, at_least=1)
    killed = []
    for title in ("ray::EncoderActor", "ray::decode_video"):
        for pid in _ray_processes(title)[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(title)
    assert "ray::EncoderActor" in killed, "no encoder actor process found mid-run"
    rc, stdout, stderr = _finish(proc)
    assert rc == 1, stderr[-3000:]
    assert stdout == local_report(local_store), (killed, stdout)
    # the redone batches were packed as before: the store is still the local job's, byte for byte
    assert_same_store(out, local_store)


@pytest.mark.slow
def test_killed_driver_resumes(cluster, videos, local_store, tmp_path):
    out = tmp_path / "ray"
    proc = _extract(videos, out, cluster.address, "--num-workers", "1")
    _wait_for_videos(proc, out, at_least=2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = len(_stored_in_every_stream(out))
    assert 1 <= done < len(DURATIONS), "the driver was not killed mid-run"
    rc, stdout, stderr = _finish(_extract(videos, out, cluster.address))
    assert rc == 1, stderr[-3000:]
    assert stdout.startswith(f"{INPUTS} inputs: {STORED - done} stored, {done} already stored, 1 failed"), stdout
    assert_same_store(out, local_store)


def _counts(head: str) -> dict[str, int]:
    """The summary's first line as ``{category: count}``, with ``inputs``."""
    inputs, rest = head.split(" inputs: ", 1)
    return {"inputs": int(inputs)} | {name: int(n) for n, name in re.findall(r"(\d+) ([a-z][a-z ]*?)(?=,|;|$| \()", rest)}


@pytest.mark.slow
def test_two_drivers_on_one_folder_share_the_list(cluster, videos, local_store, tmp_path):
    """Two drivers started together on one output folder (each with its own actors): every video is
    stored by exactly one of them (claims, as between local runs), each summary counts every input
    once, and the store holds what the local job computes (to rounding: which clips share a batch
    now depends on which driver took which video)."""
    out = tmp_path / "ray"
    # half a CPU per actor: the two drivers' actors leave two CPUs of the cluster for decoding
    procs = [_extract(videos, out, cluster.address, "--num-workers", "1", "--ray-cpus-per-actor", "0.5")
             for _ in range(2)]
    heads = []
    for proc in procs:
        rc, stdout, stderr = _finish(proc)
        assert rc == 1, stderr[-3000:]  # each tried the broken video
        heads.append(_counts(stdout.splitlines()[0]))
    for counts in heads:
        assert counts["inputs"] == INPUTS and counts["failed"] == 1, heads
        assert counts["stored"] + counts["already stored"] + counts.get("stored by another run", 0) == STORED, heads
    assert sum(c["stored"] for c in heads) == STORED, heads  # nothing done twice
    print("stored by each driver:", [c["stored"] for c in heads])
    with h5py.File(out / "clip.h5", "r") as g, h5py.File(local_store / "clip.h5", "r") as w:
        assert sorted(g) == sorted(w)
    for stream in STREAMS:
        got, want = FeatureStore(store_path(out, stream)), FeatureStore(store_path(local_store, stream))
        for vid in want.video_ids():
            assert got.read_attrs(vid) == want.read_attrs(vid), (stream, vid)
            np.testing.assert_allclose(got.read(vid).astype(np.float32), want.read(vid).astype(np.float32),
                                       rtol=1e-2, atol=1e-3, err_msg=f"{stream}/{vid}")
        assert not list((out / f".{stream}.parts").glob("*.claim")), "claims left behind"


@pytest.mark.slow
def test_a_video_another_run_holds_is_waited_for_then_taken_over(cluster, videos, local_store, tmp_path):
    """Another run (this test) holds the claim of v3: the driver leaves it, stores the rest, says it
    waits, and takes v3 over once the other run lets go without storing it (it failed, or died)."""
    from mrhd.extract.claims import try_claim

    out = tmp_path / "ray"
    held = []
    for stream in STREAMS:
        store = FeatureStore(store_path(out, stream), "a", build_encoder(stream, random_weights=True, size="tiny").info)
        held.append(try_claim(store.claim_path("v3")))
    proc = _extract(videos, out, cluster.address, "--num-workers", "1")
    try:
        for line in proc.stderr:  # the driver's log, line by line, until it waits
            if "waiting for another run" in line:
                assert f"(pid {os.getpid()})" in line and "1 video(s)" in line, line
                break
        else:
            pytest.fail(f"the driver did not wait for v3: {proc.communicate()}")
        stored = _stored_in_every_stream(out) | set.intersection(*(_parts(out, s) for s in STREAMS))
        assert "v3" not in stored and len(stored) == STORED - 1, stored  # the rest is done first
    finally:
        for claim in held:
            claim.release()
    rc, stdout, stderr = _finish(proc)
    assert rc == 1, stderr[-3000:]
    assert stdout.startswith(f"{INPUTS} inputs: {STORED} stored, 0 already stored, 1 failed"), stdout
    # v3 was encoded alone in its batches here: the same features to rounding, the same attributes
    got, want = FeatureStore(store_path(out, "clip")), FeatureStore(store_path(local_store, "clip"))
    assert got.video_ids() == want.video_ids() and got.read_attrs("v3") == want.read_attrs("v3")
    np.testing.assert_allclose(got.read("v3").astype(np.float32), want.read("v3").astype(np.float32),
                               rtol=1e-2, atol=1e-3)


@pytest.mark.slow
def test_a_lost_node_is_redone_on_the_others(cluster, videos, local_store, tmp_path):
    """A whole worker node dies (its raylet, with its object store, tasks and actors) and a fresh one
    joins, as an autoscaler would add it: Ray restarts the actors, reruns the decoding and rebuilds
    the lost frames; the store is still the local job's. Runs last: it changes the cluster."""
    out = tmp_path / "ray"
    proc = _extract(videos, out, cluster.address, "--num-workers", "1")
    _wait_for_videos(proc, out, at_least=1)
    raylet = next(iter(cluster.worker_nodes)).all_processes["raylet"][0].process.pid
    os.kill(raylet, signal.SIGKILL)
    cluster.add_node(num_cpus=2, object_store_memory=80 * MIB)
    rc, stdout, stderr = _finish(proc)
    assert rc == 1 and not _running(raylet), stderr[-3000:]
    assert stdout == local_report(local_store), stdout
    assert_same_store(out, local_store)

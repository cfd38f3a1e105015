"""`mrhd serve`'s HTTP API on a real server (uvicorn on loopback, a free port) with a tiny random
predictor: uploads and folder videos, jobs and their results, the warm path, bad input, bugs."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import mrhd.inference.video_features as video_features  # noqa: E402
from mrhd.cli import main  # noqa: E402
from mrhd.inference.predict import Predictor  # noqa: E402
from mrhd.serve.app import build_app  # noqa: E402
from mrhd.serve.library import VideoLibrary  # noqa: E402
from mrhd.serve.server import BackgroundServer  # noqa: E402
from mrhd.serve.service import MomentService  # noqa: E402
from tests.helpers.videos import write_broken, write_video  # noqa: E402

# a small random grounding model whose window is 8 clips (16 s): a 21-s video runs as windows
SMALL = {"hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "max_v_l": 8}
MAX_DURATION = 30.0
MAX_UPLOAD_MB = 1.0


class Client:
    def __init__(self, url: str):
        self.url = url

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        status, _headers, content = self.request(method, path, data, {"Content-Type": "application/json"})
        return status, json.loads(content)

    def upload(self, path, name=None):
        query = urllib.parse.quote(name or path.name)
        status, _h, content = self.request("POST", f"/api/videos?name={query}", path.read_bytes())
        return status, json.loads(content)

    def run_job(self, video_id: str, queries, timeout: float = 120.0) -> dict:
        status, job = self.json("POST", "/api/jobs", {"video": video_id, "queries": queries})
        assert status == 202, job
        deadline = time.monotonic() + timeout
        while job["state"] not in ("done", "error"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
            status, job = self.json("GET", f"/api/jobs/{job['id']}")
            assert status == 200
        return job


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-media")
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "sub" / "walk.mp4", duration=21.0, fps=10, audio=False)
    write_video(folder / "long.mp4", duration=MAX_DURATION + 10, fps=2, width=64, height=48, audio=False)
    (folder / "notes.txt").write_text("not a video")
    clip = write_video(root / "clip.mp4", duration=12.0, fps=10, audio=False)
    return {"root": root, "folder": folder, "clip": clip}


@pytest.fixture(scope="module")
def served(media, tmp_path_factory):
    predictor = Predictor.from_pretrained("random", encoder_size="tiny", cache=tmp_path_factory.mktemp("fcache"),
                                          random_config=SMALL)
    library = VideoLibrary(tmp_path_factory.mktemp("uploads"), [media["folder"]], max_duration=MAX_DURATION,
                           max_upload_mb=MAX_UPLOAD_MB)
    service = MomentService(predictor, library)
    service.warm_up()
    with BackgroundServer(build_app(service)) as url:
        yield Client(url), service
    service.close()


@pytest.fixture()
def decodes(monkeypatch):
    """Counts passes over a video (the warm path must make none)."""
    calls = []
    real = video_features.decode_streams
    monkeypatch.setattr(video_features, "decode_streams", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def _folder_video(client, suffix):
    status, listing = client.json("GET", "/api/videos")
    assert status == 200
    return next(v for v in listing["videos"] if v["name"].endswith(suffix))


def test_page_and_static_files(served):
    client, _ = served
    status, headers, page = client.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"/static/app.js" in page
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        status, headers, _ = client.request("GET", f"/static/{name}")
        assert status == 200 and kind in headers["content-type"]
    status, info = client.json("GET", "/api/info")
    assert info["model"] == "cg_detr" and info["weights"] == "random" and info["max_duration"] == MAX_DURATION


def test_folder_listing_holds_only_its_videos(served):
    client, _ = served
    status, listing = client.json("GET", "/api/videos")
    names = sorted(v["name"] for v in listing["videos"])
    assert status == 200 and names == ["long.mp4", "sub/walk.mp4"]
    for bad in ("f0000000000000000", "u" + "0" * 16):
        status, body = client.json("GET", f"/api/videos/{bad}")
        assert status == 404 and "no video" in body["error"]
        assert client.request("GET", f"/api/videos/{bad}/file")[0] == 404
    for path in ("/api/videos/..%2F..%2F..%2Fetc%2Fpasswd/file", "/api/videos/../../../etc/passwd",
                 "/static/..%2F..%2F..%2Fetc%2Fpasswd"):
        status, _headers, body = client.request("GET", path)
        assert status == 404 and b"root:" not in body


def test_query_on_a_folder_video_equals_mrhd_predict(served, media):
    """Sliding windows (8-clip window, 21-s video), the JSON download in `mrhd predict`'s format."""
    client, service = served
    video = _folder_video(client, "walk.mp4")
    queries = ["a white bar sweeps across the screen", "the colours change"]
    job = client.run_job(video["id"], queries)
    assert job["state"] == "done", job
    assert job["features"] in ("extracted", "cache") and job["progress"]["done"] == job["progress"]["total"] == 11
    status, headers, body = client.request("GET", f"/api/jobs/{job['id']}/predictions.json")
    assert status == 200 and 'filename="walk.moments.json"' in headers["content-disposition"]
    served_preds = json.loads(body)
    predictor = service.predictor
    feats = predictor.encode_video(media["folder"] / "sub" / "walk.mp4")
    assert feats.n_clips > predictor.window   # more than one window
    expected = [p.to_json() for p in predictor.predict(feats, queries)]
    assert served_preds == expected
    assert [r["prediction"] for r in job["results"]] == expected
    for result in job["results"]:
        sal = result["prediction"]["pred_saliency_scores"]
        clips = [c for c, _ in result["top_clips"]]
        assert clips == sorted(range(len(sal)), key=lambda i: -sal[i])[:5]


def test_second_query_decodes_nothing(served, decodes):
    client, service = served
    video = _folder_video(client, "walk.mp4")
    client.run_job(video["id"], ["first"])
    before = service.decoded_videos
    job = client.run_job(video["id"], ["a second, different query"])
    assert job["state"] == "done" and job["features"] == "memory"
    assert decodes == [] and service.decoded_videos == before


def test_upload_is_hashed_once_and_two_jobs_share_one_extraction(served, media, decodes, tmp_path):
    client, service = served
    fresh = write_video(tmp_path / "fresh clip.mp4", duration=9.0, fps=10, audio=False)
    status, video = client.upload(fresh)
    assert status == 201 and video["name"] == "fresh clip.mp4" and video["duration"] == pytest.approx(9.0)
    hashed = service.predictor.cache.hashed
    ids = [client.json("POST", "/api/jobs", {"video": video["id"], "queries": [q]})[1]["id"] for q in ("a", "b")]
    jobs = []
    for job_id in ids:
        while True:
            job = client.json("GET", f"/api/jobs/{job_id}")[1]
            if job["state"] in ("done", "error"):
                break
            time.sleep(0.05)
        jobs.append(job)
    assert [j["state"] for j in jobs] == ["done", "done"]
    assert len(decodes) == 1 and service.predictor.cache.hashed == hashed   # the upload's hash was reused
    assert jobs[0]["results"][0]["prediction"]["vid"] == "fresh clip"


def test_extraction_progress_is_reported_while_it_runs(served, tmp_path, monkeypatch):
    """The job shows how many clips are done; the extraction is held at its third clip until the API said so."""
    import threading

    client, service = served
    reached, release = threading.Event(), threading.Event()
    real = service.predictor.encode_video

    def held_encode(path, vid=None, progress=None):
        def report(done, total):
            progress(done, total)
            if done == 3:
                reached.set()
                assert release.wait(60), "the test never released the extraction"
        return real(path, vid=vid, progress=report)

    monkeypatch.setattr(service.predictor, "encode_video", held_encode)
    fresh = write_video(tmp_path / "progress.mp4", duration=13.0, fps=10, audio=False)   # 7 clips
    status, video = client.upload(fresh)
    assert status == 201
    status, job = client.json("POST", "/api/jobs", {"video": video["id"], "queries": ["a bar"]})
    assert status == 202 and reached.wait(60)
    try:
        status, job = client.json("GET", f"/api/jobs/{job['id']}")
        assert status == 200 and job["state"] == "extracting"
        assert job["message"] == "extracting features: 3 of 7 clips" and job["progress"] == {"done": 3, "total": 7}
    finally:
        release.set()
    deadline = time.monotonic() + 120
    while job["state"] not in ("done", "error"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.json("GET", f"/api/jobs/{job['id']}")[1]
    assert job["state"] == "done" and job["progress"] == {"done": 7, "total": 7}
    assert job["message"] == "1 query done" and job["features"] == "extracted"


@pytest.mark.parametrize("kind", ["text", "garbage", "empty", "truncated"])
def test_upload_of_a_non_video_is_refused_and_deleted(served, media, kind, tmp_path):
    client, service = served
    bad = write_broken(tmp_path / f"{kind}.mp4", kind, source=media["clip"])
    before = sorted(service.library.upload_dir.rglob("*"))
    status, body = client.upload(bad)
    assert status == 400 and body["error"].startswith(f"{kind}.mp4: ") and "\n" not in body["error"]
    assert sorted(service.library.upload_dir.rglob("*")) == before


def test_too_large_and_too_long_are_refused(served, media, tmp_path):
    client, service = served
    big = tmp_path / "big.mp4"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, int(1.5 * 2 ** 20), dtype=np.uint8).tobytes())
    # a declared length over the limit is refused before the body is read (curl sends
    # "Expect: 100-continue" and waits; the page checks the size before it sends)
    conn = http.client.HTTPConnection(client.url.removeprefix("http://"), timeout=60)
    conn.putrequest("POST", "/api/videos?name=big.mp4")
    conn.putheader("Content-Length", str(big.stat().st_size))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 413 and "upload limit of 1 MB" in body["error"] and "--max-upload-mb" in body["error"]
    # no Content-Length (chunked): counted while it arrives, the partial file deleted
    before = sorted(service.library.upload_dir.rglob("*"))
    conn = http.client.HTTPConnection(client.url.removeprefix("http://"), timeout=60)
    blocks = (big.read_bytes()[i: i + 65536] for i in range(0, big.stat().st_size, 65536))
    conn.request("POST", "/api/videos?name=big.mp4", body=blocks, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and "upload limit" in json.loads(resp.read())["error"]
    conn.close()
    assert sorted(service.library.upload_dir.rglob("*")) == before
    long_video = _folder_video(client, "long.mp4")
    status, body = client.json("GET", f"/api/videos/{long_video['id']}")
    assert status == 400 and "0:40 long" in body["error"] and "up to 0:30" in body["error"]
    status, body = client.json("POST", "/api/jobs", {"video": long_video["id"], "queries": ["q"]})
    assert status == 400 and "--max-duration" in body["error"]
    long_upload = write_video(tmp_path / "long upload.mp4", duration=MAX_DURATION + 6, fps=2, width=64, height=48,
                              audio=False)
    status, body = client.upload(long_upload)
    assert status == 400 and "long upload.mp4 is 0:36 long" in body["error"]


def test_bad_requests_are_one_line_errors(served, media):
    client, _ = served
    status, video = client.upload(media["clip"])
    assert status == 201
    cases = [
        ({"video": video["id"], "queries": ["  "]}, 400, "empty query"),
        ({"video": video["id"], "queries": []}, 400, "no query"),
        ({"video": video["id"], "queries": "a string"}, 400, "list of sentences"),
        ({"queries": ["q"]}, 400, "no video chosen"),
        ({"video": "nope", "queries": ["q"]}, 404, "no video 'nope'"),
    ]
    for body, want_status, needle in cases:
        status, answer = client.json("POST", "/api/jobs", body)
        assert status == want_status and needle in answer["error"], (body, answer)
    status, answer = client.json("POST", "/api/jobs", raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"]
    assert client.json("GET", "/api/jobs/jnope")[0] == 404


def test_a_video_that_fails_to_decode_is_a_message(served, media, tmp_path):
    client, _ = served
    corrupt = write_broken(tmp_path / "corrupt.mp4", "corrupt", source=write_video(
        tmp_path / "src.mp4", duration=12.0, fps=10, audio=False))
    status, video = client.upload(corrupt)
    if status != 201:   # the damage reached the header: refused at upload, also fine
        assert status == 400 and "\n" not in video["error"]
        return
    job = client.run_job(video["id"], ["a query"])
    assert job["state"] in ("done", "error")
    if job["state"] == "error":
        assert "\n" not in job["error"] and "Traceback" not in job["error"]


def test_bugs_are_messages_and_the_server_keeps_serving(served, media, monkeypatch):
    client, service = served
    status, video = client.upload(media["clip"])

    def broken_predict(*_a, **_k):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr(service.predictor, "predict", broken_predict)
    job = client.run_job(video["id"], ["a query"])
    assert job["state"] == "error" and job["error"].startswith("internal error (ValueError)")
    assert "deep inside" not in job["error"]
    monkeypatch.setattr(service.library, "folder_videos", lambda: 1 / 0)
    status, body = client.json("GET", "/api/videos")
    assert status == 500 and body["error"].startswith("internal error (ZeroDivisionError)")
    monkeypatch.undo()
    job = client.run_job(video["id"], ["a query"])
    assert job["state"] == "done"


def test_video_file_supports_range_requests(served, media):
    client, _ = served
    video = _folder_video(client, "walk.mp4")
    data = (media["folder"] / "sub" / "walk.mp4").read_bytes()
    status, headers, body = client.request("GET", f"/api/videos/{video['id']}/file", headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and headers["content-type"] == "video/mp4"
    assert headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_thumbnail_is_the_frame_in_the_middle_of_its_clip(served, media):
    from PIL import Image

    client, _ = served
    video = _folder_video(client, "walk.mp4")
    status, headers, body = client.request("GET", f"/api/videos/{video['id']}/thumbs/3.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(body)).convert("L"), dtype=np.float32)
    assert image.shape == (180, 240)
    # the generated video draws a white bar at x = 4 * frame (of 160 px); clip 3's middle is 7 s = frame 70
    bar_x = (np.argmax(image.mean(axis=0)) + 0.5) * 160 / 240
    assert abs(bar_x - (4 * 70) % 160) < 6
    assert client.request("GET", f"/api/videos/{video['id']}/thumbs/40.jpg")[0] == 404


def test_busy_port_and_bad_flags_are_one_line_errors(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--weights", "random", "--port", str(port)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"port {port} on 127.0.0.1 is in use" in err
    for argv, needle in ((["--videos", str(tmp_path / "none")], "not a folder"),
                         (["--max-duration", "0"], "--max-duration"),
                         (["--encoder-size", "tiny"], "only with --weights random"),
                         (["--port", "70000", "--weights", "random"], "not a port number"),
                         (["--port", "0", "--weights", "random", "--model", "nonexistent"], "unknown model"),
                         (["--port", "0", "--weights", "random", "--device", "tpu"], "device")):
        assert main(["serve", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err, err


def test_features_in_memory_stay_within_their_budget(served, media, tmp_path):
    """With room for one video's features, the older video comes back from the disk cache."""
    _, warm = served
    library = VideoLibrary(tmp_path / "uploads", [media["folder"]], max_duration=MAX_DURATION)
    service = MomentService(warm.predictor, library, feature_bytes=1)
    try:
        videos = {v.name: v.id for v in library.folder_videos()}
        other = write_video(tmp_path / "other.mp4", duration=6.0, fps=10, audio=False)
        upload = library.begin_upload("other.mp4")
        upload.write(other.read_bytes())
        other_id = upload.finish().id

        def run(video_id):
            job = service.submit(video_id, ["a query"])
            deadline = time.monotonic() + 120
            while not job.finished:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert job.state == "done", job.error
            return job.features

        assert run(videos["sub/walk.mp4"]) in ("cache", "extracted")
        assert run(videos["sub/walk.mp4"]) == "memory"
        assert run(other_id) in ("cache", "extracted")
        assert run(other_id) == "memory"
        assert run(videos["sub/walk.mp4"]) == "cache"   # pushed out of memory by the other video
    finally:
        service.close()
    assert not (tmp_path / "uploads").exists()


def test_a_query_longer_than_the_model_reads_comes_with_a_note(served, media):
    client, _ = served
    status, video = client.upload(media["clip"])
    long_query = "a man in a red coat " * 10
    job = client.run_job(video["id"], [long_query, "short"])
    assert job["state"] == "done"
    assert len(job["notes"]) == 1 and "cut to the first 32" in job["notes"][0]

"""Download + cache against a test HTTP server on 127.0.0.1: resume, sha256, offline message."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest
import torch

from mrhd.cli import main
from mrhd.errors import MrhdError, OfflineError
from mrhd.weights import WeightsEntry, load_checkpoint, register_weights, resolve_weights
from mrhd.weights.download import download
from mrhd.weights.registry import _REGISTRY


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` with HTTP Range support; ``server.cut`` stops a full (non-range)
    answer after that many bytes, like a dropped connection."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        data = self.server.files.get(self.path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut
        if cut is not None and not rng:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.cut = {}, [], None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def ckpt_bytes(tmp_path):
    torch.manual_seed(0)
    torch.save({"model": {"w": torch.randn(64, 64)}, "epoch": 1}, tmp_path / "src.ckpt")
    return (tmp_path / "src.ckpt").read_bytes()


@pytest.fixture()
def entry(server, ckpt_bytes, monkeypatch, tmp_path):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(_REGISTRY, "test-ckpt", _REGISTRY.get("test-ckpt"))  # restored afterwards
    server.files["/test.ckpt"] = ckpt_bytes
    return register_weights(WeightsEntry(
        id="test-ckpt", kind="model", model="moment_detr", filename="test.ckpt", profile="clip",
        urls=(f"http://127.0.0.1:{server.server_port}/test.ckpt",),
        sha256=hashlib.sha256(ckpt_bytes).hexdigest()))


def test_download_into_cache_and_reuse(entry, server, ckpt_bytes, tmp_path):
    path = resolve_weights("test-ckpt", progress=False)
    assert path == tmp_path / "cache" / "weights" / "test-ckpt" / "test.ckpt"
    assert path.read_bytes() == ckpt_bytes
    assert load_checkpoint(path)["model"]["w"].shape == (64, 64)
    n = len(server.requests)
    assert resolve_weights("test-ckpt", progress=False) == path
    assert len(server.requests) == n  # cached: no second request


def test_resume_after_partial_file(entry, server, ckpt_bytes, tmp_path):
    cut = server.cut = len(ckpt_bytes) // 3
    with pytest.raises(MrhdError, match="stopped early|resume"):
        resolve_weights("test-ckpt", progress=False)
    part = tmp_path / "cache" / "weights" / "test-ckpt" / "test.ckpt.part"
    assert 0 < part.stat().st_size < len(ckpt_bytes)
    assert not part.with_name("test.ckpt").exists()
    server.cut = None
    path = resolve_weights("test-ckpt", progress=False)
    assert path.read_bytes() == ckpt_bytes and not part.exists()
    assert server.requests[-1][1] == f"bytes={cut}-"  # continued, not restarted


def test_sha_mismatch_leaves_no_file(server, ckpt_bytes, tmp_path):
    server.files["/x.ckpt"] = ckpt_bytes
    dest = tmp_path / "x.ckpt"
    with pytest.raises(MrhdError, match="sha256 mismatch"):
        download(f"http://127.0.0.1:{server.server_port}/x.ckpt", dest, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "src.ckpt"]


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(MrhdError, match="HTTP 404"):
        download(f"http://127.0.0.1:{server.server_port}/missing", tmp_path / "m", progress=False)


def test_offline_is_one_line(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(_REGISTRY, "offline-ckpt", WeightsEntry(
        id="offline-ckpt", kind="model", model="moment_detr", filename="o.ckpt",
        urls=(f"http://127.0.0.1:{port}/o.ckpt",)))
    with pytest.raises(OfflineError, match="no network"):
        resolve_weights("offline-ckpt", progress=False)
    assert main(["weights", "download", "offline-ckpt"]) == OfflineError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no network" in err
    assert not (tmp_path / "cache" / "weights" / "offline-ckpt" / "o.ckpt").exists()


def test_unknown_id_and_missing_path(monkeypatch, tmp_path):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path))
    with pytest.raises(MrhdError, match="unknown weights id"):
        resolve_weights("no-such-model")
    with pytest.raises(MrhdError, match="not found"):
        resolve_weights(str(tmp_path / "nothing.ckpt"))


def test_manual_only_entry_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path))
    with pytest.raises(MrhdError, match="no direct download.*drive.google"):
        resolve_weights("cg_detr-slowfast_clip-qvhighlights")


def test_local_file_is_returned_as_is(tmp_path):
    f = tmp_path / "mine.ckpt"
    f.write_bytes(b"x")
    assert resolve_weights(str(f)) == f


def test_lfs_pointer_is_not_taken_for_the_file(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    server.files["/lfs.ckpt"] = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n"
    monkeypatch.setitem(_REGISTRY, "lfs-ckpt", WeightsEntry(
        id="lfs-ckpt", kind="model", model="cg_detr", filename="lfs.ckpt",
        urls=(f"http://127.0.0.1:{server.server_port}/lfs.ckpt",)))
    with pytest.raises(MrhdError, match="LFS pointer"):
        resolve_weights("lfs-ckpt", progress=False)
    assert not list((tmp_path / "cache").rglob("lfs.ckpt"))


def test_server_ignoring_range_restarts_cleanly(server, ckpt_bytes, tmp_path):
    class NoRange(_Handler):
        def do_GET(self):
            del self.headers["Range"]  # answers 200 with the whole file, as some servers do
            super().do_GET()

    server.RequestHandlerClass = NoRange
    server.files["/n.ckpt"] = ckpt_bytes
    dest = tmp_path / "n.ckpt"
    dest.with_name("n.ckpt.part").write_bytes(b"stale bytes from an older file")
    download(f"http://127.0.0.1:{server.server_port}/n.ckpt", dest,
             sha256=hashlib.sha256(ckpt_bytes).hexdigest(), progress=False)
    assert dest.read_bytes() == ckpt_bytes


def test_companion_files_land_beside_the_main_file(server, ckpt_bytes, monkeypatch, tmp_path):
    monkeypatch.setenv("MRHD_CACHE", str(tmp_path / "cache"))
    base = f"http://127.0.0.1:{server.server_port}"
    server.files["/main.pth"] = ckpt_bytes
    server.files["/vit.pth"] = b"vit weights"
    monkeypatch.setitem(_REGISTRY, "two-files", WeightsEntry(
        id="two-files", kind="encoder", model="blip2", filename="main.pth", urls=(f"{base}/main.pth",),
        companions=(("vit.pth", f"{base}/vit.pth"),)))
    path = resolve_weights("two-files", progress=False)
    assert path.read_bytes() == ckpt_bytes and (path.parent / "vit.pth").read_bytes() == b"vit weights"

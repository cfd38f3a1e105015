"""mrhd.io: JSON lines with line numbers, atomic writes that honour the umask, file hashes."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from mrhd.errors import MrhdError
from mrhd.io import (
    BadJsonLine,
    atomic_open,
    atomic_path,
    file_sha256,
    jsonl_text,
    read_jsonl,
    read_jsonl_numbered,
    write_atomic,
)


def test_jsonl_round_trip_with_line_numbers(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(jsonl_text([{"qid": 1}, {"qid": 2}]) + "\n" + jsonl_text([{"qid": 3}]))
    assert read_jsonl_numbered(path) == [(1, {"qid": 1}), (2, {"qid": 2}), (4, {"qid": 3})]
    assert read_jsonl(path) == [{"qid": 1}, {"qid": 2}, {"qid": 3}]


def test_bad_lines_raise_or_go_to_the_callback(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"qid": 1}\n{"qid": \n[1, 2]\n{"qid": 4}\n')
    with pytest.raises(BadJsonLine, match=r"b.jsonl:2: not valid JSON") as err:
        read_jsonl_numbered(path)
    assert err.value.lineno == 2 and err.value.json_error and "\n" not in str(err.value)
    bad = []
    rows = read_jsonl_numbered(path, on_bad_line=bad.append)
    assert [n for n, _ in rows] == [1, 4]
    assert [(b.lineno, b.json_error is None, b.got) for b in bad] == [(2, False, None), (3, True, "list")]
    with pytest.raises(MrhdError, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_atomic(tmp_path / "t.txt", "text")
        with atomic_open(tmp_path / "b.bin", "wb", durable=True) as fh:
            fh.write(b"\x00\x01")
        with atomic_path(tmp_path / "p.bin") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("reference")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("t.txt", "b.bin", "p.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert (tmp_path / "t.txt").read_text() == "text" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_file_sha256(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()

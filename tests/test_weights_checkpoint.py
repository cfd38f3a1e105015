"""mrhd's checkpoint format and the allow-list for the authors' pickled checkpoints."""

from __future__ import annotations

import argparse
import os
import random
import zipfile
from pathlib import Path

import pytest
import torch

from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import (
    FORMAT,
    LEGACY_MAGIC,
    is_mrhd_checkpoint,
    load_checkpoint,
    official_opt,
    official_state_dict,
    save_checkpoint,
)


class _Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def test_save_and_load_roundtrip(tmp_path):
    sd = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    path = save_checkpoint(tmp_path / "m.ckpt", model="moment_detr", config={"hidden_dim": 32},
                           state_dict=sd, profile="clip", extra={"epoch": 4})
    ckpt = load_checkpoint(path)
    assert is_mrhd_checkpoint(ckpt) and ckpt["format"] == FORMAT
    assert ckpt["model"] == "moment_detr" and ckpt["profile"] == "clip" and ckpt["epoch"] == 4
    assert ckpt["config"] == {"hidden_dim": 32}
    assert set(ckpt["versions"]) == {"mrhd", "torch"}
    assert torch.equal(ckpt["state_dict"]["w"], sd["w"])
    # readable with the plain weights-only loader, no allow-list needed
    assert torch.load(path, weights_only=True)["model"] == "moment_detr"
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temporary file left


def test_save_refuses_overriding_fixed_keys(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "m.ckpt", model="x", config={}, state_dict={}, profile="clip",
                        extra={"model": "y"})
    assert not list(tmp_path.iterdir())


def test_legacy_checkpoint_with_namespace_loads(tmp_path):
    opt = argparse.Namespace(hidden_dim=32, v_feat_dirs=["a", "b"], max_v_l=75)
    torch.save({"model": {"w": torch.ones(2)}, "opt": opt, "epoch": 7,
                "optimizer": torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))]).state_dict()},
               tmp_path / "official.ckpt")
    ckpt = load_checkpoint(tmp_path / "official.ckpt")
    assert not is_mrhd_checkpoint(ckpt)
    assert official_opt(ckpt)["hidden_dim"] == 32
    assert torch.equal(official_state_dict(ckpt)["w"], torch.ones(2))


def test_pickled_object_outside_allow_list_is_refused(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}, "opt": _Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(MrhdError, match="allow-list.*system"):
        load_checkpoint(tmp_path / "evil.ckpt")


# (name, bytes, what the one-line error says the file is instead)
NOT_CHECKPOINTS = [
    ("empty", b"", "it is empty"),
    ("text", b"not a checkpoint at all", "it is a text file"),
    ("json", b'{"model": "qd_detr", "weights": [1, 2]}\n', "it is JSON text"),
    ("json-list", b"[1, 2, 3]", "it is JSON text"),
    ("html", b"<!DOCTYPE html><html>404</html>", "HTML"),
    ("lfs-pointer", b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n", "Git LFS pointer"),
    ("random-bytes", random.Random(0).randbytes(2048), "binary data"),
    # random bytes that start like a pickle GLOBAL opcode: once reported as a refused pickle
    ("random-bytes-c", b"c" + random.Random(1).randbytes(64), "binary data"),
    ("control-bytes", b"c" + bytes(range(1, 9)) * 8, "binary data"),
    ("random-bytes-pickle", b"\x80\x02" + random.Random(2).randbytes(64), "binary data"),
    ("zip-without-data-pkl", None, "zip archive without data.pkl"),
]


@pytest.mark.parametrize("name, content, words", NOT_CHECKPOINTS, ids=[c[0] for c in NOT_CHECKPOINTS])
def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path, name, content, words):
    path = tmp_path / "bad.ckpt"
    if content is None:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("notes.txt", "hello")
    else:
        path.write_bytes(content)
    with pytest.raises(MrhdError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "is not a PyTorch checkpoint at all" in message and words in message, message
    assert "allow-list" not in message and "weights_only" not in message


def test_torch_advice_to_turn_the_safety_off_is_never_relayed(tmp_path):
    """A real (legacy-format) pickle that torch's weights-only loader cannot read: torch's message
    advises loading with the safety off; ours says what is wrong only."""
    path = tmp_path / "odd.ckpt"
    path.write_bytes(LEGACY_MAGIC + b"\x80\x02\xff\xfe garbage")
    with pytest.raises(MrhdError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "is not a readable PyTorch checkpoint" in message and "\n" not in message
    for advice in ("weights_only", "trusted source", "arbitrary code", "file an issue"):
        assert advice not in message, message


def test_no_source_or_document_advises_turning_the_safety_off():
    root = Path(__file__).resolve().parents[1]
    files = [*root.joinpath("mrhd").rglob("*.py"), *root.joinpath("docs").rglob("*.md"), root / "README.md",
             *root.joinpath("mrhd").rglob("*.md")]
    offenders = [str(f.relative_to(root)) for f in files if "weights_only=False" in f.read_text()]
    assert not offenders, offenders


def test_missing_file(tmp_path):
    with pytest.raises(MrhdError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_encoder_checkpoints_share_the_safe_loader(tmp_path):
    """The encoders read their files through load_checkpoint: wrappers unwrap, garbage is named as
    unreadable (not as a refused pickle), and a pickled callable is refused."""
    from mrhd.weights.checkpoint import unwrap_state_dict

    sd = {"w": torch.ones(1)}
    assert unwrap_state_dict({"model_state": sd}, ("model_state",)) is sd
    assert unwrap_state_dict({"module": sd, "model": {}}, ("module", "model")) is sd
    assert unwrap_state_dict(sd) is sd
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MrhdError, match="not a CLIP checkpoint at all: it is a text file; give ViT-B-32.pt"):
        load_checkpoint(tmp_path / "junk.pt", what="CLIP checkpoint", fix="give ViT-B-32.pt")
    torch.save({"model": sd, "x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(MrhdError, match="allow-list.*system"):
        build_encoder("pann", weights=str(tmp_path / "evil.pth"))

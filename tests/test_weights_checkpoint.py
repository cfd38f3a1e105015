"""mrhd's checkpoint format and the allow-list for the authors' pickled checkpoints."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from mrhd.encoders.factory import build_encoder
from mrhd.errors import MrhdError
from mrhd.weights.checkpoint import (
    FORMAT,
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


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", os.urandom(2048)])
def test_garbage_file_gives_one_line_error(tmp_path, content):
    (tmp_path / "bad.ckpt").write_bytes(content)
    with pytest.raises(MrhdError) as info:
        load_checkpoint(tmp_path / "bad.ckpt")
    assert "\n" not in str(info.value)


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
    with pytest.raises(MrhdError, match="not a readable CLIP checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", what="CLIP checkpoint", fix="give ViT-B-32.pt")
    torch.save({"model": sd, "x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(MrhdError, match="allow-list.*system"):
        build_encoder("pann", weights=str(tmp_path / "evil.pth"))

"""InternVideo2 features feed SG-DETR: the encoder's default weights (InternVideo2-1B stage 2), the
``internvideo2`` profile and SG-DETR's config agree on the dims; the 6B features have their own
profile; and `mrhd extract --encoders internvideo2` output trains `mrhd train --model sg_detr`."""

from __future__ import annotations

import json

import pytest
import yaml

from mrhd.encoders.internvideo2.config import CLIP6B, STAGE2, variant_config
from mrhd.encoders.internvideo2.encoder import DEFAULT_WEIGHTS, VARIANT_OF_ID
from mrhd.features.profiles import TEF_DIM, load_profile
from mrhd.models.registry import get_spec, make_config
from mrhd.training.config import model_defaults


def test_default_weights_profile_and_sg_detr_agree_on_the_1b_dims():
    assert VARIANT_OF_ID[DEFAULT_WEIGHTS] == STAGE2
    full = variant_config(STAGE2, "full")
    profile = load_profile(get_spec("sg_detr").default_profile)
    assert profile.name == "internvideo2"
    assert profile.dim_of("internvideo2") == full.vision.clip_embed_dim == 768
    assert profile.dim_of("internvideo2_text") == full.text.hidden_size == 1024
    for cfg in (get_spec("sg_detr").config_cls(), make_config("sg_detr", model_defaults("sg_detr"))):
        assert (cfg.v_feat_dim, cfg.t_feat_dim) == (profile.video_dim, profile.text_dim) == (768 + TEF_DIM, 1024)


def test_the_6b_features_have_their_own_profile():
    six_b = variant_config(CLIP6B, "full")
    profile = load_profile("internvideo2_6b")
    assert profile.video == ("internvideo2",) and profile.text == ("internvideo2_text",)
    assert profile.dim_of("internvideo2") == six_b.vision.clip_embed_dim
    assert profile.dim_of("internvideo2_text") == six_b.text.hidden_size == 4096


@pytest.mark.slow
def test_extract_with_the_default_variant_feeds_mrhd_train(tmp_path):
    """Tiny random encoders of the default (1B) variant, their dims read from the same config the
    encoder is built from; the profile only names those dims (full size: the test above)."""
    from mrhd.cli import main
    from mrhd.extract.synthetic import write_video
    from mrhd.weights.checkpoint import load_checkpoint

    videos, lines = [], []
    for i, duration in enumerate((12.0, 10.0, 12.0, 8.0)):
        vid = f"iv{i}_0.0_{duration}"
        videos.append(write_video(tmp_path / "videos" / f"{vid}.mp4", duration=duration, fps=5, width=48,
                                  height=32, audio=False))
        lines.append({"qid": i, "query": f"someone does thing {i}", "vid": vid, "duration": duration,
                      "relevant_windows": [[2, 6]], "relevant_clip_ids": [1, 2],
                      "saliency_scores": [[1, 2, 3], [2, 3, 4]]})
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "features"
    rc = main(["extract", *map(str, videos), "--encoders", "internvideo2", "--out", str(out), "--queries", str(ann),
               "--random-weights", "--encoder-size", "tiny", "--num-workers", "0", "--no-progress"])
    assert rc in (0, None)

    tiny = variant_config(VARIANT_OF_ID[DEFAULT_WEIGHTS], "tiny")
    profile = load_profile("internvideo2").to_dict()
    profile.update(name="internvideo2_tiny", dims={"internvideo2": tiny.vision.clip_embed_dim,
                                                   "internvideo2_text": tiny.text.hidden_size})
    profile_file = tmp_path / "internvideo2_tiny.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    sets = ["hidden_dim=16", "nheads=2", "dim_feedforward=32", "enc_layers=1", "dec_layers=2", "sgca_layers=1",
            "num_queries=5", "dn_groups=1"]
    rc = main(["train", "--model", "sg_detr", "--features", str(out), "--train", str(ann), "--val", str(ann),
               "--out", str(tmp_path / "run"), "--profile", str(profile_file), "--epochs", "1", "--batch-size", "4",
               "--num-workers", "0", "--quiet", *[x for s in sets for x in ("--set", s)]])
    assert rc in (0, None)
    best = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert best["config"]["v_feat_dim"] == tiny.vision.clip_embed_dim + TEF_DIM
    assert best["config"]["t_feat_dim"] == tiny.text.hidden_size

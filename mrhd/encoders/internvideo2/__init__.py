"""InternVideo2 streams ``internvideo2`` (video, 768) and ``internvideo2_text`` (query tokens).

No installable package provides InternVideo2, so the towers are written here (``vision.py``,
``text_bert.py``) after OpenGVLab/InternVideo ``InternVideo2/multi_modality`` and load the
released checkpoints under their own key names (``checkpoint.py``, strict); the CLIP text tower
uses transformers' ``LlamaModel`` (``text_llama.py``).

Variants (``config.py``):
- ``internvideo2-1b-stage2`` (default; SG-DETR's encoder): ``InternVideo2-stage2_1b-224p-f4.pt``,
  ViT-1B (1408 wide, 40 blocks) + BERT-large text tower.
- ``internvideo2-clip-6b`` (the released QVHighlights features, 768-d): ``InternVideo2_CLIP_6B.pth``,
  ViT-6B (3200 wide, 48 blocks) + InternVL's LLaMA-7B text tower (LoRA merged on load). A file
  holding only one tower feeds that tower's stream.
The variant of a checkpoint file is read from its keys; ``size="tiny"`` builds a small random
model of the same layout for CPU tests and benchmarks.

Choices the sources leave open, and what we chose:
- Video feature: the ``clip_projector`` output (attention pooling, 768), before ``vision_proj`` and
  unnormalised -- the 768-d vector both variants share (CLIP's ``encode_vision`` output; stage 2's
  ``pooled_vision_embeds``).
- Frames: 8 per 2-s window [2k, 2k+2) from the decoder's native-rate frames, picked by the
  authors' test-time rule (``get_frame_indices(sample="middle")``: middle frame of each of 8 equal
  integer segments; a window with fewer than 8 frames repeats its last pick). FEATURES.md says
  "8 frames uniformly sampled"; exact indices of the released features are unknown.
- The 1B stage-2 checkpoint is "f4" (4-frame position table); we run 8 frames and resample the
  table linearly in time on load, as the authors do when fine-tuning at another frame count.
- Pixels: the whole frame, upright (display matrix applied), resized to 224x224 without keeping
  the aspect and without a crop, as ``InternVideo2_CLIP.transform`` (``Resize((224, 224),
  BICUBIC)`` on uint8 frames, torchvision 0.14 as pinned by the authors: no antialias, rounded),
  then /255, ImageNet mean/std; the frames at their own size are decord's rgb24 (the extraction
  script the authors point to, VideoMAEv2 ``extract_tad_feature.py``, reads with decord).
  ``mrhd.extract.pixels`` and docs/FEATURES.md say what could not be checked. bf16 autocast on
  CUDA (the authors' eval configs: ``use_bf16=True``).
- Text, stage 2: bert-large-uncased WordPiece from ``vocab.txt`` beside the checkpoint, no prefix,
  [CLS] ... [SEP], truncated to 40 tokens (``max_txt_l``); tokens = xbert ``mode="text"`` output
  (layers 0-18 of 24: the fusion layers are skipped) incl. [CLS]/[SEP], 1024-d, before
  ``text_proj``; pooled = [CLS].
- Text, CLIP-6B (the 4096-d kind SG-DETR's released text features are): ``tokenizer.json`` beside
  the checkpoint (LLaMA sentencepiece saved by ``LlamaTokenizerFast``; sentencepiece itself is not
  needed), ids = BOS + tokens of ``"summarize:" + query`` (no space, as the authors) + EOS, body
  cut so that BOS and EOS stay within 80; tokens = ``last_hidden_state`` of ALL of them (BOS,
  prefix and EOS included: whether the released features kept them is unverified); pooled = the
  EOS row before ``text_projection`` (4096, so pooled has the stream's ``dim``). bf16 on CUDA.
- ``--random-weights`` text: a synthetic vocabulary (BERT: character WordPiece; LLaMA: one id per
  UTF-8 byte) stands in for the real tokenizer, so no download happens.
"""

from mrhd.encoders.factory import register_encoder
from mrhd.encoders.internvideo2.encoder import build_text, build_video

register_encoder("internvideo2", build_video)
register_encoder("internvideo2_text", build_text)

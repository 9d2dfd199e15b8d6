"""The toy release's layout (checkpoints/toy, and each folder `ovi-toy rebuild` writes in its place): the model
config and the files beside fusion.safetensors. Kept apart from the modules that read them, so the light tools
(ovi-toy make / score / rebuild's driver) know the names without importing the codec stack."""
from __future__ import annotations

MODEL_CONFIG = "configs/model/toy.yaml"  # the toy model; its text_dim is the toy UMT5's d_model
VIDEO_CODEC_FILE = "video_codec.json"
AUDIO_CODEC_FILE = "audio_codec.json"
V2A_WEIGHTS_FILE = "v2a.safetensors"  # configs/inference/toy.yaml's checkpoints.v2a

"""The four models a generation needs, loaded from the release files or built tiny and random.

``load_components`` reads the public release (paths from ``InferenceConfig.checkpoints``);
``random_components`` builds every component at toy width with seeded random weights and a
character-level tokenizer, so the whole pipeline and CLI run anywhere in seconds (the output is noise:
nothing was trained).
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ovi.checkpoints import load_fusion_checkpoint
from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.audio_vae import AudioVAE
from ovi.codecs.text_encoder import TextEncoder, build_umt5_encoder
from ovi.codecs.video_vae import VideoVAE, build_wan22_vae
from ovi.codecs.vocoder import build_vocoder, remove_weight_norm
from ovi.config import FusionConfig, InferenceConfig
from ovi.models.fusion import FusionModel


@dataclass
class Components:
    model: FusionModel
    text_encoder: TextEncoder
    video_vae: VideoVAE
    audio_codec: AudioCodec


def load_components(cfg: InferenceConfig, model_cfg: FusionConfig, dtype: torch.dtype) -> Components:
    """Release files -> components on the CPU (the pipeline moves them to the device it runs on)."""
    paths = cfg.checkpoints
    return Components(
        model=load_fusion_checkpoint(paths.resolve("fusion"), model_cfg, device="cpu", dtype=dtype),
        text_encoder=TextEncoder.from_wan_checkpoint(
            paths.resolve("text_encoder"), tokenizer=paths.resolve("tokenizer"), dtype=dtype
        ),
        # Weights stored in bf16, arithmetic in float32: what the release runs (see ovi/codecs/video_vae.py).
        video_vae=VideoVAE.from_wan_checkpoint(paths.resolve("video_vae"), dtype=dtype, compute_dtype=torch.float32),
        audio_codec=AudioCodec.from_files(paths.resolve("audio_vae"), paths.resolve("vocoder"), dtype=torch.float32),
    )


# Toy widths for random components: small enough for a CPU run of the full 121-frame shape in seconds.
TINY_TEXT_ENCODER = {"vocab_size": 128, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 2}
TINY_VIDEO_VAE = {"base_dim": 8, "decoder_base_dim": 8}
TINY_AUDIO_VAE_HIDDEN = 8
TINY_VOCODER = {"upsample_initial_channel": 64}  # halved per upsampling stage (6): >= 64
_SPECIAL = ("<pad>", "</s>", "<unk>")  # UMT5's ids 0, 1, 2


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with UMT5's special ids, built in memory (no download)."""
    chars = [c for c in string.printable if not c.isspace() or c == " "]
    vocab = {tok: i for i, tok in enumerate(_SPECIAL)} | {c: i + len(_SPECIAL) for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def random_components(model_cfg: FusionConfig, seed: int = 0, text_len: int | None = None) -> Components:
    """Every component at toy width with seeded random weights (float32, CPU); the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FusionModel(model_cfg)
        with torch.no_grad():  # the reference init zeroes the heads; random heads make the run non-trivial
            for tower in (model.video_model, model.audio_model):
                tower.head.head.weight.normal_(std=0.02)
        tokenizer = char_tokenizer()
        encoder = build_umt5_encoder(
            TINY_TEXT_ENCODER | {"d_model": model_cfg.video.text_dim, "vocab_size": len(tokenizer)}
        )
        audio_vae = AudioVAE(hidden_dim=TINY_AUDIO_VAE_HIDDEN).normalize_weights()
        vocoder = remove_weight_norm(build_vocoder(TINY_VOCODER))
        video_vae = VideoVAE(build_wan22_vae(TINY_VIDEO_VAE))
    return Components(
        model=model.eval(),
        text_encoder=TextEncoder(encoder, tokenizer, text_len=text_len or model_cfg.video.text_len),
        video_vae=video_vae,
        audio_codec=AudioCodec(audio_vae.eval(), vocoder.eval()).requires_grad_(False),
    )

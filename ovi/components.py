"""The four models a generation needs, loaded from the release files or built tiny and random.

``load_components`` reads the public release (paths from ``InferenceConfig.checkpoints``), or the toy model
shipped in ``checkpoints/toy`` (configs/inference/toy.yaml: the same loaders, reduced widths read from the files,
codec folders in the diffusers/transformers layout and a Griffin-Lim vocoder file, see ``ovi.toy.vocoder``);
``random_components`` builds every component at toy width with seeded random weights and a
character-level tokenizer, so the whole pipeline and CLI run anywhere in seconds (the output is noise:
nothing was trained).
"""
from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ovi.checkpoints import load_fusion_checkpoint
from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.text_encoder import TextEncoder, build_umt5_encoder
from ovi.codecs.vocoder import build_vocoder, remove_weight_norm
from ovi.config import FusionConfig, InferenceConfig
from ovi.models.fusion import FusionModel
from ovi.toy.fixed_codecs import MelPoolCodec, PixelVideoCodec, is_fixed_codec
from ovi.toy.vocoder import GRIFFIN_LIM_ITERS, GriffinLimVocoder

# The Wan2.2 and MMAudio VAEs are diffusers classes (~5 s to import); they are imported where they are built,
# so loading the toy release's codecs (fixed codecs, Griffin-Lim), as precompute and training do, skips it.
if TYPE_CHECKING:
    from ovi.codecs.audio_vae import AudioVAE
    from ovi.codecs.video_vae import VideoVAE

logger = logging.getLogger(__name__)


@dataclass
class Components:
    model: FusionModel
    text_encoder: TextEncoder
    video_vae: VideoVAE | PixelVideoCodec
    audio_codec: AudioCodec


def load_codecs(cfg: InferenceConfig, model_cfg: FusionConfig, dtype: torch.dtype
                ) -> tuple[TextEncoder, VideoVAE | PixelVideoCodec, AudioCodec]:
    """The frozen parts a generation needs besides the fusion model: text encoder, video codec, audio codec."""
    paths = cfg.checkpoints
    text, tokenizer = paths.resolve("text_encoder"), paths.resolve("tokenizer")
    if text.is_dir():  # transformers folder (a Diffusers-layout release, or the toy's tiny UMT5)
        text_encoder = TextEncoder.from_pretrained(text, tokenizer=tokenizer, text_len=model_cfg.video.text_len,
                                                   dtype=dtype)
    else:
        text_encoder = TextEncoder.from_wan_checkpoint(text, tokenizer=tokenizer, dtype=dtype)
    video = load_video_codec(paths.resolve("video_vae"), dtype)
    return text_encoder, video, _audio_codec(paths.resolve("audio_vae"), paths.resolve("vocoder"))


def load_components(cfg: InferenceConfig, model_cfg: FusionConfig, dtype: torch.dtype) -> Components:
    """Release files -> components on the CPU (the pipeline moves them to the device it runs on)."""
    model = load_fusion_checkpoint(cfg.checkpoints.resolve("fusion", cfg.variant), model_cfg, device="cpu",
                                   dtype=dtype)
    return Components(model, *load_codecs(cfg, model_cfg, dtype))


def load_video_codec(path: Path, dtype: torch.dtype, device: torch.device | str = "cpu"
                     ) -> VideoVAE | PixelVideoCodec:
    """A Diffusers ``vae/`` folder, ``Wan2.2_VAE.pth``, or the toy's fixed pixel codec (``.json``)."""
    if is_fixed_codec(path):
        return PixelVideoCodec.from_file(path).to(device)
    from ovi.codecs.video_vae import VideoVAE

    # Weights stored in bf16, arithmetic in float32: what the release runs (see ovi/codecs/video_vae.py).
    loader = VideoVAE.from_pretrained if path.is_dir() else VideoVAE.from_wan_checkpoint
    return loader(path, dtype=dtype, compute_dtype=torch.float32, device=device)


def load_audio_latent_codec(path: Path, device: torch.device | str = "cpu") -> AudioVAE | MelPoolCodec:
    """The MMAudio VAE file ``v1-16.pth`` (float32: the mel log needs the mantissa), or the toy's mel-pool codec."""
    if is_fixed_codec(path):
        return MelPoolCodec.from_file(path).to(device)
    from ovi.codecs.audio_vae import load_audio_vae

    return load_audio_vae(path, hidden_dim=None, device=device, dtype=torch.float32)


def _audio_codec(vae_path: Path, vocoder_path: Path) -> AudioCodec:
    """The release's MMAudio VAE + BigVGAN files, or (a ``.json`` vocoder file) the toy's Griffin-Lim stand-in."""
    if vocoder_path.suffix != ".json":
        return AudioCodec.from_files(vae_path, vocoder_path, dtype=torch.float32)
    spec = json.loads(vocoder_path.read_text())
    if spec.get("vocoder") != "griffin_lim":
        raise ValueError(f"{vocoder_path}: a vocoder .json must say {{\"vocoder\": \"griffin_lim\"}}; "
                         "for BigVGAN give the release's best_netG.pt")
    vae = load_audio_latent_codec(vae_path)
    vocoder = GriffinLimVocoder(iters=int(spec.get("iters", GRIFFIN_LIM_ITERS)))
    return AudioCodec(vae, vocoder).eval().requires_grad_(False)


# Toy widths for random components: small enough for a CPU run of the full 121-frame shape in seconds.
TINY_TEXT_ENCODER = {"vocab_size": 128, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 2}
TINY_VIDEO_VAE = {"base_dim": 8, "decoder_base_dim": 8}
TINY_AUDIO_VAE_HIDDEN = 8
TINY_VOCODER = {"upsample_initial_channel": 64}  # halved per upsampling stage (6): >= 64
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # UMT5's ids 0, 1, 2


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with UMT5's special ids, built in memory (no download)."""
    chars = [c for c in string.printable if not c.isspace() or c == " "]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab |= {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def random_components(model_cfg: FusionConfig, seed: int = 0, text_len: int | None = None) -> Components:
    """Every component at toy width with seeded random weights (float32, CPU); the caller's RNG is untouched."""
    logger.warning("random_weights: every model is random, untrained: the output is NOISE (a smoke test of the "
                   "code path). For a trained model that runs on a CPU use the toy preset: ovi-generate --config toy")
    from ovi.codecs.audio_vae import AudioVAE
    from ovi.codecs.video_vae import VideoVAE, build_wan22_vae

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

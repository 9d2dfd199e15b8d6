"""Text -> image -> video with a tiny random diffusers FluxPipeline saved to disk (no download)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovi.components import char_tokenizer
from ovi.presets import load_inference_config
from ovi.text_to_image import image_size

diffusers = pytest.importorskip("diffusers")
PROMPT = "A red ball <S>hi<E> Audio: thud"


def tiny_flux(folder: Path) -> Path:
    """A FluxPipeline with every part tiny and random, saved as a diffusers folder."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, projection_dim=32, vocab_size=400, eos_token_id=2))
    t5 = T5EncoderModel(T5Config(d_model=32, d_kv=8, d_ff=37, num_heads=4, num_layers=2, vocab_size=400))
    vae = diffusers.AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                                  layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
                                  use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    tok = char_tokenizer()
    tok.model_max_length = 16
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip,
                                  tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok, transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def test_image_size_keeps_the_aspect_at_the_area() -> None:
    assert image_size(704, 1280, 1024 * 1024) == (752, 1376)  # the reference: 1024^2 area, multiples of 16
    h, w = image_size(960, 960, 64 * 64)
    assert (h, w) == (64, 64)


def test_t2i2v_makes_the_first_frame_then_image_to_video(tmp_path: Path) -> None:
    from ovi.pipeline import OviPipeline

    folder = tiny_flux(tmp_path / "flux")
    cfg = load_inference_config("tiny_cpu", ["num_frames=25", "num_steps=2", f"t2i_model={folder}", "t2i_area=1024",
                                             "t2i_steps=2"])
    pipe = OviPipeline.from_config(cfg)
    a = pipe.generate(PROMPT, seed=3, progress=False)
    assert a.first_frame is not None and a.first_frame.size == (32, 32)  # (W, H) at t2i_area, square request
    assert a.settings["mode"] == "t2i2v" and a.settings["t2i_model"] == str(folder)
    b = pipe.generate(PROMPT, seed=3, progress=False)  # the image is seeded too: same seed, same sample
    assert torch.equal(a.video, b.video)
    # The video starts from that image: the same image given as i2v input gives the same sample.
    c = pipe.generate(PROMPT, image=a.first_frame, seed=3, progress=False)
    assert torch.equal(a.video, c.video) and c.settings["mode"] == "i2v"

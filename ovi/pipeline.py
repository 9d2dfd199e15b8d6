"""OviPipeline: (prompt, optional first frame) -> (video frames, waveform).

    prompt --validate/format--> UMT5 --> text embeddings (prompt, video negative, audio negative)
    image? --Wan2.2 VAE--> clean first latent frame
    seeded noise --denoise (CFG + SLG, two solvers)--> video latent [48, F, h, w], audio latent [L, 20]
    --Wan2.2 VAE / MMAudio VAE + BigVGAN--> video [3, T, H, W] in [-1, 1], audio [N] at 16 kHz
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Iterator

import torch
from PIL import Image

from ovi.checkpoints import TrainingMetadata
from ovi.components import Components, load_components, random_components
from ovi.config import FusionConfig, InferenceConfig, load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig, SpeedConfig, denoise
from ovi.imaging import ImageInput, first_frame, t2v_size
from ovi.modes import Given, GivenMedia, MediaSource, denoise_given, given_inputs, load_given, write_back
from ovi.parallel.groups import ParallelLayout, broadcast_tensors, sequence_parallel_layout
from ovi.pass_weights import PassWeights
from ovi.prompts import format_prompt, style_for_checkpoint, validate_prompt
from ovi.sync_guidance import SyncGuidance
from ovi.validation import (InvalidRequest, ModelFacts, given_media_problems, pass_weights_conflict, resolve_seed,
                            settings_problems)

logger = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# InferenceConfig fields that OviPipeline.generate takes per call (the rest shape the loaded models).
PER_CALL_SETTINGS = ("height", "width", "aspect_ratio", "solver", "num_steps", "shift", "video_guidance_scale",
                     "audio_guidance_scale", "slg_layer", "video_negative_prompt", "audio_negative_prompt",
                     "sync_guidance_scale", "sync_guidance_shift_s")


@dataclass
class Generation:
    video: torch.Tensor  # [3, T, H, W] float in [-1, 1]
    audio: torch.Tensor  # [N] float in [-1, 1]
    fps: int
    sample_rate: int
    prompt: str
    seed: int  # the seed used (a random one when -1 was asked for)
    settings: dict  # every setting this sample was made with (written into the output's metadata)
    first_frame: Image.Image | None = None  # the text-to-image first frame (t2i2v), if one was made


class OviPipeline:
    def __init__(self, components: Components, cfg: InferenceConfig, prompt_style: str | None = None) -> None:
        """``prompt_style``: the caption spelling the model was trained on; None: that of ``cfg.variant``."""
        self.c = components
        self.cfg = cfg
        self.prompt_style = prompt_style or style_for_checkpoint(cfg.variant)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA GPU is visible; pass device=cpu (slow) or run on a GPU host")
        self.dtype = DTYPES.get(cfg.dtype)
        if self.dtype is None:
            raise ValueError(f"dtype {cfg.dtype!r} unknown; choose one of {sorted(DTYPES)}")
        self.c.model.set_attention_backend(cfg.attention_backend)
        if cfg.lora:  # before quantisation / compile: those wrap the adapted layers as they are
            from ovi.lora import load_adapters, parse_adapter_arg

            load_adapters(self.c.model, [parse_adapter_arg(x.strip()) for x in cfg.lora.split(",") if x.strip()])
        self.pass_weights = self._load_pass_weights()
        self._apply_memory_tiers()
        self.layout = self._apply_sequence_parallel()
        if not cfg.cpu_offload:
            for module in self._modules():
                module.to(self._home(module))
        model_cfg = self.c.model.cfg
        self.facts = ModelFacts(model_cfg.video.num_layers, model_cfg.video.text_len)
        self.text_to_image = None  # t2i2v: set by from_config when cfg.t2i_model is given

    @classmethod
    def from_config(cls, cfg: InferenceConfig) -> OviPipeline:
        if cfg.random_weights:
            pipe = cls(random_components(load_fusion_config(cfg.model), seed=max(cfg.seed, 0)), cfg)
            pipe.load_text_to_image()
            return pipe
        from ovi.release import format_missing, missing_release_files

        missing = missing_release_files(cfg)
        if missing:
            raise FileNotFoundError(format_missing(missing))
        cfg, model_cfg, style = apply_training_metadata(cfg)
        logger.info("loading models from %s", cfg.checkpoints.resolve("fusion", cfg.variant))
        pipe = cls(load_components(cfg, model_cfg, DTYPES[cfg.dtype]), cfg, style)
        pipe.load_text_to_image()
        return pipe

    def load_text_to_image(self) -> None:
        """Load ``cfg.t2i_model`` (t2i2v: prompts without an image get a generated first frame)."""
        if not self.cfg.t2i_model:
            return
        from ovi.text_to_image import TextToImage

        logger.info("loading text-to-image pipeline %s", self.cfg.t2i_model)
        self.text_to_image = TextToImage.from_pretrained(
            self.cfg.t2i_model, self.device, self.dtype, self.cfg.cpu_offload, steps=self.cfg.t2i_steps,
            guidance_scale=self.cfg.t2i_guidance_scale, area=self.cfg.t2i_area)

    def _load_pass_weights(self) -> PassWeights | None:
        """The V2A weights (``checkpoints.v2a``), when this pipeline makes sound from a clean video."""
        cfg = self.cfg
        if not cfg.v2a_weights_used:
            return None
        conflict = pass_weights_conflict(cfg)
        if conflict:
            raise InvalidRequest([conflict])
        path = cfg.checkpoints.resolve("v2a")
        logger.info("sound from a clean video (audio_from_video, V2A) with the weights of %s", path)
        return PassWeights.from_file(self.c.model, path)

    def _v2a_weights(self, clean_video: bool) -> contextlib.AbstractContextManager:
        """The V2A weights in place while sound is made beside a clean video; otherwise the model as loaded."""
        return self.pass_weights.applied() if clean_video and self.pass_weights else contextlib.nullcontext()

    def _apply_memory_tiers(self) -> None:
        """Weight quantisation, per-block compile and block streaming of the fusion model (InferenceConfig's
        "Devices and memory" options; README "Memory options")."""
        cfg, model = self.cfg, self.c.model
        if cfg.quantize != "none":
            from ovi.models.quant import quantize_model

            saved = quantize_model(model, cfg.quantize, self.device)
            logger.info("quantize=%s saved %.2f GB of weights", cfg.quantize, saved / 1e9)
        if cfg.compile:
            from ovi.models.compile import compile_blocks

            compile_blocks(model)
        if cfg.offload_blocks:
            from ovi.models.offload import stream_blocks

            stream_blocks(model, self.device, cfg.offload_blocks)

    def _apply_sequence_parallel(self) -> ParallelLayout:
        """sp_size > 1: split the fusion model's tokens over this rank's SP group (ovi.parallel). Collective."""
        from ovi.parallel.ulysses import apply_sequence_parallel

        if self.cfg.sp_size > 1 and self.cfg.step_cache > 0:
            raise ValueError("step_cache decides per rank from its own tokens; with sp_size > 1 set step_cache=0")
        layout = sequence_parallel_layout(self.cfg.sp_size)
        apply_sequence_parallel(self.c.model, layout)
        if self.cfg.vae_tiling:
            self.c.video_vae.enable_tiling()
        return layout

    def _modules(self) -> list[torch.nn.Module]:
        """The modules placed as a whole (a block-streamed fusion model places itself). Under SP only the group's
        leader encodes text, images and decodes (the others' copies stay on the CPU, unused)."""
        model = [] if self.cfg.offload_blocks else [self.c.model]
        leader = getattr(self, "layout", None) is None or self.layout.is_leader
        return model + ([self.c.text_encoder, self.c.video_vae, self.c.audio_codec] if leader else [])

    def _home(self, module: torch.nn.Module) -> torch.device:
        """Where a module runs: the text encoder may be sent elsewhere (``text_encoder_device``)."""
        if module is self.c.text_encoder and self.cfg.text_encoder_device:
            return torch.device(self.cfg.text_encoder_device)
        return self.device

    @contextlib.contextmanager
    def _on_device(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """With cpu_offload, a model is on the GPU only while it runs."""
        offload = self.cfg.cpu_offload and module in self._modules()
        if offload:
            module.to(self._home(module))
        try:
            yield module
        finally:
            if offload:
                module.to("cpu")

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        image: ImageInput | None = None,
        seed: int | None = None,
        progress: bool = True,
        video: MediaSource | None = None,
        audio: MediaSource | None = None,
        extend: MediaSource | None = None,
        **settings: object,
    ) -> Generation | None:
        """One sample. ``image``: path, PIL, uint8 array/tensor [H, W, 3] or float tensor [3, H, W] in [-1, 1]
        (None: text-to-video, or t2i2v with ``t2i_model``). ``seed``: None = the config's, -1 = random.
        ``settings``: per-call overrides of the config (``PER_CALL_SETTINGS``), e.g. ``num_steps=30``.
        Given media (``ovi.modes``, at most one, none with ``image``): ``video`` V2A (path, or uint8 [T, H, W, 3]
        at 24 fps), ``audio`` A2V (path, or float [N] at 16 kHz), ``extend`` continue a clip (path or frames).
        With ``sp_size > 1`` every rank of the SP group calls it with the same arguments; the leader returns the
        sample, the others None."""
        unknown = sorted(set(settings) - set(PER_CALL_SETTINGS))
        if unknown:
            raise InvalidRequest([f"generate() got unknown settings {unknown}; per call: {', '.join(PER_CALL_SETTINGS)}"])
        cfg = replace(self.cfg, **settings)
        seed = resolve_seed(cfg.seed if seed is None else seed)
        cfg = replace(cfg, seed=seed)
        problems = settings_problems(cfg, self.facts)
        if problems:
            raise InvalidRequest(problems)
        validate_prompt(prompt)
        text = format_prompt(prompt, self.prompt_style)
        self._check_length(text)
        media = self._load_given(cfg, image, video, audio, extend)

        embedded = None
        if self.layout.is_leader:  # under SP the leader encodes and broadcasts to its group
            with self._on_device(self.c.text_encoder) as enc:
                embedded = enc.encode([text, cfg.video_negative_prompt, cfg.audio_negative_prompt])
        cond = Conditioning(*broadcast_tensors(embedded, self.layout, self.device, self.dtype))

        # The reference's sizes: t2v scales the requested [H, W] (or aspect ratio) to the area; i2v sizes
        # from the image (ovi.imaging).
        height, width = t2v_size(*((cfg.height, cfg.width) if cfg.height else cfg.aspect_ratio[::-1]), cfg.area)
        made_image = None
        if image is None and media is None and self.text_to_image is not None:  # given media: no t2i frame
            image = made_image = self.text_to_image(prompt, height, width, seed)
        clean_latent = None
        if image is not None:
            pixels = first_frame(image, cfg.area)  # [3, 1, H, W]
            height, width = pixels.shape[2:]
            if self.layout.is_leader:
                with self._on_device(self.c.video_vae) as vae:
                    clean_latent = vae.encode(pixels[None].to(self.device))[0].to(self.dtype)  # [48, 1, h, w]
            clean_latent = broadcast_tensors([clean_latent] if self.layout.is_leader else None, self.layout,
                                             self.device, self.dtype)[0]
        given = None
        if media is not None:
            height, width = media.size or (height, width)
            given = self._encode_given(media)
        geometry = cfg.geometry
        latent_shape = (self.c.video_vae.z_dim, geometry.latent_frames, *geometry.latent_hw(height, width))

        # Video and audio noise each come from a generator seeded with the same seed, as the release does,
        # so a seed reproduces the reference's sample.
        def noise(shape: tuple[int, ...]) -> torch.Tensor:
            gen = torch.Generator(self.device).manual_seed(seed)
            return torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)

        video_noise = noise(latent_shape)
        audio_noise = noise((geometry.audio_latents, self.c.model.cfg.audio.in_dim))
        guide = GuidanceConfig(cfg.solver, cfg.num_steps, cfg.shift, cfg.video_guidance_scale,
                               cfg.audio_guidance_scale, max(cfg.slg_layer, 0))  # -1 = off, as the reference
        sync = SyncGuidance(cfg.sync_guidance_scale, cfg.sync_guidance_shift_s)
        logger.info("denoising %dx%d, %d frames, seed %d", height, width, geometry.num_frames, seed)
        # Sound made beside a clean video (the second pass, or V2A given clean): the V2A weights, if any, do it.
        clean_video = cfg.audio_from_video if media is None else media.mode == "v2a" and cfg.conditioning == "clean"
        with self._on_device(self.c.model) as model:
            speed = SpeedConfig(batch_cfg=cfg.batch_cfg, step_cache=cfg.step_cache)
            if given is None:
                video_latent, audio_latent = denoise(model, video_noise, audio_noise, cond, guide, clean_latent,
                                                     progress, speed)
                if cfg.audio_from_video:  # second pass: the finished video given clean, its sound made again
                    finished = Given(video=video_latent)
                    with self._v2a_weights(clean_video):
                        audio_latent = denoise_given(model, video_noise, audio_noise, cond, guide, finished, "clean",
                                                     seed, progress, speed, sync)[1]
            else:
                with self._v2a_weights(clean_video):
                    video_latent, audio_latent = denoise_given(model, video_noise, audio_noise, cond, guide, given,
                                                               cfg.conditioning, seed, progress, speed, sync)

        if not self.layout.is_leader:
            return None  # the SP group's leader decodes and returns the sample
        logger.info("decoding video and audio")
        video = None  # V2A keeps the input frames: no video decode
        if media is None or media.mode != "v2a":
            with self._on_device(self.c.video_vae) as vae:
                video = vae.decode(video_latent[None], cfg.vae_chunk_frames, "cpu")[0].float()  # [3, T, H, W]
        with self._on_device(self.c.audio_codec) as codec:
            audio = codec.decode(audio_latent.T[None])[0].float().cpu()  # [N]
        if media is not None:
            video, audio = write_back(media, video, audio)
        settings_used = {name: getattr(cfg, name) for name in PER_CALL_SETTINGS}
        settings_used.update(variant=cfg.variant, prompt_style=self.prompt_style, num_frames=geometry.num_frames,
                             audio_from_video=cfg.audio_from_video and media is None, area=cfg.area,
                             v2a_weights=self.pass_weights.source if clean_video and self.pass_weights else None,
                             video_height=height, video_width=width, t2i_model=cfg.t2i_model or None,
                             mode="i2v" if made_image is None and image is not None else
                             "t2i2v" if made_image is not None else media.mode if media is not None else "t2v")
        if media is not None:
            settings_used.update(given=media.source, conditioning=cfg.conditioning,
                                 given_frames=0 if media.frames is None else media.frames.shape[1],
                                 given_audio_samples=0 if media.wave is None else len(media.wave))
        return Generation(video, audio, geometry.fps, geometry.sample_rate, prompt, seed, settings_used, made_image)

    def _load_given(self, cfg: InferenceConfig, image: object, video: MediaSource | None, audio: MediaSource | None,
                    extend: MediaSource | None) -> GivenMedia | None:
        """The given medium (V2A / A2V / extension) checked and prepared for the clip, or None."""
        given = given_inputs(video, audio, extend)
        if not given:
            return None
        problems = given_media_problems(given, cfg.geometry, cfg.extend_frames, image)
        if problems:
            raise InvalidRequest(problems)
        (kind, source), = given.items()
        try:
            return load_given(kind, source, cfg.geometry, cfg.area, cfg.extend_frames)
        except ValueError as e:
            raise InvalidRequest([str(e)]) from None

    def _encode_given(self, media: GivenMedia) -> Given:
        """The given pixels / waveform as clean latents: video [48, k, h, w], audio [m, 20] (the leader encodes)."""
        latents = None
        if self.layout.is_leader:
            latents = []
            if media.frames is not None:
                with self._on_device(self.c.video_vae) as vae:
                    latents.append(vae.encode(media.frames[None].to(self.device))[0])
            if media.wave is not None:
                with self._on_device(self.c.audio_codec) as codec:
                    latents.append(codec.encode(media.wave[None].to(self.device))[0].T)
        latents = iter(broadcast_tensors(latents, self.layout, self.device, self.dtype))
        return Given(next(latents) if media.frames is not None else None,
                     next(latents) if media.wave is not None else None)

    def _check_length(self, text: str) -> None:
        """A prompt over ``text_len`` tokens is cut by the encoder: warn with the count, or refuse."""
        from ovi.codecs.text_encoder import clean_prompt

        tokenizer = self.c.text_encoder.tokenizer
        if tokenizer is None:
            return
        n = len(tokenizer(clean_prompt(text)).input_ids)
        if n > self.facts.text_len:
            msg = (f"the prompt has {n} tokens, over the model's {self.facts.text_len}: the end (with the audio "
                   "description) is cut; shorten it")
            if self.cfg.long_prompts == "error":
                raise InvalidRequest([msg])
            logger.warning(msg)


def apply_training_metadata(cfg: InferenceConfig) -> tuple[InferenceConfig, FusionConfig, str | None]:
    """A trained export says its model config, clip length and prompt spelling (``TrainingMetadata``); those
    win over the preset, so a fine-tuned file samples as it was trained. Released files say nothing."""
    trained = TrainingMetadata.read(cfg.checkpoints.resolve("fusion", cfg.variant))
    model_cfg = trained.fusion_config() or load_fusion_config(cfg.model)
    if trained.num_frames is not None and trained.num_frames != cfg.num_frames:
        logger.info("num_frames %d -> %d: the fusion file was trained on %d frames",
                    cfg.num_frames, trained.num_frames, trained.num_frames)
        cfg = replace(cfg, num_frames=trained.num_frames)
    return cfg, model_cfg, trained.prompt_style

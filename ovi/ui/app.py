"""The Gradio app: the reference app's controls over OviPipeline, the result playable in the page.

    prompt, image, height x width, seed, solver, steps, shift, guidance scales, SLG, negative prompts
        --> settings_problems (same checks as the CLI) --> OviPipeline.generate --> mp4 with metadata --> <video>

Load-time options (CPU offload, weight quantisation tier, block streaming, LoRA adapters) rebuild the pipeline
when changed; every other control is a per-call setting. Runs ``DEFAULT_UI_PRESET`` out of the box.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ovi.config import InferenceConfig
from ovi.models.quant import QUANTIZE_MODES
from ovi.presets import DEFAULT_PRESET
from ovi.sampling import SOLVERS

logger = logging.getLogger(__name__)

DEFAULT_UI_PRESET = DEFAULT_PRESET  # the shipped toy model: runs on any CPU
EXAMPLE_PROMPTS = [
    "A man waves at the camera and says <S>Hello from Ovi!<E> Audio: a clear male voice, light room tone",
    "Rain streaks down a cafe window at night while a woman reads. Audio: steady rain, soft jazz, cups clinking",
    "A dog runs across a beach and barks at the waves. Audio: crashing surf, excited barking, wind",
]
# Load-time settings (InferenceConfig fields): changing one rebuilds the pipeline.
LOAD_OPTIONS = ("cpu_offload", "quantize", "offload_blocks", "lora")


class Generator:
    """Holds one loaded pipeline; rebuilds it when a load-time option changes."""

    def __init__(self, cfg: InferenceConfig, output_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.pipe = None
        self.loaded_with: tuple | None = None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="ovi-ui-"))
        self.count = 0

    def _pipeline(self, load: dict[str, Any]):
        from ovi.pipeline import OviPipeline

        key = tuple(sorted(load.items()))
        if self.pipe is None or key != self.loaded_with:
            self.pipe, self.loaded_with = None, None  # free the old one first
            self.pipe = OviPipeline.from_config(replace(self.cfg, **load))
            self.loaded_with = key
        return self.pipe

    def __call__(self, prompt: str, image: str | None, height: float, width: float, seed: float, solver: str,
                 steps: float, shift: float, video_scale: float, audio_scale: float, slg: float, sync_scale: float,
                 video_negative: str, audio_negative: str, *load_values: Any) -> str:
        import gradio as gr

        from ovi.outputs import output_stem, save_generation
        from ovi.validation import InvalidRequest

        settings = dict(height=int(height), width=int(width), solver=solver, num_steps=int(steps), shift=float(shift),
                        video_guidance_scale=float(video_scale), audio_guidance_scale=float(audio_scale),
                        slg_layer=int(slg), sync_guidance_scale=float(sync_scale),
                        video_negative_prompt=video_negative or "",
                        audio_negative_prompt=audio_negative or "")
        try:
            load = dict(zip(LOAD_OPTIONS, load_values))
            load.update(cpu_offload=bool(load["cpu_offload"]), offload_blocks=int(load["offload_blocks"] or 0),
                        lora=(load["lora"] or "").strip())
            pipe = self._pipeline(load)
            result = pipe.generate(prompt, image=image or None, seed=int(seed), progress=False, **settings)
        except (InvalidRequest, ValueError, FileNotFoundError) as e:
            raise gr.Error(str(e)) from None  # shown in the page, one message per problem
        self.count += 1
        stem = self.output_dir / output_stem(self.count, prompt, result.seed)
        return str(save_generation(result, stem, replace(self.cfg, **settings), image))


def build_app(cfg: InferenceConfig, output_dir: str | Path | None = None) -> Any:
    """The Blocks app for ``cfg`` (a loaded preset); controls start at its values."""
    import gradio as gr

    from ovi.imaging import t2v_size

    run = Generator(cfg, output_dir)
    h0, w0 = (cfg.height, cfg.width) if cfg.height else t2v_size(cfg.aspect_ratio[1], cfg.aspect_ratio[0], cfg.area)
    with gr.Blocks(title="Ovi: video + audio generation") as app:
        gr.Markdown(f"# Ovi: joint video + audio generation\nModel: `{cfg.variant}`"
                    f"{' (random weights: output is noise)' if cfg.random_weights else ''}. Speech goes in "
                    "`<S>...<E>`; the audio description last, after `Audio:`.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value=cfg.prompt or EXAMPLE_PROMPTS[0], lines=4, elem_id="prompt")
                image = gr.Image(type="filepath", label="First frame (optional: image-to-video)")
                with gr.Row():
                    height = gr.Number(value=h0, precision=0, step=32, label="Video height")
                    width = gr.Number(value=w0, precision=0, step=32, label="Video width")
                seed = gr.Number(value=cfg.seed, precision=0, label="Seed (-1: random)")
                solver = gr.Dropdown(choices=list(SOLVERS), value=cfg.solver, label="Solver")
                steps = gr.Number(value=cfg.num_steps, precision=0, minimum=1, label="Sample steps")
                shift = gr.Slider(0.0, 20.0, value=cfg.shift, step=0.5, label="Shift")
                video_scale = gr.Slider(0.0, 10.0, value=cfg.video_guidance_scale, step=0.5, label="Video guidance scale")
                audio_scale = gr.Slider(0.0, 10.0, value=cfg.audio_guidance_scale, step=0.5, label="Audio guidance scale")
                slg = gr.Number(value=cfg.slg_layer, precision=0, minimum=-1, label="SLG layer (-1 / 0: off)")
                sync_scale = gr.Slider(0.0, 5.0, value=cfg.sync_guidance_scale, step=0.5,
                                       label="Sync guidance (sound made from a clean video; 0: off)")
                video_negative = gr.Textbox(value=cfg.video_negative_prompt, label="Video negative prompt")
                audio_negative = gr.Textbox(value=cfg.audio_negative_prompt, label="Audio negative prompt")
                with gr.Accordion("Memory and adapters (reloads the model)", open=False):
                    load = [
                        gr.Checkbox(value=cfg.cpu_offload, label="CPU offload (each model on the GPU only while it runs)"),
                        gr.Dropdown(choices=list(QUANTIZE_MODES), value=cfg.quantize, label="Weight quantisation"),
                        gr.Number(value=cfg.offload_blocks, precision=0, minimum=0,
                                  label="Blocks resident on the GPU (0: whole model)"),
                        gr.Textbox(value=cfg.lora, label="LoRA adapters: PATH[:SCALE], comma-separated"),
                    ]
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Result", elem_id="result", autoplay=False)
        gr.Examples(EXAMPLE_PROMPTS, inputs=[prompt])
        button.click(run, inputs=[prompt, image, height, width, seed, solver, steps, shift, video_scale, audio_scale,
                                  slg, sync_scale, video_negative, audio_negative, *load], outputs=[video])
    return app

"""Caption: an MLLM sees 7 evenly spaced frames and the whole audio track and writes the training caption
(speech in <S>...<E>, audio description last after "Audio:"); audio-only clips get the transcription and the
audio description. Invalid captions are asked for again, with the reason, up to ``max_attempts`` times.
Reasons: ``caption_invalid`` (still invalid after the last attempt; the detail has why), ``caption_refused``
(the server rejected the request for this clip).
"""
from __future__ import annotations

from data_pipeline.captioning.backends import MalformedReply, RequestRefused, build_backend
from data_pipeline.captioning.format import caption_error, normalize_caption
from data_pipeline.captioning.prompts import instruction
from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import decode_frames
from data_pipeline.stages.base import Stage
from data_pipeline.stages.filter import evenly_spaced

REPLY_EXCERPT_CHARS = 200


class CaptionStage(Stage):
    name = "caption"

    def setup(self) -> None:
        self.backend = build_backend(self.cfg.caption)

    def process(self, record: Record) -> list[Record]:
        cfg = self.cfg.caption
        video_mode = self.cfg.mode == "video"
        frames = []
        if video_mode:
            frames = list(decode_frames(self.out_path(record["video"]),
                                        select=evenly_spaced(record["num_frames"], cfg.num_frames)))
        wav = self.out_path(record["audio"]).read_bytes()
        duration = record["num_samples"] / record["sample_rate"]
        why = None  # told to the model on the next attempt
        detail = ""
        for attempt in range(1, cfg.max_attempts + 1):
            prompt = instruction(self.cfg.mode, duration, len(frames), previous_error=why)
            try:
                text = normalize_caption(self.backend.generate(prompt, frames, wav))
            except RequestRefused as e:
                return [reject(record, "caption_refused", str(e))]
            except MalformedReply as e:
                why = detail = str(e)
                continue
            why = caption_error(text, require_visual=video_mode)
            if why is None:
                return [ok(record, caption=text, caption_attempts=attempt)]
            detail = f"{why}; reply began {text[:REPLY_EXCERPT_CHARS]!r}"
        return [reject(record, "caption_invalid", f"after {cfg.max_attempts} attempts: {detail}")]

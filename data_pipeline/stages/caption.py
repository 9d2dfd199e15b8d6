"""Caption: an MLLM sees 7 evenly spaced frames and the whole audio track and writes the training caption
(speech in <S>...<E>, audio description last after "Audio:"); audio-only clips get the transcription and the
audio description. A reply that is not a usable caption is asked for again, with the reason, up to
``max_attempts`` times; the clip is then rejected with the last attempt's reason:

``caption_refused`` (the server rejected the request for this clip), ``caption_truncated`` (the reply was cut
off: finish_reason "length"), ``caption_refusal`` (the model declined), ``caption_placeholder`` (template
text such as "[description]"), ``caption_chatty`` ("Sure! Here is...", "Let me know if..."),
``caption_speech_without_voice`` (<S>…<E> words on a clip whose audio has no speech, by a voice-activity
check; ``caption.check_speech``), ``caption_invalid`` (the format rules; the detail says which).
"""
from __future__ import annotations

from typing import Optional

from data_pipeline.captioning.backends import MalformedReply, Reply, RequestRefused, build_backend
from data_pipeline.captioning.format import caption_error, normalize_caption, reply_problem, utterances
from data_pipeline.captioning.prompts import instruction
from data_pipeline.filters.voice import has_speech
from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import decode_frames, read_wav
from data_pipeline.stages.base import Stage
from data_pipeline.stages.filter import evenly_spaced

REPLY_EXCERPT_CHARS = 200


class CaptionStage(Stage):
    name = "caption"

    @property
    def loads_models(self) -> bool:
        return self.cfg.caption.backend == "transformers"

    def setup(self) -> None:
        self.backend = build_backend(self.cfg.caption)

    def process(self, record: Record) -> list[Record]:
        video_mode = self.cfg.mode == "video"
        frames = []
        with self.local(record["audio"]) as wav_path:
            wav = wav_path.read_bytes()
            audio, rate = read_wav(wav_path)
        if video_mode:
            with self.local(record["video"]) as video:
                frames = list(decode_frames(video, select=evenly_spaced(record["num_frames"],
                                                                         self.cfg.caption.num_frames)))
        speech = has_speech(audio, rate) if self.cfg.caption.check_speech else None
        source = None
        if self.cfg.caption.backend == "sidecar":
            with self.source(record) as path:  # the sidecar sits next to a local source
                source = path
        return [self._caption(record, frames, wav, speech, source, video_mode)]

    def _caption(self, record: Record, frames: list, wav: bytes, speech: Optional[bool], source,
                 video_mode: bool) -> Record:
        cfg = self.cfg.caption
        duration = record["num_samples"] / record["sample_rate"]
        why = None  # told to the model on the next attempt
        reason, detail = "caption_invalid", ""
        for attempt in range(1, cfg.max_attempts + 1):
            prompt = instruction(self.cfg.mode, duration, len(frames), previous_error=why)
            try:
                reply = self.backend.generate(prompt, frames, wav, source=source)
            except RequestRefused as e:
                return reject(record, "caption_refused", str(e))
            except MalformedReply as e:
                why = detail = str(e)
                reason = "caption_invalid"
                continue
            text = normalize_caption(reply.text)
            problem = self._problem(reply, text, speech, video_mode)
            if problem is None:
                return ok(record, caption=text, caption_attempts=attempt)
            reason, why = problem
            detail = f"{why}; reply began {text[:REPLY_EXCERPT_CHARS]!r}"
        return reject(record, reason, f"after {cfg.max_attempts} attempts: {detail}")

    @staticmethod
    def _problem(reply: Reply, text: str, speech: Optional[bool], video_mode: bool) -> Optional[tuple[str, str]]:
        if reply.finish_reason == "length":
            return "caption_truncated", "the reply was cut off (finish_reason 'length'); write a shorter caption"
        problem = reply_problem(text)
        if problem is not None:
            return problem
        error = caption_error(text, require_visual=video_mode)
        if error is not None:
            return "caption_invalid", error
        if speech is False and utterances(text):
            return "caption_speech_without_voice", "nobody speaks in this clip's audio; use no <S>...<E> tags"
        return None

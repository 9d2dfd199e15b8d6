"""Caption backends: any OpenAI-compatible chat server (vLLM serving an omni model, ...), a local
transformers model, or a sidecar reader. All take (instruction, RGB frames, wav bytes, source path) and return
a ``Reply``: raw caption text and why generation stopped ("stop", or "length" when the reply was cut
off); the models ignore the source, the sidecar backend reads only it (the caption that
``ovi-toy make`` stored in ``{stem}.json`` next to each source video; it then goes through the same
normalisation and validation as a model's reply).

Server failures (unreachable, 5xx, timeouts) are retried and then raised: a broken server must stop the run,
not reject every clip. A 400 for one request is about that clip and comes back as ``RequestRefused``.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

import cv2
import numpy as np

from data_pipeline.config import CaptionConfig, resolve_device
from data_pipeline.manifest import FatalError
from ovi.toy.sidecar import read_caption

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
RETRY_BACKOFF_S = 2.0


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str = "stop"  # "length": cut off at max_tokens (OpenAI's finish_reason)


class CaptionServerError(FatalError):
    """The caption server is unreachable or failing; fix it (or caption.base_url) and re-run: the run resumes."""


class RequestRefused(Exception):
    """The server refused this one request (HTTP 400), e.g. a clip too long for the model's context."""


class MalformedReply(Exception):
    """The reply has no text where an OpenAI chat completion has it."""


class CaptionBackend(Protocol):
    def generate(self, instruction: str, frames: Sequence[np.ndarray], wav: bytes,
                 source: Optional[Path] = None) -> Reply: ...


def _fit(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return frame
    return cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def jpeg_data_url(frame: np.ndarray, max_side: int) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_fit(frame, max_side), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode a frame")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class OpenAIBackend:
    def __init__(self, cfg: CaptionConfig) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(cfg.api_key_env, "")

    def request_body(self, instruction: str, frames: Sequence[np.ndarray], wav: bytes) -> dict:
        content: list[dict] = [{"type": "text", "text": instruction}]
        content += [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, self.cfg.frame_max_side)}}
                    for f in frames]
        audio_b64 = base64.b64encode(wav).decode("ascii")
        if self.cfg.audio_part == "input_audio":
            content.append({"type": "input_audio", "input_audio": {"data": audio_b64, "format": "wav"}})
        else:
            content.append({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + audio_b64}})
        return {"model": self.cfg.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature}

    def generate(self, instruction: str, frames: Sequence[np.ndarray], wav: bytes,
                 source: Optional[Path] = None) -> Reply:
        body = json.dumps(self.request_body(instruction, frames, wav)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code == 400:
                    raise RequestRefused(f"HTTP 400: {detail}") from None
                if e.code < 500 and e.code != 429:
                    raise CaptionServerError(f"{self.url} answered HTTP {e.code}: {detail}; check caption.base_url, "
                                             f"caption.model and ${self.cfg.api_key_env}") from None
                last_error = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last_error = str(e)
            except json.JSONDecodeError as e:
                raise MalformedReply(f"reply is not JSON: {e}") from None
            log.warning("caption server attempt %d/%d failed: %s", attempt, self.cfg.max_attempts, last_error)
            time.sleep(RETRY_BACKOFF_S * attempt)
        else:
            raise CaptionServerError(f"{self.url} failed {self.cfg.max_attempts} times; last error: {last_error}")
        try:
            text = reply["choices"][0]["message"]["content"]
            finish = reply["choices"][0].get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            raise MalformedReply(f"no choices[0].message.content in {json.dumps(reply)[:300]}") from None
        if isinstance(text, list):  # some servers return content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if not isinstance(text, str):
            raise MalformedReply(f"message content is {type(text).__name__}, not text")
        return Reply(text, str(finish))


class TransformersBackend:
    """A local omni model (default: Qwen2.5-Omni's thinker, text output only) through its processor's chat
    template. ``caption.model`` is a local folder; ``caption.model_class`` the transformers class to load."""

    def __init__(self, cfg: CaptionConfig) -> None:
        import torch
        import transformers

        self.cfg = cfg
        self.processor = transformers.AutoProcessor.from_pretrained(cfg.model)
        model_cls = getattr(transformers, cfg.model_class, None)
        if model_cls is None:
            raise ValueError(f"transformers {transformers.__version__} has no {cfg.model_class}; "
                             "set caption.model_class to a class it has")
        self.device = resolve_device(cfg.device)
        self.model = model_cls.from_pretrained(cfg.model, torch_dtype=getattr(torch, cfg.dtype)).eval().to(self.device)

    def generate(self, instruction: str, frames: Sequence[np.ndarray], wav: bytes,
                 source: Optional[Path] = None) -> Reply:
        import soundfile as sf
        import torch
        from PIL import Image

        audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
        images = [Image.fromarray(_fit(f, self.cfg.frame_max_side)) for f in frames]
        content = [{"type": "image"} for _ in images] + [{"type": "audio"}, {"type": "text", "text": instruction}]
        prompt = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                    add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=prompt, images=images or None, audio=[audio], sampling_rate=rate,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_tokens, do_sample=self.cfg.temperature > 0,
                                      temperature=self.cfg.temperature or None)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        text = self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]
        return Reply(text, "length" if new_tokens.shape[1] >= self.cfg.max_tokens else "stop")


class SidecarBackend:
    """Captions from sidecars: ``{source stem}.json``'s ``caption`` next to the clip's source video. A clip cut
    from a longer source gets the source's caption, so use it for sources that are one clip long (toy clips
    are exactly 121 frames). A source without a sidecar is refused (that clip is rejected, the run goes on)."""

    def __init__(self, cfg: CaptionConfig) -> None:
        self.cfg = cfg

    def generate(self, instruction: str, frames: Sequence[np.ndarray], wav: bytes,
                 source: Optional[Path] = None) -> Reply:
        if source is None:
            raise ValueError("the sidecar caption backend needs the clip's source path; the caption stage passes it")
        try:
            return Reply(read_caption(source))
        except FileNotFoundError as e:  # ovi.toy.sidecar.MissingCaption, or the file gone since
            raise RequestRefused(str(e)) from None


_BACKENDS = {"openai": OpenAIBackend, "transformers": TransformersBackend, "sidecar": SidecarBackend}


def build_backend(cfg: CaptionConfig) -> CaptionBackend:
    return _BACKENDS[cfg.backend](cfg)

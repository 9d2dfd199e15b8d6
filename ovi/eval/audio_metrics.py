"""Audio metrics: PANNs (FD, KL, IS), CLAP text-audio score, AudioBox-Aesthetics and speech WER.

Each metric wraps a network built by its library (panns-inference's Cnn14, transformers' CLAP and Whisper,
audiobox-aesthetics' AesMultiOutput); ``load_*`` reads released weights from a local path, tests pass tiny
random networks of the same architecture. ``score(clips) -> (per-clip rows, aggregate)``.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.signal import resample_poly

from ovi.eval.clips import EvalClip, speech_text
from ovi.eval.hf import DualEncoderMetric
from ovi.eval.stats import frechet_distance_features, inception_score, kl_divergence
from ovi.geometry import SAMPLE_RATE

NAN = float("nan")
# PANNs' 16 kHz Cnn14 (the released Cnn14_16k checkpoint's front end).
CNN14_16K = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527)
CLAP_RATE = 48_000
AUDIOBOX_AXES = ("CE", "CU", "PC", "PQ")  # content enjoyment/usefulness, production complexity/quality


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    g = np.gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32) if rate != target else audio


def _panns_models() -> types.ModuleType:
    """panns_inference.models without the package __init__, which fetches the AudioSet label csv with wget at
    import time (nothing may download here)."""
    if "panns_inference" not in sys.modules:
        spec = importlib.util.find_spec("panns_inference")
        if spec is None:
            raise ImportError("PANNs metrics need panns-inference: pip install 'ovi[eval]'")
        pkg = types.ModuleType("panns_inference")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["panns_inference"] = pkg
    return importlib.import_module("panns_inference.models")


def cnn14(state_dict: dict | None = None) -> torch.nn.Module:
    """PANNs Cnn14 at 16 kHz; random weights unless a state dict is given."""
    model = _panns_models().Cnn14(**CNN14_16K)
    if state_dict is not None:
        model.load_state_dict(state_dict.get("model", state_dict))
    return model.eval()


def load_cnn14(path: str | Path) -> torch.nn.Module:
    return cnn14(torch.load(path, map_location="cpu", weights_only=False))


class PannsMetric:
    """IS of the generated set; with references, FD on the 2048-d embeddings and the paired KL (MMAudio's
    protocol: KL(reference || generated) of the class distributions, averaged over clips)."""

    name = "panns"

    def __init__(self, model: torch.nn.Module, device: str = "cpu", max_seconds: float | None = None) -> None:
        self.model, self.device = model.to(device).eval(), device
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)  # protocol crops

    @torch.no_grad()
    def features(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding [2048], class probabilities [527]) of 16 kHz mono audio."""
        audio = audio[: self.max_samples]
        out = self.model(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None].to(self.device))
        return out["embedding"][0].float().cpu().numpy(), out["clipwise_output"][0].float().cpu().numpy()

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        gen = [self.features(c.audio) for c in clips]
        emb, probs = np.stack([g[0] for g in gen]), np.stack([g[1] for g in gen])
        agg = {"panns_is": inception_score(probs)}
        rows: list[dict] = [{} for _ in clips]
        paired = [i for i, c in enumerate(clips) if c.reference is not None]
        if paired:
            from ovi.media import read_audio

            ref = [self.features(read_audio(clips[i].reference, SAMPLE_RATE)) for i in paired]
            kl = kl_divergence(np.stack([r[1] for r in ref]), probs[paired])
            for i, v in zip(paired, kl):
                rows[i]["panns_kl"] = float(v)
            agg["panns_kl"] = float(kl.mean())
            if len(paired) >= 2:
                agg["panns_fd"] = frechet_distance_features(emb[paired], np.stack([r[0] for r in ref]))
        return rows, agg


class ClapMetric(DualEncoderMetric):
    """Cosine similarity between the CLAP embeddings of the prompt and of the audio (48 kHz)."""

    name = "clap"
    model_class, processor_class = "ClapModel", "ClapProcessor"

    @torch.no_grad()
    def similarity(self, prompt: str, audio: np.ndarray) -> float:
        text = self.processor.tokenizer([prompt], return_tensors="pt", padding=True, truncation=True)
        feats = self.processor.feature_extractor(resample(audio, SAMPLE_RATE, CLAP_RATE), sampling_rate=CLAP_RATE,
                                                 return_tensors="pt")
        t = self._vector(self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()}))
        a = self._vector(self.model.get_audio_features(**{k: v.to(self.device) for k, v in feats.items()}))
        return float(torch.nn.functional.cosine_similarity(t, a).item())

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        rows = [{"clap": self.similarity(c.prompt, c.audio)} for c in clips]
        return rows, {"clap": float(np.mean([r["clap"] for r in rows]))}


class AudioboxMetric:
    """AudioBox-Aesthetics' four axes per clip (the model's 16 kHz input, denormalised scores)."""

    name = "audiobox"

    def __init__(self, model, device: str = "cpu") -> None:
        self.model, self.device = model.to(device).eval(), device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> AudioboxMetric:
        from audiobox_aesthetics.model.aes import AesMultiOutput

        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        keys = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
                "precision", "normalize_embed", "output_dim")
        model = AesMultiOutput(**{k: ckpt["model_cfg"][k] for k in keys}, target_transform=ckpt["target_transform"])
        model.load_state_dict({re.sub("^model.", "", k): v for k, v in ckpt["state_dict"].items()})
        return cls(model, device)

    @torch.no_grad()
    def axes(self, audio: np.ndarray) -> dict[str, float]:
        wav = torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None, None].to(self.device)  # [1, 1, N]
        preds = self.model({"wav": wav})
        tt = self.model.target_transform or {}
        out = {}
        for axis in AUDIOBOX_AXES:
            v = float(preds[axis].reshape(-1)[0])
            if axis in tt:  # the network predicts normalised scores
                v = v * tt[axis]["std"] + tt[axis]["mean"]
            out[f"aes_{axis}"] = v
        return out

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        rows = [self.axes(c.audio) for c in clips]
        return rows, {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def normalise_words(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: WER counts words, not spelling of punctuation."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


class WhisperTranscriber:
    """transformers Whisper: 16 kHz audio -> text (English transcription, greedy)."""

    def __init__(self, model, processor, device: str = "cpu", max_new_tokens: int = 128) -> None:
        self.model, self.processor, self.device = model.to(device).eval(), processor, device
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> WhisperTranscriber:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        return cls(WhisperForConditionalGeneration.from_pretrained(folder), WhisperProcessor.from_pretrained(folder),
                   device)

    @torch.no_grad()
    def __call__(self, audio: np.ndarray) -> str:
        feats = self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        kwargs = {"language": "en", "task": "transcribe"} if getattr(
            self.model.generation_config, "lang_to_id", None) else {}
        ids = self.model.generate(feats.input_features.to(self.device), max_new_tokens=self.max_new_tokens,
                                  do_sample=False, **kwargs)
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0]


class WerMetric:
    """Word error rate of the transcription against the prompt's <S>…<E> text (clips without speech: NaN)."""

    name = "wer"

    def __init__(self, transcribe: Callable[[np.ndarray], str]) -> None:
        self.transcribe = transcribe

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        import jiwer

        rows, refs, hyps = [], [], []
        for c in clips:
            ref = normalise_words(speech_text(c.prompt))
            if not ref:
                rows.append({"wer": NAN})
                continue
            hyp = normalise_words(self.transcribe(c.audio))
            rows.append({"wer": float(jiwer.wer(ref, hyp)), "transcript": hyp})
            refs.append(ref)
            hyps.append(hyp)
        # Corpus WER: errors over all reference words, as ASR papers report it.
        return rows, ({"wer": float(jiwer.wer(refs, hyps))} if refs else {})

"""UMT5-XXL text encoder (transformers ``UMT5EncoderModel``) as Ovi/Wan use it.

prompts -> clean (ftfy, html-unescape twice, collapse whitespace) -> tokenise to ``text_len`` (512) with
padding and truncation -> encoder with the attention mask -> each output trimmed to its true token count:
``list[Tensor [L_i, 4096]]``. The DiT zero-pads these back to ``text_len`` itself.

Precision: the released ``models_t5_umt5-xxl-enc-bf16.pth`` is bfloat16 and Ovi runs the encoder in
bfloat16, so that is the default ``dtype``; pass ``torch.float32`` for exact math (weights upcast).
Attention is transformers' ``eager`` implementation: it reproduces the reference op for op, while
``sdpa`` differs by ~1e-2 rel_l2 in bf16 (different rounding order of the masked softmax).
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ftfy
import regex
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from ovi.release import DEFAULT_ROOT, TEXT_ENCODER, TOKENIZER
from ovi.state_dict_utils import check_state_dict, load_release_state_dict, rename_keys

TOKENIZER_ID = "google/umt5-xxl"  # its hub repo; the release ships a copy of its files (TOKENIZER_DIR)
TOKENIZER_DIR = f"{DEFAULT_ROOT}/{TOKENIZER.local}"  # where ovi-download places the tokenizer files

TEXT_LEN = 512  # tokens per prompt after padding / truncation (the DiT's text_len)

# UMT5Config of the Wan2.2 / Ovi UMT5-XXL encoder: per-layer relative position bias (32 buckets,
# max distance 128), gated tanh-GELU FFN, RMS norm eps 1e-6, unscaled attention, no biases.
UMT5_XXL_CONFIG: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
}
ATTN_IMPLEMENTATION = "eager"

# Wan's T5Encoder names -> transformers UMT5EncoderModel names.
_WAN_T5_TO_HF: list[tuple[str, str]] = [
    (r"^token_embedding\.", "shared."),
    (r"^norm\.", "encoder.final_layer_norm."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.attn\.(q|k|v|o)\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
]
# transformers keeps the token embedding under two names (one tensor); the release file has it once.
_TIED_ALIAS, _TIED_SOURCE = "encoder.embed_tokens.weight", "shared.weight"

_WHITESPACE = regex.compile(r"\s+")  # the `regex` module, as the reference uses: \s is Unicode White_Space


def clean_prompt(text: str) -> str:
    """The reference tokenizer's ``clean='whitespace'``: ftfy, html-unescape twice, collapse whitespace.

    ftfy already unescapes HTML once, so ``&amp;amp;amp;`` ends as ``&``; non-breaking spaces collapse,
    zero-width spaces stay.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


def umt5_config(overrides: Mapping[str, Any] | None = None) -> UMT5Config:
    """``UMT5Config`` of the release encoder with ``overrides`` applied (unknown names are an error)."""
    values = dict(UMT5_XXL_CONFIG)
    for key, value in (overrides or {}).items():
        if key not in values:
            raise ValueError(f"unknown UMT5 config key {key!r}; valid keys: {sorted(values)}")
        values[key] = value
    return UMT5Config(**values, attn_implementation=ATTN_IMPLEMENTATION)


def build_umt5_encoder(
    overrides: Mapping[str, Any] | None = None, device: torch.device | str | None = None
) -> UMT5EncoderModel:
    """Construct ``UMT5EncoderModel`` (random init, or parameter-free shells with ``device='meta'``)."""
    with torch.device(device or "cpu"):
        return UMT5EncoderModel(umt5_config(overrides))


def convert_wan_t5_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Wan ``models_t5_umt5-xxl-enc-bf16.pth`` state_dict to ``UMT5EncoderModel`` keys.

    The tied alias ``encoder.embed_tokens.weight`` is not added (the loader ties it).
    """
    return rename_keys(state, _WAN_T5_TO_HF)


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def load_tokenizer(name_or_path: str | Path = TOKENIZER_ID) -> PreTrainedTokenizerBase:
    """The UMT5 tokenizer from a local folder or a hub id (``google/umt5-xxl``, needs network or the HF cache)."""
    path = Path(name_or_path)
    place = (
        f"Place the {TOKENIZER_ID} tokenizer files (tokenizer_config.json, special_tokens_map.json and "
        f"spiece.model or tokenizer.json) in {TOKENIZER_DIR}/ (`ovi-download` does this) and pass that folder."
    )
    if not path.exists() and not _HUB_ID.match(str(name_or_path)):
        raise FileNotFoundError(f"tokenizer folder {path} does not exist. {place}")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the tokenizer must be a folder, got the file {path}. {place}")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise OSError(f"could not load the tokenizer from {name_or_path!s} ({e}). {place}") from e


class TextEncoder(nn.Module):
    """Ovi's text encoder: ``encode(prompts) -> list[Tensor [L_i, d_model]]`` (Wan's ``T5EncoderModel.__call__``)."""

    def __init__(
        self,
        model: UMT5EncoderModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_len: int = TEXT_LEN,
    ) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean and tokenise: ``ids``, ``mask`` int64 ``[B, text_len]`` (right-padded; ``</s>`` closes each)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "this TextEncoder has no tokenizer: pass tokenizer=... to the loader (a folder with the "
                f"{TOKENIZER_ID} files, e.g. {TOKENIZER_DIR}), or call encode_ids with token ids"
            )
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt as [prompt]")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids``, ``mask`` ``[B, L]`` -> hidden states ``[B, L, d_model]`` (padded rows included)."""
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        return out.last_hidden_state

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """``ids``, ``mask`` ``[B, L]`` -> per prompt ``[L_i, d_model]``, ``L_i`` = the mask's count."""
        hidden = self(ids, mask)  # [B, L, D]
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths)]

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Prompts -> per prompt ``[L_i, d_model]`` (cleaned, tokenised to ``text_len``, trimmed)."""
        return self.encode_ids(*self.tokenize(prompts))

    # ----------------------------------------------------------------------------------- loaders
    @staticmethod
    def _resolve_tokenizer(tokenizer: str | Path | PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase | None:
        if tokenizer is None or isinstance(tokenizer, PreTrainedTokenizerBase):
            return tokenizer
        return load_tokenizer(tokenizer)

    @classmethod
    def from_wan_checkpoint(
        cls,
        path: str | Path = f"{DEFAULT_ROOT}/{TEXT_ENCODER.local}",
        *,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = TOKENIZER_DIR,
        config_overrides: Mapping[str, Any] | None = None,
        text_len: int = TEXT_LEN,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
    ) -> TextEncoder:
        """Load Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (original key names), strictly.

        ``tokenizer``: a folder, a hub id, a tokenizer object, or None (then only ``encode_ids`` works).
        ``config_overrides`` changes ``UMT5_XXL_CONFIG`` entries (e.g. sizes of a reduced model).
        """
        state = load_release_state_dict(
            path, what="UMT5-XXL text encoder", expected_file=TEXT_ENCODER.name, download_hint=TEXT_ENCODER.download_hint()
        )
        state = convert_wan_t5_state_dict(state)
        model = build_umt5_encoder(config_overrides, device="meta")
        expected = {k: v.shape for k, v in model.state_dict().items() if k != _TIED_ALIAS}
        check_state_dict(
            expected,
            state,
            source=f"{path} (after renaming Wan T5 keys to transformers')",
            hint=f"Expected Wan's {TEXT_ENCODER.name} ({TEXT_ENCODER.repo}) with config overrides "
            f"{dict(config_overrides or {})} (a model of other sizes needs matching config_overrides)",
        )
        state = {k: v.to(dtype) for k, v in state.items()}
        state[_TIED_ALIAS] = state[_TIED_SOURCE]
        model.load_state_dict(state, strict=True, assign=True)
        model.set_input_embeddings(model.shared)  # one embedding module under both names
        return cls(model.to(device=device), tokenizer=cls._resolve_tokenizer(tokenizer), text_len=text_len)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = TOKENIZER_DIR,
        text_len: int = TEXT_LEN,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
    ) -> TextEncoder:
        """Load a transformers-format ``text_encoder/`` folder (``config.json`` + safetensors), e.g. the one in
        ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, or a folder written by ``self.model.save_pretrained``."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no transformers text encoder folder at {path}: expected config.json and model*.safetensors there "
                "(the `text_encoder/` folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers). For Wan's release file use "
                "TextEncoder.from_wan_checkpoint."
            )
        model = UMT5EncoderModel.from_pretrained(path, dtype=dtype, attn_implementation=ATTN_IMPLEMENTATION)
        return cls(model.to(device=device), tokenizer=cls._resolve_tokenizer(tokenizer), text_len=text_len)

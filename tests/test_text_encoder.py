"""UMT5 text encoder: release key layout, fixture outputs at both tiers, text cleaning, tokenizer path, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_close
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ovi.codecs.text_encoder import (
    TOKENIZER_DIR,
    TextEncoder,
    build_umt5_encoder,
    clean_prompt,
    convert_wan_t5_state_dict,
    load_tokenizer,
)
from ovi.release import TEXT_ENCODER
from ovi.state_dict_utils import StateDictMismatchError

RELEASE_FILE = TEXT_ENCODER.name  # a fixture holds the release file under its release name

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 as in the UMT5 vocabulary


def _config(fixture: Path) -> dict:
    return json.loads((fixture / "config.json").read_text())


def _load(fixture: Path, dtype: torch.dtype, tokenizer=None) -> TextEncoder:
    cfg = _config(fixture)
    return TextEncoder.from_wan_checkpoint(
        fixture / RELEASE_FILE,
        tokenizer=tokenizer,
        config_overrides=cfg["umt5_config"],
        text_len=cfg["build"]["text_len"],
        dtype=dtype,
    )


# ----------------------------------------------------------------------------- full-size layout


def test_full_size_keys_match_release_manifest(reference_dir: Path) -> None:
    manifest = json.loads((reference_dir / "umt5_xxl_encoder_keys.json").read_text())
    release = {t["key"]: torch.empty(t["shape"], device="meta") for t in manifest["tensors"]}
    renamed = convert_wan_t5_state_dict(release)
    assert len(renamed) == len(release) == manifest["totals"]["num_tensors"], "renaming must be one-to-one"

    model = build_umt5_encoder(device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # transformers lists the token embedding a second time under its tied alias.
    assert expected.pop("encoder.embed_tokens.weight") == expected["shared.weight"]
    assert {k: tuple(v.shape) for k, v in renamed.items()} == expected
    assert sum(p.numel() for p in model.parameters()) == manifest["totals"]["all"]  # tied weight counted once
    assert model.config._attn_implementation == "eager"


# --------------------------------------------------------------------------------- fixture tiers


def _check_tier(fixture: Path, dtype: torch.dtype, target: str, tier: str) -> None:
    cfg = _config(fixture)
    inputs = load_file(fixture / "inputs.safetensors")
    ref = load_file(fixture / cfg["tolerances"][tier]["target"])
    assert target == cfg["tolerances"][tier]["target"]
    encoder = _load(fixture, dtype)
    contexts = encoder.encode_ids(inputs["ids"], inputs["mask"])
    with torch.no_grad():
        padded = encoder(inputs["ids"], inputs["mask"])
    out = {f"context.{i}": c for i, c in enumerate(contexts)} | {"context_padded": padded}
    assert set(out) == set(ref)
    assert [c.shape[0] for c in contexts] == cfg["checks"]["mask_lengths"]
    tol = cfg["tolerances"][tier]["groups"]["context"]
    for key, value in out.items():
        assert value.dtype == dtype
        bound = {"abs_": tol["max_abs"]} if "max_abs" in tol else {"abs_frac_of_max": tol["max_abs_over_ref_max"]}
        assert_close(value, ref[key], rel=tol["rel_l2"], name=f"{tier} {key}", **bound)


def test_exact_tier_float32_matches_fp64(text_encoder_dir: Path) -> None:
    _check_tier(text_encoder_dir, torch.float32, "outputs_fp64.safetensors", "exact")


def test_bf16_tier_matches_release_dtype(text_encoder_dir: Path) -> None:
    _check_tier(text_encoder_dir, torch.bfloat16, "outputs_bf16.safetensors", "bf16")


def test_token_embedding_is_one_tensor(text_encoder_dir: Path) -> None:
    model = _load(text_encoder_dir, torch.float32).model
    assert model.encoder.embed_tokens.weight is model.shared.weight


def test_transformers_folder_loads_the_same_model(text_encoder_dir: Path, tmp_path: Path) -> None:
    encoder = _load(text_encoder_dir, torch.float32)
    encoder.model.save_pretrained(tmp_path / "text_encoder")
    again = TextEncoder.from_pretrained(tmp_path / "text_encoder", tokenizer=None, dtype=torch.float32)
    inputs = load_file(text_encoder_dir / "inputs.safetensors")
    for a, b in zip(again.encode_ids(inputs["ids"], inputs["mask"]), encoder.encode_ids(inputs["ids"], inputs["mask"])):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------- text cleaning


def test_cleaning_reproduces_reference(text_encoder_dir: Path) -> None:
    records = json.loads((text_encoder_dir / "text_cleaning.json").read_text())["records"]
    for rec in records:
        assert clean_prompt(rec["input"]) == rec["t5_clean"], rec["input"]
        # The string the tokenizer sees for a formatted positive prompt is the cleaned formatter output.
        for key in (k for k in rec if k.startswith("t5_input.")):
            model_name = key.removeprefix("t5_input.")
            assert clean_prompt(rec[f"engine_formatter.{model_name}"]) == rec[key], (key, rec["input"])


# --------------------------------------------------------------------------- tokenizer, strings

WORDS = ["tom", "&", "jerry", "run", "fast", "a", "cat", "plays", "piano", "."]


@pytest.fixture()
def tiny_tokenizer_dir(tmp_path: Path) -> Path:
    """A word-level tokenizer with UMT5's special ids (pad 0, </s> 1, unk 2), saved as a tokenizer folder."""
    vocab = {PAD: 0, EOS: 1, UNK: 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    folder = tmp_path / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK).save_pretrained(folder)
    return folder


def test_prompts_are_cleaned_tokenised_and_trimmed(text_encoder_dir: Path, tiny_tokenizer_dir: Path) -> None:
    encoder = _load(text_encoder_dir, torch.float32, tokenizer=tiny_tokenizer_dir)
    text_len = encoder.text_len
    vocab = {w: i + 3 for i, w in enumerate(WORDS)}
    long_prompt = " ".join(["cat"] * (2 * text_len))
    prompts = ["tom &amp;amp; jerry\u00a0 run\n fast", "", long_prompt]

    ids, mask = encoder.tokenize(prompts)
    first = [vocab[w] for w in ("tom", "&", "jerry", "run", "fast")] + [1]  # cleaned, then </s>
    assert ids.shape == mask.shape == (len(prompts), text_len)
    assert ids[0].tolist() == first + [0] * (text_len - len(first))
    assert mask[0].tolist() == [1] * len(first) + [0] * (text_len - len(first))
    assert ids[1, 0] == 1 and mask[1].sum() == 1  # an empty prompt is just </s>
    assert mask[2].sum() == text_len and ids[2, -1] == 1  # truncated, still closed by </s>

    contexts = encoder.encode(prompts)
    assert [c.shape for c in contexts] == [(len(first), encoder.dim), (1, encoder.dim), (text_len, encoder.dim)]
    padded = encoder(ids, mask)
    for ctx, full, n in zip(contexts, padded, mask.sum(dim=1).tolist()):
        assert torch.equal(ctx, full[:n])
    # Cleaning happens inside encode: the raw and the pre-cleaned prompt give the same embedding.
    assert torch.equal(encoder.encode([clean_prompt(prompts[0])])[0], contexts[0])


def test_tokenizer_errors_name_the_folder(text_encoder_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=TOKENIZER_DIR):
        load_tokenizer(tmp_path / "nowhere" / "umt5-xxl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match=TOKENIZER_DIR):
        load_tokenizer(tmp_path / "empty")
    encoder = _load(text_encoder_dir, torch.float32, tokenizer=None)
    with pytest.raises(RuntimeError, match="no tokenizer"):
        encoder.encode(["a cat"])


# ------------------------------------------------------------------------------------- errors


def test_missing_release_file_names_it_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        TextEncoder.from_wan_checkpoint(tmp_path / RELEASE_FILE, tokenizer=None)
    message = str(err.value)
    assert RELEASE_FILE in message and "ovi-download" in message and "checkpoints/Wan2.2-TI2V-5B" in message
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder.from_pretrained(tmp_path, tokenizer=None)


def test_wrong_keys_are_listed_with_counts(text_encoder_dir: Path, tmp_path: Path) -> None:
    state = torch.load(text_encoder_dir / RELEASE_FILE, weights_only=True)
    dropped = [k for k in state if k.startswith("blocks.0.")]
    for k in dropped:
        del state[k]
    state["blocks.0.attn.extra.weight"] = torch.zeros(1)
    state["norm.weight"] = torch.zeros(state["norm.weight"].numel() + 1)
    path = tmp_path / RELEASE_FILE
    torch.save(state, path)
    cfg = _config(text_encoder_dir)
    with pytest.raises(StateDictMismatchError) as err:
        TextEncoder.from_wan_checkpoint(path, tokenizer=None, config_overrides=cfg["umt5_config"])
    message = str(err.value)
    assert f"{len(dropped)} missing keys" in message and "encoder.block.0.layer.0.SelfAttention.q.weight" in message
    assert "1 unexpected keys: blocks.0.attn.extra.weight" in message
    assert "1 mis-shaped keys: encoder.final_layer_norm.weight" in message


def test_release_config_rejects_reduced_file(text_encoder_dir: Path) -> None:
    with pytest.raises(StateDictMismatchError, match=r"\d+ missing keys.*\d+ mis-shaped keys: shared.weight"):
        TextEncoder.from_wan_checkpoint(text_encoder_dir / RELEASE_FILE, tokenizer=None)

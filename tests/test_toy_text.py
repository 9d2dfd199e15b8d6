"""The toy's text encoder (ovi.toy.text): word tokens with a character fallback, features that carry their
neighbours, and the saved folder loading to the same features through the release's loaders."""
from __future__ import annotations

import torch

from ovi.codecs.text_encoder import TextEncoder, load_tokenizer
from ovi.toy.codecs import save_text_encoder
from ovi.toy.text import build_text_encoder, word_tokenizer

CAPTIONS = ["Two red balls bounce on a grey floor in front of a white wall. Audio: sharp knocks.",
            "A blue lamp flashes against a charcoal wall. Audio: one tone per flash.",
            "A drawn face on a beige background says <S>Hello world.<E> Audio: robotic speech."]


def _tokens(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text).input_ids)


def test_known_words_are_one_token_and_unknown_words_fall_back_to_characters():
    tok = word_tokenizer(CAPTIONS)
    assert _tokens(tok, "White wall.") == ["white", "wall", ".", "</s>"]  # lower-cased, punctuation split off
    assert _tokens(tok, "zebra") == ["z", "##e", "##b", "##r", "##a", "</s>"]
    assert tok.unk_token_id not in tok("Any ASCII text, even ~odd~ words!").input_ids


def _features(encoder, tok, text: str) -> torch.Tensor:
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(input_ids=ids).last_hidden_state[0]  # [L, d]


def test_a_word_feature_depends_on_its_neighbours_far_more_than_on_distant_words():
    encoder, tok = build_text_encoder(CAPTIONS, text_dim=64)
    text = "two red balls bounce on a grey floor in front of a white wall"
    base = _features(encoder, tok, text)
    neighbour = _features(encoder, tok, text.replace("white wall", "white floor"))
    distant = _features(encoder, tok, text.replace("red", "blue"))
    white = _tokens(tok, text).index("white")
    assert _tokens(tok, text)[white + 1] == "wall"  # every word is in the vocabulary: one token each
    moved_by_neighbour = (base[white] - neighbour[white]).norm()
    moved_by_distant = (base[white] - distant[white]).norm()
    assert moved_by_neighbour > 10 * moved_by_distant


def test_saved_folder_loads_to_the_same_features(tmp_path):
    save_text_encoder(tmp_path, 64, CAPTIONS, seed=3)
    encoder, tok = build_text_encoder(CAPTIONS, text_dim=64, seed=3)
    loaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tokenizer=tmp_path / "tokenizer", text_len=64,
                                         dtype=torch.float32)
    text = CAPTIONS[0]
    assert load_tokenizer(tmp_path / "tokenizer")(text).input_ids == tok(text).input_ids
    torch.testing.assert_close(loaded.encode([text])[0].float(), _features(encoder, tok, text), rtol=1e-5, atol=1e-5)

"""Text encoders: MiniLM offline, a tiny umT5, the hash encoder, the cache, umT5 loading errors."""

from __future__ import annotations

import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach a hub

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longvid.errors import WeightsError
from longvid.loading import load_minilm, load_umt5
from longvid.text import CachedTextEncoder, HashTextEncoder, HFTextEncoder, TextEncoder

MAX_LENGTH = 16
MINILM_DIM = 384
PROMPTS = ["a red ball rolls across the floor", "a cat sleeps", "a red ball rolls across the floor"]
LONG = " ".join(["waves crash on a rocky shore under a grey sky"] * 6)  # > MAX_LENGTH tokens


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def minilm_encoder(minilm) -> HFTextEncoder:
    model, tokenizer = minilm
    return HFTextEncoder(model, tokenizer, MAX_LENGTH)


def token_lengths(tokenizer, prompts: list[str], max_length: int) -> list[int]:
    batch = tokenizer(prompts, max_length=max_length, truncation=True)
    return [len(ids) for ids in batch["input_ids"]]


def assert_zero_padding(out: torch.Tensor, lengths: list[int]) -> None:
    """Positions < length are real tokens (non-zero vectors), positions >= length exactly 0."""
    for row, n in zip(out, lengths):
        assert (row[:n].abs().sum(-1) > 0).all()
        assert torch.equal(row[n:], torch.zeros_like(row[n:]))


# --- MiniLM ------------------------------------------------------------------------------


def test_minilm_loads_offline_and_encodes(minilm_encoder):
    assert isinstance(minilm_encoder, TextEncoder)
    assert (minilm_encoder.dim, minilm_encoder.max_length) == (MINILM_DIM, MAX_LENGTH)
    out = minilm_encoder.encode(PROMPTS)
    assert out.shape == (3, MAX_LENGTH, MINILM_DIM) and out.dtype == torch.float32
    assert not out.is_inference()  # usable by training code
    lengths = token_lengths(minilm_encoder.tokenizer, PROMPTS, MAX_LENGTH)
    assert lengths[1] < lengths[0] < MAX_LENGTH
    assert_zero_padding(out, lengths)
    assert torch.equal(out[0], out[2])  # same prompt -> identical
    assert not torch.allclose(out[0], out[1])  # different prompts differ


def test_minilm_truncates_to_max_length(minilm_encoder):
    # Two prompts that agree on their first MAX_LENGTH tokens and differ only after them.
    out = minilm_encoder.encode([LONG, LONG + " and then a dragon appears"])
    assert_zero_padding(out, [MAX_LENGTH, MAX_LENGTH])  # every position is a real token
    torch.testing.assert_close(out[0], out[1])


def test_encoding_does_not_depend_on_the_batch(minilm_encoder):
    # The cache relies on this: a prompt's embedding is the same alone or next to a longer one.
    alone = minilm_encoder.encode(["a cat sleeps"])
    batched = minilm_encoder.encode(["a cat sleeps", LONG])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)


# --- a tiny umT5 -------------------------------------------------------------------------


def tiny_umt5(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0,
    )
    return UMT5EncoderModel(config).eval()


def test_hf_encoder_with_tiny_umt5_matches_the_model(minilm):
    _, tokenizer = minilm
    model = tiny_umt5(len(tokenizer))
    encoder = HFTextEncoder(model, tokenizer, MAX_LENGTH)
    out = encoder.encode(PROMPTS[:2])
    assert out.shape == (2, MAX_LENGTH, 32) and out.dtype == torch.float32
    lengths = token_lengths(tokenizer, PROMPTS[:2], MAX_LENGTH)
    assert_zero_padding(out, lengths)
    # Real positions are exactly the model's last hidden states.
    batch = tokenizer(PROMPTS[:2], padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for row, ref, n in zip(out, hidden.last_hidden_state, lengths):
        torch.testing.assert_close(row[:n], ref[:n])


def test_hf_encoder_casts_bf16_output_to_float32(minilm):
    _, tokenizer = minilm
    encoder = HFTextEncoder(tiny_umt5(len(tokenizer)).to(torch.bfloat16), tokenizer, MAX_LENGTH)
    out = encoder.encode(["a cat sleeps"])
    assert out.dtype == torch.float32
    assert_zero_padding(out, token_lengths(tokenizer, ["a cat sleeps"], MAX_LENGTH))


def test_max_length_beyond_bert_positions_is_refused(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match="exceeds"):
        HFTextEncoder(model, tokenizer, model.config.max_position_embeddings + 1)


# --- HashTextEncoder ---------------------------------------------------------------------


def test_hash_encoder_shape_padding_and_identity():
    encoder = HashTextEncoder(dim=8, max_length=6, vocab_size=97)
    prompts = ["A cat, sleeping.", "a CAT sleeping", "a dog sleeping", "one two three four five six"]
    out = encoder.encode(prompts)
    assert out.shape == (4, 6, 8) and out.dtype == torch.float32
    assert_zero_padding(out, [3, 3, 3, 6])
    assert torch.equal(out[0], out[1])  # case and punctuation do not matter
    assert not torch.equal(out[1], out[2])
    assert torch.equal(encoder.encode([""]), torch.zeros(1, 6, 8))
    # Truncation: a seventh word is dropped.
    assert torch.equal(encoder.encode([prompts[3] + " seven"]), out[3:])


HASH_SCRIPT = (
    "import hashlib; from longvid.text import HashTextEncoder; "
    "out = HashTextEncoder(dim=16, max_length=8).encode(['a red ball', 'a cat sleeps']); "
    "print(hashlib.sha256(out.numpy().tobytes()).hexdigest())"
)


def test_hash_encoder_is_identical_across_processes():
    here = HashTextEncoder(dim=16, max_length=8).encode(["a red ball", "a cat sleeps"])
    # Another process with another str-hash seed: the encoder must not depend on hash().
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", HASH_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=root, PYTHONHASHSEED=seed),
        check=True,
    )
    assert result.stdout.strip() == hashlib.sha256(here.numpy().tobytes()).hexdigest()


# --- CachedTextEncoder -------------------------------------------------------------------


class CountingEncoder(HashTextEncoder):
    def __init__(self) -> None:
        super().__init__(dim=4, max_length=5)
        self.calls: list[list[str]] = []

    def encode(self, prompts: list[str]) -> torch.Tensor:
        self.calls.append(list(prompts))
        return super().encode(prompts)


def test_cached_encoder_hits_misses_and_lru():
    inner = CountingEncoder()
    cached = CachedTextEncoder(inner, max_entries=2)
    assert (cached.dim, cached.max_length) == (4, 5)

    first = cached.encode(["a", "b", "a"])
    assert (cached.misses, cached.hits) == (2, 1)
    assert inner.calls == [["a", "b"]]  # misses encoded once, in one batch
    torch.testing.assert_close(first, inner.encode(["a", "b", "a"]))
    inner.calls.clear()

    again = cached.encode(["b", "a"])
    assert (cached.misses, cached.hits) == (2, 3) and inner.calls == []
    torch.testing.assert_close(again, first[[1, 0]])

    again.zero_()  # callers get a copy, not the cache's storage
    torch.testing.assert_close(cached.encode(["a"])[0], first[0])  # "a" most recent now

    cached.encode(["c"])  # evicts "b", the least recently used
    assert len(cached) == 2 and inner.calls == [["c"]]
    cached.encode(["a"])
    assert inner.calls == [["c"]]
    cached.encode(["b"])
    assert inner.calls == [["c"], ["b"]]


# --- load_umt5 ---------------------------------------------------------------------------


def test_load_umt5_missing_directory_is_a_weights_error(tmp_path):
    missing = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    with pytest.raises(WeightsError, match=rf"{missing}.*does not exist.*download"):
        load_umt5(missing)


def test_load_umt5_names_the_missing_piece(tmp_path):
    with pytest.raises(WeightsError, match="no umT5 encoder config"):
        load_umt5(tmp_path)
    (tmp_path / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="original Wan2.1 umT5 checkpoint.*Diffusers"):
        load_umt5(tmp_path)


def test_load_umt5_reads_a_diffusers_layout(tmp_path, minilm):
    _, tokenizer = minilm
    model = tiny_umt5(len(tokenizer))
    model.save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(WeightsError, match="no umT5 tokenizer"):
        load_umt5(tmp_path)
    tokenizer.save_pretrained(tmp_path / "tokenizer")

    loaded, loaded_tokenizer = load_umt5(tmp_path, dtype=torch.float32)
    assert type(loaded).__name__ == "UMT5EncoderModel" and not loaded.training
    expected = HFTextEncoder(model, tokenizer, MAX_LENGTH).encode(PROMPTS[:2])
    got = HFTextEncoder(loaded, loaded_tokenizer, MAX_LENGTH).encode(PROMPTS[:2])
    torch.testing.assert_close(got, expected)


def test_minilm_loads_without_a_progress_bar(capfd):
    """`longvid generate --quiet` and the CLI's own output must not get transformers' loading bar;
    the global progress-bar setting is left as it was."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    load_minilm()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == before

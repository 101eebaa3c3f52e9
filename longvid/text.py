"""Text encoders: prompt strings -> per-token embeddings the DiT cross-attends over.

Every encoder returns (B, max_length, dim) float32 with the positions past each prompt's true
token length set to exactly zero: the Wan convention, where the DiT attends over all
`max_length` positions and padding is a zero vector rather than a masked token.

Encoders take objects (model, tokenizer), never paths: `longvid.loading` opens weight files.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

import torch

# HashTextEncoder: number of hash buckets (distinct word vectors) and the seed of the table.
DEFAULT_HASH_VOCAB_SIZE = 4096
DEFAULT_HASH_SEED = 0
# Bytes of the stable word hash (blake2b digest); 8 bytes is far more than any vocab needs.
_HASH_BYTES = 8
_WORD = re.compile(r"\w+")

DEFAULT_CACHE_ENTRIES = 64


@runtime_checkable
class TextEncoder(Protocol):
    """Prompts -> (B, max_length, dim) float32 embeddings, zero past each prompt's tokens."""

    dim: int
    max_length: int

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> (B, max_length, dim) float32."""
        ...


class HFTextEncoder:
    """Per-token last hidden states of a transformers encoder (MiniLM `BertModel`, umT5).

    Prompts are truncated to `max_length` tokens (special tokens included) and padded to
    `max_length`; padded positions are zeroed by the attention mask. The model runs under
    `torch.inference_mode` on its own device and dtype (e.g. bf16 on GPU); the output is cast
    to float32 and stays on that device. The output is a normal tensor (not an inference
    tensor), so training code may feed it to modules that need autograd.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        config = model.config
        # BERT-like models have absolute positions and a hard limit; T5 (relative) has none.
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ValueError(
                f"max_length {max_length} exceeds the text encoder's {limit} positions: "
                f"use max_length <= {limit}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = int(config.hidden_size)  # T5 configs map hidden_size -> d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> (B, max_length, dim) float32 on the model's device."""
        device = self.device
        if not prompts:
            return torch.zeros(0, self.max_length, self.dim, device=device)
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tokens["input_ids"].to(device)  # (B, L)
        mask = tokens["attention_mask"].to(device)  # (B, L), 1 = real token
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
            hidden = hidden.float().masked_fill(mask[..., None] == 0, 0.0)
        return hidden.clone()  # outside inference mode: a normal tensor


class HashTextEncoder:
    """A deterministic, weight-free encoder for tests and tiny models.

    Lower-cases the prompt, splits it into words (`\\w+`), and maps each word to a fixed
    N(0, 1) vector: row `blake2b(word) % vocab_size` of a table drawn once from a generator
    seeded with `seed`. Stable across processes and platforms (no Python `hash()`); word order
    matters (one vector per position). Words past `max_length` are dropped; padding is zero.
    """

    def __init__(
        self,
        dim: int,
        max_length: int,
        vocab_size: int = DEFAULT_HASH_VOCAB_SIZE,
        *,
        seed: int = DEFAULT_HASH_SEED,
        device: torch.device | str = "cpu",
    ) -> None:
        if dim < 1 or max_length < 1 or vocab_size < 1:
            raise ValueError(
                "dim, max_length and vocab_size must be >= 1, "
                f"got {dim}, {max_length}, {vocab_size}"
            )
        self.dim = dim
        self.max_length = max_length
        self.vocab_size = vocab_size
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab_size, dim, generator=generator).to(device)  # (V, D)

    def token_ids(self, prompt: str) -> list[int]:
        """The bucket of each word of `prompt`, truncated to `max_length`."""
        words = _WORD.findall(prompt.lower())[: self.max_length]
        return [_stable_hash(word) % self.vocab_size for word in words]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> (B, max_length, dim) float32."""
        out = torch.zeros(len(prompts), self.max_length, self.dim, device=self.table.device)
        for i, prompt in enumerate(prompts):
            ids = self.token_ids(prompt)
            if ids:
                out[i, : len(ids)] = self.table[torch.tensor(ids, device=self.table.device)]
        return out


class CachedTextEncoder:
    """An LRU cache per prompt string in front of any `TextEncoder`.

    `encode` serves each prompt from the cache when it can and encodes the misses in one batch.
    `hits` / `misses` count prompts: a prompt repeated within one call is one miss, then hits.
    Sound because an encoder's output for a prompt does not depend on the rest of the batch.
    """

    def __init__(self, encoder: TextEncoder, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.encoder = encoder
        self.max_entries = max_entries
        self.dim = encoder.dim
        self.max_length = encoder.max_length
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # prompt -> (L, D)

    def __len__(self) -> int:
        return len(self._cache)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B,) prompts -> (B, max_length, dim), same as the wrapped encoder."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        # Own copies, so an entry does not keep the whole batch tensor alive.
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            fresh = {p: row.clone() for p, row in zip(missing, self.encoder.encode(missing))}
        rows = []
        for prompt in prompts:
            if prompt in fresh:
                rows.append(fresh[prompt])
            else:
                self._cache.move_to_end(prompt)
                rows.append(self._cache[prompt])
        for prompt, row in fresh.items():
            self._cache[prompt] = row
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if not rows:
            return self.encoder.encode([])
        return torch.stack(rows)  # a new tensor: callers cannot modify the cache

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._cache.clear()


def _stable_hash(word: str) -> int:
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=_HASH_BYTES).digest()
    return int.from_bytes(digest, "little")

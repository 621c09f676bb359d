"""Character tokenizer saved with the model: id 0 is the RNN-T blank."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, DataError

BLANK = "<blank>"


def normalize_text(text: str) -> str:
    """Lower-case and collapse white space; the only text normalization the model assumes."""
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass(frozen=True)
class CharTokenizer:
    """Vocabulary `(BLANK, c1, c2, ...)`; `chars` holds c1.. in id order."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ConfigError(f"tokenizer characters must be distinct single characters, got {self.chars!r}.")

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        chars = sorted({c for t in texts for c in normalize_text(t)})
        return cls(tuple(chars))

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def vocab(self) -> list[str]:
        return [BLANK, *self.chars]

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str, *, where: str = "transcript") -> list[int]:
        norm = normalize_text(text)
        if not norm:
            raise DataError(f"{where} is empty.")
        table = {c: i + 1 for i, c in enumerate(self.chars)}
        bad = sorted({c for c in norm if c not in table})
        if bad:
            raise DataError(
                f"{where} has characters outside the vocabulary: {''.join(bad)!r} (vocabulary: "
                f"{''.join(self.chars)!r})."
            )
        return [table[c] for c in norm]

    def decode(self, ids: Iterable[int]) -> str:
        return normalize_text("".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars)))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "blank_id": 0, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        vocab = d.get("vocab")
        if d.get("type") != "char" or not isinstance(vocab, list) or not vocab or vocab[0] != BLANK:
            raise ConfigError(f"not a character tokenizer: {d!r:.200}")
        return cls(tuple(vocab[1:]))

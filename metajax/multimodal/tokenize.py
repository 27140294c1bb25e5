"""Text tokenizers: a WordPiece trained offline with `tokenizers`, used through
`transformers.PreTrainedTokenizerFast` (so a pretrained one loads from a local path the same way).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from metajax.errors import ConfigError

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# transformers warns "PyTorch was not found" at import; only its tokenizer is used here, so
# silence that advice before the first import (a user's own setting wins).
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def train_tokenizer(texts: Sequence[str], vocab_size: int = 256, path: str = ""):
  """A lower-cased WordPiece tokenizer trained on `texts` (~0.1 s); saved to `path` if given.

  Returns a `transformers.PreTrainedTokenizerFast` with pad id 0.
  """
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  texts = list(texts)
  tok.train_from_iterator(texts, trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False))
  # The trainer breaks merge ties in a different order from run to run, so its ids (and
  # intermediate pieces) vary. Canonical vocabulary: the special tokens, the alphabet, then
  # the pieces the training texts are actually encoded with, each group sorted.
  words = [w for t in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(
      tok.normalizer.normalize_str(t))]
  chars = {c for w in words for c in w}
  alphabet = chars | {"##" + c for c in chars}
  used = {p for e in tok.encode_batch(texts) for p in e.tokens}
  vocab = list(SPECIAL) + sorted(alphabet - set(SPECIAL))
  vocab += sorted(used - set(vocab))
  normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer
  tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
  tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                 cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
  if path:
    fast.save_pretrained(path)
  return fast


def load_tokenizer(path: str):
  """A `PreTrainedTokenizerFast` from a local directory (ours or any pretrained fast tokenizer)."""
  from transformers import PreTrainedTokenizerFast
  if not os.path.isdir(path):
    raise ConfigError("model.tokenizer", path, "no tokenizer directory there",
                      "a directory written by save_pretrained (tokenizer.json inside)")
  tok = PreTrainedTokenizerFast.from_pretrained(path)
  if tok.pad_token_id is None:
    tok.pad_token = tok.unk_token or tok.convert_ids_to_tokens(0)
  return tok


def encode(tokenizer, texts: Sequence[str], max_len: int, truncate: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids [B, max_len] int32 and mask [B, max_len] bool (True = real token).

  Text longer than `max_len` tokens is cut to `max_len` with a logged warning when
  `truncate`, else it is a ConfigError naming the longest text and the limit.
  """
  enc = tokenizer(list(texts), add_special_tokens=False, padding=False, truncation=False)
  ids = enc["input_ids"]
  lengths = np.array([len(x) for x in ids])
  too_long = np.flatnonzero(lengths > max_len)
  if too_long.size:
    worst = int(too_long[np.argmax(lengths[too_long])])
    if not truncate:
      raise ConfigError("model.max_text_len", max_len,
                        f"{too_long.size} text(s) are longer, e.g. text {worst} has "
                        f"{lengths[worst]} tokens ({texts[worst][:60]!r})",
                        f">= {lengths.max()}, or model.truncate_text=True to cut them")
    logging.warning("truncated %d of %d texts to %d tokens (longest had %d)",
                    too_long.size, len(ids), max_len, lengths.max())
  pad = tokenizer.pad_token_id or 0
  out = np.full((len(ids), max_len), pad, np.int32)
  mask = np.zeros((len(ids), max_len), bool)
  for i, x in enumerate(ids):
    x = x[:max_len]
    out[i, :len(x)] = x
    mask[i, :len(x)] = True
  return out, mask

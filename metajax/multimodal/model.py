"""One Flax NNX transformer over image, text and table tokens (early fusion), and a
late-fusion baseline of the same encoder size.

Tokens. Image: `stem='conv'` (default) runs stride-2 3x3 convolutions over the pixels
with two coordinate channels appended (CoordConv), one token per cell of the final grid
(75x75 -> 5x5 with 4 layers, as the Relation Network's CNN); `stem='patch'` maps
non-overlapping `patch` x `patch` patches (einops) linearly. Each cell also gets a learned
or a fixed 2-D sin-cos position; `image_depth` image-only transformer blocks then run once
per image (relations between objects do not depend on the question), and `image_merge=m`
merges m x m neighbouring cells into one token (fine grid in the image blocks, fewer
tokens in the joint sequence); `image_queries=K` pools the grid into K learned-query
tokens. Text: token embedding plus position. Table: one token per cell; a categorical cell
is an embedding of its value, a numeric cell is `value * w_f + b_f` (per-feature linear),
plus a column and a row embedding. Every
token also gets its modality-type embedding; a CLS token leads the sequence.

Shared scenes. A modality may come with fewer rows than the batch: with B examples and
B / r images (or tables), image i serves examples i*r .. i*r + r - 1 and its tokens are
built once (visual QA: many questions per image; the conv stem is most of the cost).

Masks. A key mask hides padding (text pads, empty table rows) and absent modalities:
`batch['present']` [B, 3] (image, text, table) drops a modality for some examples;
leaving its keys out of the batch drops it for all (its tokens are not even built).

Fusion. 'early': one pre-LN encoder over the joint sequence, CLS pooled. 'late': the
same encoder (same weights and depth) runs over each modality alone with its own CLS;
the pooled vectors of present modalities are concatenated and mixed by one dense layer.

Example (a researcher's own batch; see `inputs.Preprocessor` for raw images/strings/tables):

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from metajax.multimodal import ModelConfig, MultimodalTransformer
  >>> cfg = ModelConfig(image_shape=(32, 32, 3), patch=8, vocab_size=100, max_text_len=8,
  ...                   table_categorical=(4,), table_numeric=2, table_rows=3,
  ...                   dim=32, depth=2, heads=4, num_classes=5, num_regression=1)
  >>> model = MultimodalTransformer(cfg, rngs=nnx.Rngs(0))
  >>> out = model({'image': jnp.zeros((2, 32, 32, 3), jnp.uint8),
  ...              'text': jnp.ones((2, 8), jnp.int32), 'text_mask': jnp.ones((2, 8), bool),
  ...              'table_cat': jnp.zeros((2, 3, 1), jnp.int32),
  ...              'table_num': jnp.zeros((2, 3, 2)), 'table_mask': jnp.ones((2, 3), bool)})
  >>> out['logits'].shape, out['regression'].shape, out['embedding'].shape
  ((2, 5), (2, 1), (2, 32))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from metajax.errors import ConfigError

MODALITIES = ("image", "text", "table")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of a multimodal transformer. `table_categorical`: vocabulary size per categorical column."""
  image_shape: tuple[int, int, int] = (75, 75, 3)
  stem: str = "conv"
  stem_channels: tuple[int, ...] = (32, 32, 32, 32)
  image_queries: int = 0
  image_pos: str = "learned"
  image_depth: int = 0
  image_merge: int = 1
  text_condition: str = "none"
  patch: int = 15
  vocab_size: int = 256
  max_text_len: int = 16
  table_categorical: tuple[int, ...] = ()
  table_numeric: int = 0
  table_rows: int = 0
  dim: int = 64
  depth: int = 4
  heads: int = 4
  mlp_dim: int = 128
  num_classes: int = 10
  num_regression: int = 0
  fusion: str = "early"
  dtype: str = "float32"

  def validate(self) -> None:
    """ConfigError (key prefixed `model.`) for sizes that cannot build a model."""
    for key in ("patch", "vocab_size", "max_text_len", "dim", "depth", "heads", "mlp_dim",
                "num_classes"):
      if getattr(self, key) <= 0:
        raise ConfigError(f"model.{key}", getattr(self, key), "must be positive", ">= 1")
    if self.stem not in ("conv", "patch"):
      raise ConfigError("model.stem", self.stem, "unknown image stem", "'conv', 'patch'")
    if self.stem == "conv" and (not self.stem_channels or min(self.stem_channels) <= 0):
      raise ConfigError("model.stem_channels", self.stem_channels,
                        "the conv stem needs at least one layer of positive width",
                        "e.g. (32, 32, 32, 32)")
    if self.image_depth < 0:
      raise ConfigError("model.image_depth", self.image_depth, "a block count",
                        "0 (image tokens go straight to fusion) or >= 1 image-only blocks")
    gh, gw = self.image_grid
    if self.image_merge < 1 or gh % self.image_merge or gw % self.image_merge:
      raise ConfigError("model.image_merge", self.image_merge,
                        f"must divide the {gh}x{gw} image grid",
                        ", ".join(str(m) for m in range(1, gh + 1) if gh % m == 0 and gw % m == 0))
    if self.image_merge > 1 and self.image_queries:
      raise ConfigError("model.image_merge", self.image_merge,
                        "merging and learned-query pooling are alternatives",
                        "image_merge=1 with image_queries, or image_queries=0")
    if self.image_queries < 0:
      raise ConfigError("model.image_queries", self.image_queries, "a token count",
                        "0 (one token per grid cell) or >= 1 learned queries")
    h, w, _ = self.image_shape
    if self.stem == "patch" and (h % self.patch or w % self.patch):
      raise ConfigError("model.patch", self.patch, f"must divide the image size {h}x{w}",
                        ", ".join(str(p) for p in range(1, h + 1) if h % p == 0 and w % p == 0))
    if self.dim % self.heads:
      raise ConfigError("model.heads", self.heads, f"must divide model.dim={self.dim}",
                        ", ".join(str(p) for p in range(1, self.dim + 1) if self.dim % p == 0))
    if self.fusion not in ("early", "late"):
      raise ConfigError("model.fusion", self.fusion, "unknown fusion", "'early', 'late'")
    if self.text_condition not in ("none", "cls", "all", "film"):
      raise ConfigError("model.text_condition", self.text_condition,
                        "how the question summary conditions the other tokens",
                        "'none', 'cls', 'all', 'film'")
    if self.image_pos not in ("learned", "sincos"):
      raise ConfigError("model.image_pos", self.image_pos, "unknown image position embedding",
                        "'learned', 'sincos'")
    if self.image_pos == "sincos" and self.dim % 4:
      raise ConfigError("model.dim", self.dim, "2-D sin-cos positions need dim % 4 == 0",
                        "a multiple of 4")
    if self.dtype not in ("float32", "bfloat16"):
      raise ConfigError("model.dtype", self.dtype, "unknown compute dtype", "'float32', 'bfloat16'")

  @property
  def image_grid(self) -> tuple[int, int]:
    """(rows, cols) of image tokens."""
    h, w, _ = self.image_shape
    if self.stem == "patch":
      return h // self.patch, w // self.patch
    for _ in self.stem_channels:  # stride 2, SAME padding
      h, w = -(-h // 2), -(-w // 2)
    return h, w

  @property
  def num_patches(self) -> int:
    """Number of image tokens."""
    if self.image_queries:
      return self.image_queries
    gh, gw = self.image_grid
    return gh * gw // self.image_merge ** 2


class Block(nnx.Module):
  """Pre-LN transformer block: x + MHA(LN(x)), x + MLP(LN(x))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, dtype, *, rngs: nnx.Rngs):
    self.heads = heads
    self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    """x [B, S, D]; key_mask [B, S] bool (False: no token may attend to it)."""
    q, k, v = rearrange(self.qkv(self.ln1(x)), "b s (t h d) -> t b h s d", t=3, h=self.heads)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e9)
    attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = rearrange(jnp.einsum("bhqk,bhkd->bhqd", attn, v), "b h s d -> b s (h d)")
    x = x + self.out(y).astype(x.dtype)
    return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x)))).astype(x.dtype)


def sincos_2d(rows: int, cols: int, dim: int) -> jax.Array:
  """Fixed [rows * cols, dim] 2-D sin-cos position embedding (MAE): dim/2 channels per axis."""
  freqs = 1.0 / 100.0 ** (jnp.arange(dim // 4) / max(1, dim // 4))
  yy, xx = jnp.meshgrid(jnp.arange(rows, dtype=jnp.float32), jnp.arange(cols, dtype=jnp.float32),
                        indexing="ij")
  ang = [a.reshape(-1, 1) * freqs for a in (xx, yy)]
  return jnp.concatenate([f(a) for a in ang for f in (jnp.sin, jnp.cos)], -1)


def coord_grid(rows: int, cols: int) -> jax.Array:
  """[rows, cols, 2] (x, y) cell coordinates in [-1, 1]."""
  yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, rows), jnp.linspace(-1, 1, cols), indexing="ij")
  return jnp.stack([xx, yy], -1)


def _param(rngs: nnx.Rngs, *shape: int, scale: float = 0.02) -> nnx.Param:
  return nnx.Param(scale * jax.random.normal(rngs.params(), shape))


class MultimodalTransformer(nnx.Module):
  """Image + text + table tokens -> {'logits' [B, C], 'regression' [B, R], 'embedding' [B, D]}."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    d = cfg.dim
    h, w, c = cfg.image_shape
    if cfg.stem == "conv":
      widths = (c + 2,) + tuple(cfg.stem_channels)  # + (x, y) coordinate channels
      self.stem_convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=2, padding="SAME", dtype=dtype,
                                     rngs=rngs) for i, o in zip(widths[:-1], widths[1:])])
      self.stem_norms = nnx.List([nnx.LayerNorm(o, rngs=rngs) for o in widths[1:]])
      self.patch_embed = nnx.Linear(widths[-1], d, dtype=dtype, rngs=rngs)
    else:
      self.patch_embed = nnx.Linear(cfg.patch * cfg.patch * c, d, dtype=dtype, rngs=rngs)
    gh, gw = cfg.image_grid
    if cfg.image_pos == "learned":
      self.patch_pos = _param(rngs, gh * gw, d, scale=1.0)
    # Image-only blocks, run once per scene (not per question) before fusion: objects can
    # relate to each other (nearest, furthest, same shape) independently of the question.
    self.image_blocks = nnx.List([Block(d, cfg.heads, cfg.mlp_dim, dtype, rngs=rngs)
                                  for _ in range(cfg.image_depth)])
    if cfg.image_merge > 1:  # m x m neighbouring cells -> one token (Swin's patch merging)
      self.merge_norm = nnx.LayerNorm(cfg.image_merge ** 2 * d, rngs=rngs)
      self.merge = nnx.Linear(cfg.image_merge ** 2 * d, d, dtype=dtype, rngs=rngs)
    if cfg.image_queries:
      # Perceiver-style pooling: K learned queries attend over the grid; values see each
      # cell's (x, y), so a query that locks onto one object pools its centroid.
      self.pool_norm = nnx.LayerNorm(d, rngs=rngs)
      self.pool_k = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
      self.pool_v = nnx.Linear(d + 2, d, dtype=dtype, rngs=rngs)
      self.queries = _param(rngs, cfg.image_queries, d, scale=1.0)
    self.tok_embed = nnx.Embed(cfg.vocab_size, d, dtype=dtype, rngs=rngs)
    self.text_pos = _param(rngs, cfg.max_text_len, d)
    n_cat = len(cfg.table_categorical)
    # All categorical columns share one table; column j's values start at offset[j].
    self.cat_offsets = tuple(int(sum(cfg.table_categorical[:j])) for j in range(n_cat))
    self.cat_embed = nnx.Embed(max(1, sum(cfg.table_categorical)), d, dtype=dtype, rngs=rngs)
    self.num_w = _param(rngs, max(1, cfg.table_numeric), d, scale=1.0)
    self.num_b = _param(rngs, max(1, cfg.table_numeric), d)
    self.col_embed = _param(rngs, max(1, n_cat + cfg.table_numeric), d)
    self.row_embed = _param(rngs, max(1, cfg.table_rows), d)
    self.type_embed = _param(rngs, 1 + len(MODALITIES), d)  # CLS, image, text, table
    self.cls = _param(rngs, len(MODALITIES) if cfg.fusion == "late" else 1, d)
    if cfg.text_condition != "none":
      self.text_summary = nnx.Linear(d, d, rngs=rngs)
    if cfg.text_condition == "film":  # zero init: starts as the identity
      self.text_film = nnx.Linear(d, 2 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.blocks = nnx.List([Block(d, cfg.heads, cfg.mlp_dim, dtype, rngs=rngs)
                            for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(d, rngs=rngs)
    if cfg.fusion == "late":
      self.fuse = nnx.Linear(len(MODALITIES) * d, d, rngs=rngs)
    self.classifier = nnx.Linear(d, cfg.num_classes, rngs=rngs)
    self.regressor = nnx.Linear(d, max(1, cfg.num_regression), rngs=rngs)

  # -- tokenizers: each returns tokens [B, S_m, D] and a key mask [B, S_m] ---------------
  def _image_tokens(self, image: jax.Array):
    x = image.astype(jnp.float32)
    if image.dtype == jnp.uint8:
      x = x / 255.0
    if self.cfg.stem == "conv":
      b, h, w, _ = x.shape
      x = jnp.concatenate([x, jnp.broadcast_to(coord_grid(h, w), (b, h, w, 2))], -1)
      for conv, norm in zip(self.stem_convs, self.stem_norms):
        x = jax.nn.relu(norm(conv(x)))
      x = rearrange(x, "b h w c -> b (h w) c")
    else:
      x = rearrange(x, "b (h p) (w q) c -> b (h w) (p q c)", p=self.cfg.patch, q=self.cfg.patch)
    pos = self.patch_pos[...] if self.cfg.image_pos == "learned" else sincos_2d(
        *self.cfg.image_grid, self.cfg.dim)
    t = self.patch_embed(x).astype(jnp.float32) + pos
    everywhere = jnp.ones(t.shape[:2], bool)
    for block in self.image_blocks:
      t = block(t.astype(block.qkv.dtype or jnp.float32), everywhere).astype(jnp.float32)
    if self.cfg.image_merge > 1:
      m, (gh, _) = self.cfg.image_merge, self.cfg.image_grid
      t = rearrange(t, "b (h p w q) d -> b (h w) (p q d)", p=m, q=m, h=gh // m)
      t = self.merge(self.merge_norm(t)).astype(jnp.float32)
    if self.cfg.image_queries:
      t = self._pool(t)
    return t, jnp.ones(t.shape[:2], bool)

  def _pool(self, t: jax.Array) -> jax.Array:
    """[B, N, D] grid tokens -> [B, K, D]: one softmax attention per learned query."""
    xy = jnp.broadcast_to(coord_grid(*self.cfg.image_grid).reshape(-1, 2), t.shape[:2] + (2,))
    t = self.pool_norm(t)
    k, v = self.pool_k(t), self.pool_v(jnp.concatenate([t, xy], -1))
    q = self.queries[...].astype(k.dtype)
    logits = jnp.einsum("kd,bnd->bkn", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
    attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bkn,bnd->bkd", attn, v).astype(jnp.float32) + self.queries[...]

  def _text_tokens(self, ids: jax.Array, mask: jax.Array):
    t = self.tok_embed(ids).astype(jnp.float32) + self.text_pos[...][: ids.shape[1]]
    return t, mask.astype(bool)

  def _table_tokens(self, cat: jax.Array, num: jax.Array, row_mask: jax.Array):
    cols = []
    if self.cat_offsets:
      cols.append(self.cat_embed(cat + jnp.array(self.cat_offsets)).astype(jnp.float32))
    if self.cfg.table_numeric:
      cols.append(num[..., None].astype(jnp.float32) * self.num_w[...] + self.num_b[...])
    t = jnp.concatenate(cols, axis=2)                       # [B, R, F, D]
    t = t + self.col_embed[...][: t.shape[2]] + self.row_embed[...][: t.shape[1], None]
    b, r, f, _ = t.shape
    mask = jnp.broadcast_to(row_mask.astype(bool)[:, :, None], (b, r, f))
    return t.reshape(b, r * f, -1), mask.reshape(b, r * f)

  def tokens(self, batch: Mapping[str, Any]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Modality -> (tokens [B_m, S_m, D] with type embedding, key mask [B_m, S_m]) for the keys
    given, each at its own batch size B_m (shared scenes: B_m divides B); `present` not applied."""
    check_batch(self.cfg, batch)
    out = {}
    if "image" in batch:
      out["image"] = self._image_tokens(batch["image"])
    if "text" in batch:
      out["text"] = self._text_tokens(batch["text"], batch["text_mask"])
    if "table_cat" in batch or "table_num" in batch:
      b = batch["table_mask"].shape[0]
      cat = batch.get("table_cat", jnp.zeros((b, self.cfg.table_rows, 0), jnp.int32))
      num = batch.get("table_num", jnp.zeros((b, self.cfg.table_rows, 0)))
      out["table"] = self._table_tokens(cat, num, batch["table_mask"])
    for m, (t, mask) in out.items():
      out[m] = (t + self.type_embed[...][1 + MODALITIES.index(m)], mask)
    return out

  def _encode(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x.astype(self.blocks[0].qkv.dtype or jnp.float32)
    for block in self.blocks:
      x = block(x, mask)
    return self.norm(x[:, 0].astype(jnp.float32))

  def __call__(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    toks = self.tokens(batch)
    if not toks:
      raise ConfigError("batch", sorted(batch), "no modality given",
                        "at least one of 'image', 'text', 'table_cat'/'table_num'")
    # Shared scenes: a modality given for B / r rows serves r consecutive examples each (one
    # image, many questions). Early fusion repeats its tokens; late fusion encodes it once
    # per scene and repeats the pooled vector.
    present = batch.get("present")
    b = present.shape[0] if present is not None else max(t.shape[0] for t, _ in toks.values())
    rep = lambda x: jnp.repeat(x, b // x.shape[0], 0)
    keep = {}  # per-example key masks [B, S_m]: padding and absent modalities hidden
    for m, (_, mask) in toks.items():
      keep[m] = rep(mask)
      if present is not None:
        i = MODALITIES.index(m)
        keep[m] = keep[m] & present[:, i:i + 1].astype(bool)
    d = self.cfg.dim
    if self.cfg.fusion == "early":
      cls = jnp.broadcast_to(self.cls[...][0] + self.type_embed[...][0], (b, 1, d))
      parts = {m: rep(t) for m, (t, _) in toks.items()}
      if self.cfg.text_condition != "none" and "text" in toks:
        # Question-conditioned tokens: the CLS starts from a projection of the mean present
        # text token, so its first attention can already look for what the question names;
        # 'all' also adds it to every image and table token (the RN feeds its question to
        # every pair); 'film' scales and shifts them by it instead (FiLM, Perez et al. 2018).
        w = keep["text"].astype(jnp.float32)[..., None]
        n = w.sum(1)
        mean = (parts["text"] * w).sum(1) / jnp.maximum(n, 1.0)
        q = self.text_summary(mean) * (n > 0)
        cls = cls + q[:, None]  # 0 when the text is absent
        if self.cfg.text_condition == "all":
          parts = {m: p if m == "text" else p + q[:, None] for m, p in parts.items()}
        elif self.cfg.text_condition == "film":
          gamma, beta = jnp.split(self.text_film(mean) * (n > 0), 2, axis=-1)
          parts = {m: p if m == "text" else p * (1 + gamma[:, None]) + beta[:, None]
                   for m, p in parts.items()}
      x = jnp.concatenate([cls] + list(parts.values()), axis=1)
      mask = jnp.concatenate([jnp.ones((b, 1), bool)] + list(keep.values()), axis=1)
      emb = self._encode(x, mask)
    else:
      pooled = []
      for i, m in enumerate(MODALITIES):
        if m not in toks:
          pooled.append(jnp.zeros((b, d)))
          continue
        t, mask = toks[m]
        n = t.shape[0]
        cls = jnp.broadcast_to(self.cls[...][i] + self.type_embed[...][0], (n, 1, d))
        p = self._encode(jnp.concatenate([cls, t], 1),
                         jnp.concatenate([jnp.ones((n, 1), bool), mask], 1))
        # An absent modality (all its tokens masked) contributes nothing.
        pooled.append(rep(p) * keep[m].any(1, keepdims=True))
      emb = jax.nn.gelu(self.fuse(jnp.concatenate(pooled, -1)))
    return {"logits": self.classifier(emb).astype(jnp.float32),
            "regression": self.regressor(emb).astype(jnp.float32), "embedding": emb}


def check_batch(cfg: ModelConfig, batch: Mapping[str, Any]) -> None:
  """ConfigError naming what was expected when a batch's shapes do not fit `cfg` (trace time)."""
  known = {"image", "text", "text_mask", "table_cat", "table_num", "table_mask", "present"}
  extra = sorted(set(batch) - known)
  if extra:
    raise ConfigError("batch", extra, "unknown keys", ", ".join(sorted(known)))
  rows = {k: v.shape[0] for k, v in batch.items()}
  if rows:
    # `present` is per example, so it fixes the batch size (shared images alone can't).
    b = rows.get("present", max(rows.values()))
    bad = {k: n for k, n in rows.items() if n == 0 or b % n}
    if bad:
      raise ConfigError("batch", f"leading sizes {rows}",
                        "every modality needs the batch size or a divisor of it (shared scenes)",
                        f"{b} or a divisor of {b}")
  if "image" in batch:
    shape = tuple(batch["image"].shape[1:])
    if shape != tuple(cfg.image_shape):
      raise ConfigError("batch.image", f"shape {shape}",
                        "images must have the size and channels the model was built for",
                        f"[batch, {', '.join(map(str, cfg.image_shape))}] (H, W, C)")
  if "text" in batch:
    if "text_mask" not in batch:
      raise ConfigError("batch.text_mask", None, "text needs its padding mask",
                        "bool [batch, length], True on real tokens")
    n = batch["text"].shape[1]
    if n > cfg.max_text_len:
      raise ConfigError("batch.text", f"{n} tokens",
                        f"longer than model.max_text_len={cfg.max_text_len}; encode with "
                        "inputs.Preprocessor (truncate_text=True cuts and warns)",
                        f"<= {cfg.max_text_len} tokens")
  if "table_cat" in batch or "table_num" in batch:
    if "table_mask" not in batch:
      raise ConfigError("batch.table_mask", None, "a table needs its row mask", "bool [batch, rows]")
    for key, want in (("table_cat", len(cfg.table_categorical)), ("table_num", cfg.table_numeric)):
      got = batch[key].shape if key in batch else None
      if want and (got is None or got[1:] != (cfg.table_rows, want)):
        raise ConfigError(f"batch.{key}", got, "table does not match the schema the model was "
                          "built for", f"[batch, {cfg.table_rows} rows, {want} columns]")

"""One Flax Linen transformer over image, text and table tokens (early fusion), and a
late-fusion baseline of the same encoder size; its params are a plain pytree.

Tokens. Image: a stride-2 conv stem with (x, y) channels (`stem='conv'`, one token per
cell of its grid) or linear `patch` x `patch` patches (`stem='patch'`), plus a learned or
sin-cos 2-D position; `image_depth` image-only blocks run once per image, `image_merge=m`
merges m x m cells, `image_queries=K` pools the grid into K learned-query tokens. Text:
token embedding plus position. Table: one token per cell (categorical: embedding of its
value; numeric: `value * w_f + b_f`) plus column and row embeddings. Every token gets its
modality-type embedding; a CLS token leads the sequence.

Shared scenes: `apply(variables, batch, questions_per_scene=r)` (static): images and
tables have B / r rows, scene i serving examples i*r .. i*r + r - 1 (built once). Other
sizes are a ConfigError (`checks.check_batch`); `checks.check_values` refuses, on the
host, values the model would silently misread. Masks hide padding and absent modalities:
`batch['present']` [B, 3] (image, text, table) drops one for some examples; leaving its
keys out drops it for all. Fusion: 'early', one pre-LN encoder over the joint sequence;
'late', the same encoder over each modality alone, pooled vectors mixed by a dense layer.

  >>> cfg = ModelConfig(image_shape=(32, 32, 3), vocab_size=100, max_text_len=8, dim=32,
  ...                   table_categorical=(4,), table_numeric=2, table_rows=3, num_classes=5)
  >>> model = MultimodalTransformer(cfg)   # or metajax.models.make('multimodal_transformer', ...)
  >>> params = model.init(jax.random.key(0), example_batch(cfg, 2))['params']
  >>> out = model.apply({'params': params}, example_batch(cfg, 2))
  >>> out['logits'].shape, out['embedding'].shape
  ((2, 5), (2, 32))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from metajax.errors import ConfigError
from metajax.multimodal.checks import check_batch, check_values, example_batch  # noqa: F401

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


def _dtype(cfg: ModelConfig):
  return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None
              ) -> jax.Array:
  """softmax(q k^T / sqrt(Dh)) v per head, keys where `key_mask` is False ignored.

  q [B, T, H, Dh]; k, v [B, S, H, Dh]; key_mask [B, S] bool -> [B, T, H, Dh]. Through
  `jax.nn.dot_product_attention` (logits and softmax in float32, fused kernels where the
  backend has them).
  """
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


class Block(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)), x + MLP(LN(x))."""
  heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    """x [B, S, D]; key_mask [B, S] bool (False: no token may attend to it)."""
    d = x.shape[-1]
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(nn.LayerNorm(name="ln1")(x))
    q, k, v = rearrange(qkv, "b s (t h d) -> t b s h d", t=3, h=self.heads)
    y = rearrange(attention(q, k, v, key_mask), "b s h d -> b s (h d)")
    x = x + nn.Dense(d, dtype=self.dtype, name="out")(y).astype(x.dtype)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(nn.LayerNorm(name="ln2")(x))
    h = jax.nn.gelu(h)
    return x + nn.Dense(d, dtype=self.dtype, name="fc2")(h).astype(x.dtype)


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


class MultimodalTransformer(nn.Module):
  """Image + text + table tokens -> {'logits' [B, C], 'regression' [B, R], 'embedding' [B, D]}.

  `init` builds every parameter whatever modalities its batch holds (missing ones are
  stood in by zeros), so params from an image-only init still run on text and tables.
  """
  cfg: ModelConfig

  def __post_init__(self):
    self.cfg.validate()  # at construction, before any init or trace
    super().__post_init__()

  def setup(self):
    cfg, d, dtype = self.cfg, self.cfg.dim, _dtype(self.cfg)
    normal = nn.initializers.normal
    if cfg.stem == "conv":
      self.stem_convs = [nn.Conv(o, (3, 3), strides=2, padding="SAME", dtype=dtype)
                         for o in cfg.stem_channels]
      self.stem_norms = [nn.LayerNorm() for _ in cfg.stem_channels]
    self.patch_embed = nn.Dense(d, dtype=dtype)
    gh, gw = cfg.image_grid
    if cfg.image_pos == "learned":
      self.patch_pos = self.param("patch_pos", normal(1.0), (gh * gw, d))
    # Image-only blocks, run once per scene (not per question) before fusion: objects can
    # relate to each other (nearest, furthest, same shape) independently of the question.
    self.image_blocks = [Block(cfg.heads, cfg.mlp_dim, dtype) for _ in range(cfg.image_depth)]
    if cfg.image_merge > 1:  # m x m neighbouring cells -> one token (Swin's patch merging)
      self.merge_norm = nn.LayerNorm()
      self.merge = nn.Dense(d, dtype=dtype)
    if cfg.image_queries:
      # Perceiver-style pooling: K learned queries attend over the grid; values see each
      # cell's (x, y), so a query that locks onto one object pools its centroid.
      self.pool_norm = nn.LayerNorm()
      self.pool_k = nn.Dense(d, dtype=dtype)
      self.pool_v = nn.Dense(d, dtype=dtype)
      self.queries = self.param("queries", normal(1.0), (cfg.image_queries, d))
    self.tok_embed = nn.Embed(cfg.vocab_size, d, dtype=dtype)
    self.text_pos = self.param("text_pos", normal(0.02), (cfg.max_text_len, d))
    n_cat = len(cfg.table_categorical)
    # All categorical columns share one table; column j's values start at offset[j].
    self.cat_embed = nn.Embed(max(1, sum(cfg.table_categorical)), d, dtype=dtype)
    self.num_w = self.param("num_w", normal(1.0), (max(1, cfg.table_numeric), d))
    self.num_b = self.param("num_b", normal(0.02), (max(1, cfg.table_numeric), d))
    self.col_embed = self.param("col_embed", normal(0.02), (max(1, n_cat + cfg.table_numeric), d))
    self.row_embed = self.param("row_embed", normal(0.02), (max(1, cfg.table_rows), d))
    self.type_embed = self.param("type_embed", normal(0.02), (1 + len(MODALITIES), d))  # CLS first
    self.cls = self.param("cls", normal(0.02), (len(MODALITIES) if cfg.fusion == "late" else 1, d))
    if cfg.text_condition != "none":
      self.text_summary = nn.Dense(d)
    if cfg.text_condition == "film":  # zero init: starts as the identity
      self.text_film = nn.Dense(2 * d, kernel_init=nn.initializers.zeros)
    self.blocks = [Block(cfg.heads, cfg.mlp_dim, dtype) for _ in range(cfg.depth)]
    self.norm = nn.LayerNorm()
    if cfg.fusion == "late":
      self.fuse = nn.Dense(d)
    self.classifier = nn.Dense(cfg.num_classes)
    self.regressor = nn.Dense(max(1, cfg.num_regression))

  # -- tokenizers: each returns tokens [B_m, S_m, D] and a key mask [B_m, S_m] -------------
  def _image_tokens(self, image: jax.Array):
    cfg = self.cfg
    x = image.astype(jnp.float32)
    if image.dtype == jnp.uint8:
      x = x / 255.0
    if cfg.stem == "conv":
      b, h, w, _ = x.shape
      x = jnp.concatenate([x, jnp.broadcast_to(coord_grid(h, w), (b, h, w, 2))], -1)
      for conv, norm in zip(self.stem_convs, self.stem_norms):
        x = jax.nn.relu(norm(conv(x)))
      x = rearrange(x, "b h w c -> b (h w) c")
    else:
      x = rearrange(x, "b (h p) (w q) c -> b (h w) (p q c)", p=cfg.patch, q=cfg.patch)
    pos = self.patch_pos if cfg.image_pos == "learned" else sincos_2d(*cfg.image_grid, cfg.dim)
    t = self.patch_embed(x).astype(jnp.float32) + pos
    everywhere = jnp.ones(t.shape[:2], bool)
    for block in self.image_blocks:
      t = block(t.astype(_dtype(cfg)), everywhere).astype(jnp.float32)
    if cfg.image_merge > 1:
      m, (gh, _) = cfg.image_merge, cfg.image_grid
      t = rearrange(t, "b (h p w q) d -> b (h w) (p q d)", p=m, q=m, h=gh // m)
      t = self.merge(self.merge_norm(t)).astype(jnp.float32)
    if cfg.image_queries:
      t = self._pool(t)
    return t, jnp.ones(t.shape[:2], bool)

  def _pool(self, t: jax.Array) -> jax.Array:
    """[B, N, D] grid tokens -> [B, K, D]: one single-head attention per learned query."""
    xy = jnp.broadcast_to(coord_grid(*self.cfg.image_grid).reshape(-1, 2), t.shape[:2] + (2,))
    t = self.pool_norm(t)
    k, v = self.pool_k(t), self.pool_v(jnp.concatenate([t, xy], -1))
    q = jnp.broadcast_to(self.queries.astype(k.dtype), (t.shape[0],) + self.queries.shape)
    y = attention(q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0]
    return y.astype(jnp.float32) + self.queries

  def _text_tokens(self, ids: jax.Array, mask: jax.Array):
    t = self.tok_embed(ids).astype(jnp.float32) + self.text_pos[: ids.shape[1]]
    return t, mask.astype(bool)

  def _table_tokens(self, cat: jax.Array, num: jax.Array, row_mask: jax.Array):
    sizes = self.cfg.table_categorical
    cols = []
    if sizes:
      offsets = jnp.array([sum(sizes[:j]) for j in range(len(sizes))])
      cols.append(self.cat_embed(cat + offsets).astype(jnp.float32))
    if self.cfg.table_numeric:
      cols.append(num[..., None].astype(jnp.float32) * self.num_w + self.num_b)
    t = jnp.concatenate(cols, axis=2)                       # [B, R, F, D]
    t = t + self.col_embed[: t.shape[2]] + self.row_embed[: t.shape[1], None]
    b, r, f, _ = t.shape
    mask = jnp.broadcast_to(row_mask.astype(bool)[:, :, None], (b, r, f))
    return t.reshape(b, r * f, -1), mask.reshape(b, r * f)

  def tokens(self, batch: Mapping[str, Any], questions_per_scene: int = 1
             ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Modality -> (tokens [B_m, S_m, D] with type embedding, key mask [B_m, S_m]) for the keys
    given, images and tables per scene (B_m = B / questions_per_scene); `present` not applied."""
    check_batch(self.cfg, batch, questions_per_scene)
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
    return {m: (t + self.type_embed[1 + MODALITIES.index(m)], mask)
            for m, (t, mask) in out.items()}

  def _encode(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x.astype(_dtype(self.cfg))
    for block in self.blocks:
      x = block(x, mask)
    return self.norm(x[:, 0].astype(jnp.float32))

  def __call__(self, batch: Mapping[str, Any], questions_per_scene: int = 1
               ) -> dict[str, jax.Array]:
    """batch: any of image [B/r, H, W, C] (uint8 0..255 or float 0..1), text + text_mask
    [B, L], table_cat [B/r, R, Fc] + table_num [B/r, R, Fn] + table_mask [B/r, R], present
    [B, 3]; r = questions_per_scene (static): each scene serves r consecutive examples."""
    b = check_batch(self.cfg, batch, questions_per_scene)
    if not {"image", "text", "table_cat", "table_num"} & set(batch):
      raise ConfigError("batch", sorted(batch), "no modality given",
                        "at least one of 'image', 'text', 'table_cat'/'table_num'")
    if self.is_initializing():  # every parameter exists whatever the init batch holds
      batch = {**example_batch(self.cfg, b, questions_per_scene), **batch}
    toks = self.tokens(batch, questions_per_scene)
    # Shared scenes: early fusion repeats a scene's tokens for its r examples; late fusion
    # encodes it once per scene and repeats the pooled vector.
    rep = lambda x: jnp.repeat(x, b // x.shape[0], 0, total_repeat_length=b)
    present = batch.get("present")
    keep = {}  # per-example key masks [B, S_m]: padding and absent modalities hidden
    for m, (_, mask) in toks.items():
      keep[m] = rep(mask)
      if present is not None:
        i = MODALITIES.index(m)
        keep[m] = keep[m] & present[:, i:i + 1].astype(bool)
    d = self.cfg.dim
    if self.cfg.fusion == "early":
      cls = jnp.broadcast_to(self.cls[0] + self.type_embed[0], (b, 1, d))
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
        cls = jnp.broadcast_to(self.cls[i] + self.type_embed[0], (n, 1, d))
        p = self._encode(jnp.concatenate([cls, t], 1),
                         jnp.concatenate([jnp.ones((n, 1), bool), mask], 1))
        # An absent modality (all its tokens masked) contributes nothing.
        pooled.append(rep(p) * keep[m].any(1, keepdims=True))
      emb = jax.nn.gelu(self.fuse(jnp.concatenate(pooled, -1)))
    return {"logits": self.classifier(emb).astype(jnp.float32),
            "regression": self.regressor(emb).astype(jnp.float32), "embedding": emb}


def make_multimodal(**kwargs: Any) -> MultimodalTransformer:
  """`MultimodalTransformer(ModelConfig(**kwargs))`, the registry's 'multimodal_transformer'
  (lists, as JSON and config files give them, become tuples)."""
  fields = sorted(f.name for f in dataclasses.fields(ModelConfig))
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ConfigError(f"model.{unknown[0]}", kwargs[unknown[0]],
                      "the multimodal transformer has no such argument", ", ".join(fields))
  tup = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  return MultimodalTransformer(ModelConfig(**{k: tup(v) for k, v in kwargs.items()}))

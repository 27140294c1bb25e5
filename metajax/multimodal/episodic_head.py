"""An episodically meta-trained ProtoNet head on a trained multimodal transformer.

The frozen fused embedding (the CLS token after the last block) of a model trained to
answer questions keeps little of what a new few-shot task asks (e.g. the colour of the
object the answer is about), so ProtoNet on it sits near chance. Here a head is
meta-trained with the ProtoNet loss on episodes of meta-train classes and evaluated on
held-out classes it never saw:

  tune_blocks = k >= 1: the model's last k encoder blocks and final norm, initialised from
      the trained weights and fine-tuned (episodic fine-tuning); its input is the token
      sequence entering block depth-k, computed once by the frozen earlier layers.
  tune_blocks = 0: an MLP projection of the frozen fused embedding.
  proj_dim > 0 adds that MLP (mlp_dim hidden units, proj_dim outputs) on top of the blocks.

Features are one array per example: tokens [S, D] with the key mask as one more channel
([S, D + 1]), or the embedding [D]; class-indexed as [C, m, ...] they feed
`metajax.data.episodes.sample_tasks` and the ProtoNet learner's pure jitted step.

  >>> feats = features(model, params, batch, tune_blocks=1)      # [B, S, D + 1]
  >>> head = EpisodicHead(HeadSpec.of(model.cfg, tune_blocks=1))
  >>> state = train_head(head_cfg, model.cfg, params, train_feats, workdir, seed)
  >>> accuracy(state, head, test_feats, spec, key)                 # [episodes]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metajax import checkpoint, optim, parallel, runlog
from metajax.data.episodes import EpisodeSpec, make_sampler
from metajax.errors import ConfigError
from metajax.meta.protonet import ProtoNet
from metajax.multimodal.model import Block
from metajax.multimodal.steps import INPUT_KEYS
from metajax.state import TrainState


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """Static shape of a head: the encoder's block sizes, how many blocks it tunes, and the
  optional MLP projection (proj_dim 0: none)."""
  heads: int
  mlp_dim: int
  dtype: str
  tune_blocks: int
  proj_dim: int

  @staticmethod
  def of(cfg, tune_blocks: int, proj_dim: int = 0) -> "HeadSpec":
    return HeadSpec(cfg.heads, cfg.mlp_dim, cfg.dtype, tune_blocks, proj_dim)


def check(cfg, mcfg, prefix: str = "eval.fewshot.head.") -> None:
  """ConfigError naming the key for head settings model config `mcfg` cannot serve."""
  if not 0 <= cfg.tune_blocks <= mcfg.depth:
    raise ConfigError(prefix + "tune_blocks", cfg.tune_blocks,
                      f"the encoder has {mcfg.depth} blocks",
                      f"0 (a projection of the frozen embedding) .. {mcfg.depth}")
  if cfg.tune_blocks and mcfg.fusion != "early":
    raise ConfigError(prefix + "tune_blocks", cfg.tune_blocks, "fine-tuning blocks needs one "
                      "joint token sequence, but the model is late fusion", "0")
  if not cfg.tune_blocks and cfg.proj_dim <= 0:
    raise ConfigError(prefix + "proj_dim", cfg.proj_dim, "with tune_blocks=0 the projection "
                      "is the whole head", ">= 1")
  for key in ("steps", "meta_batch", "examples_per_class", "log_every"):
    if cfg[key] <= 0:
      raise ConfigError(prefix + key, cfg[key], "must be positive", ">= 1")
  if cfg.proj_dim < 0:
    raise ConfigError(prefix + "proj_dim", cfg.proj_dim, "an output width", "0 (none) or >= 1")
  optim.check(cfg.optimizer, prefix + "optimizer")


# --- features: what the frozen layers give the head ----------------------------------------
def features(model, params, batch, tune_blocks: int) -> jax.Array:
  """[B, S, D + 1]: the tokens entering block depth - `tune_blocks` of the model inputs in
  `batch` (other keys ignored) and their key mask as the last channel (1 attendable, 0
  hidden); [B, D] the fused embedding when 0."""
  return _features(model, params, {k: batch[k] for k in INPUT_KEYS if k in batch}, tune_blocks)


@functools.partial(jax.jit, static_argnames=("model", "tune_blocks"))
def _features(model, params, batch, tune_blocks: int) -> jax.Array:
  if not tune_blocks:
    return model.apply({"params": params}, batch)["embedding"]
  name, seen = f"blocks_{model.cfg.depth - tune_blocks}", {}

  def grab(next_fun, args, kwargs, context):
    if context.module.name == name and context.method_name == "__call__":
      seen["x"], seen["mask"] = args  # Block.__call__(x, key_mask)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    model.apply({"params": params}, batch)
  return jnp.concatenate([seen["x"].astype(jnp.float32),
                          seen["mask"][..., None].astype(jnp.float32)], -1)


# --- the head --------------------------------------------------------------------------------
class EpisodicHead(nn.Module):
  """Features [B, S, D + 1] (or [B, D]) -> embeddings [B, D or proj_dim]."""
  spec: HeadSpec

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no batch statistics
    s = self.spec
    if s.tune_blocks:
      dtype = jnp.bfloat16 if s.dtype == "bfloat16" else jnp.float32
      t, mask = x[..., :-1].astype(dtype), x[..., -1] > 0.5
      for i in range(s.tune_blocks):
        t = Block(s.heads, s.mlp_dim, dtype, name=f"blocks_{i}")(t, mask)
      x = nn.LayerNorm(name="norm")(t[:, 0].astype(jnp.float32))
    if s.proj_dim:
      x = nn.Dense(s.proj_dim, name="proj")(jax.nn.gelu(nn.Dense(s.mlp_dim, name="hidden")(x)))
    return x


def from_trained(head_params, model_params, depth: int, tune_blocks: int):
  """`head_params` with its blocks and norm replaced by the model's last `tune_blocks`
  blocks and final norm (the projection keeps its fresh init)."""
  out = dict(head_params)
  for i in range(tune_blocks):
    out[f"blocks_{i}"] = model_params[f"blocks_{depth - tune_blocks + i}"]
  if tune_blocks:
    out["norm"] = model_params["norm"]
  return out


# --- meta-training and evaluation ----------------------------------------------------------
def train_head(cfg, mcfg, model_params, feats: np.ndarray, ways: int, shots: int,
               queries: int, workdir: str, seed: int, label: str = "episodic head"
               ) -> tuple[EpisodicHead, TrainState]:
  """Meta-trains a head (`cfg`: eval.fewshot.head) for cfg.steps ProtoNet steps on `ways`-way
  `shots`-shot episodes (cfg.meta_batch per step) drawn from class-indexed `feats` [C, m,
  ...] of the meta-train classes, resuming from `workdir`'s latest checkpoint. Returns
  (head, state); the metrics go to `workdir`/metrics.jsonl."""
  head = EpisodicHead(HeadSpec.of(mcfg, cfg.tune_blocks, cfg.proj_dim))
  tx = optim.make_optimizer(cfg.optimizer, cfg.steps)
  learner = ProtoNet(model=head, optimizer=tx)
  mesh = parallel.make_mesh()
  if cfg.meta_batch % mesh.size:
    raise ConfigError("eval.fewshot.head.meta_batch", cfg.meta_batch,
                      f"episodes are split over {mesh.size} devices", f"a multiple of {mesh.size}")
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  spec = EpisodeSpec(ways, shots, queries, cfg.meta_batch)
  spec.validate(feats.shape, where="the meta-train classes")
  sample = make_sampler(spec, shard)
  x = jax.device_put(jnp.asarray(feats), repl)
  key = jax.random.key(seed)
  state = learner.init(key, sample(key, x))
  state = state.replace(params=from_trained(state.params, model_params, mcfg.depth,
                                            cfg.tune_blocks))
  state = parallel.replicate(TrainState.create(state.params, tx), mesh)
  step_fn = jax.jit(learner.train_step, in_shardings=(repl, shard, repl),
                    out_shardings=(repl, repl), donate_argnums=0)
  mngr, state, start = checkpoint.resume(workdir, state, label)
  writer = runlog.MetricWriter(workdir, resume_step=start)
  bar = runlog.progress(cfg.steps, start, desc=label)
  pending = []
  for step in range(start, cfg.steps):
    k_tasks, k_step = jax.random.split(jax.random.fold_in(key, step))
    state, metrics = step_fn(state, sample(k_tasks, x), k_step)
    pending.append(metrics)
    bar.update(1)
    done = step + 1
    if done % cfg.log_every == 0 or done == cfg.steps:
      means = {f"train/{k}": float(np.mean([m[k] for m in jax.device_get(pending)]))
               for k in pending[0]}
      runlog.check_finite(done, means)
      writer.write(done, means)
      pending = []
      checkpoint.save(mngr, done, state)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  return head, state


def accuracy(head: EpisodicHead, params, feats: np.ndarray, spec: EpisodeSpec,
             key: jax.Array) -> np.ndarray:
  """Query accuracy [spec.batch] of ProtoNet on `head`'s embeddings over episodes drawn
  from class-indexed `feats` [C, m, ...] (e.g. held-out classes)."""
  learner = ProtoNet(model=head, optimizer=None)
  state = TrainState(step=0, params=params, model_state={}, opt_state=None)
  return np.asarray(_eval(learner, state, jnp.asarray(feats), key, spec))


@functools.partial(jax.jit, static_argnames=("learner", "spec"))
def _eval(learner, state, x, key, spec):
  from metajax.data.episodes import sample_tasks
  return learner.eval_step(state, sample_tasks(key, x, spec), key)["accuracy"]

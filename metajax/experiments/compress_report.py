"""report.md and results.json of the compression experiment (metajax/experiments/compress.py)."""

from __future__ import annotations

import os

import jax

from metajax import runlog


def _accuracy(row: dict) -> str:
  acc = row["accuracy"]
  if row["model"] == "multimodal":
    return f"{100 * acc['relational']:.1f} / {100 * acc['non-relational']:.1f}"
  (name, mean), = [(k, v) for k, v in acc.items() if k != "ci95"]
  return f"{100 * mean:.1f} ± {100 * acc['ci95']:.1f} ({name})"


def table(rows: list[dict], batch: int) -> list[str]:
  """Markdown rows: model, variant, size on disk, ratio to full, parameters (nonzero),
  latency per example at batch 1 and `batch`, accuracy."""
  full = {r["model"]: r for r in rows if r["variant"] == "full"}
  out = [f"| model | variant | weights on disk (bytes) | full ÷ this | array bytes (full ÷ this) | "
         f"parameters (nonzero) | "
         f"ms / example, batch 1 | ms / example, batch {batch} | test accuracy % |",
         "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    ratio = full[r["model"]]["bytes"] / r["bytes"] if r["model"] in full else float("nan")
    ref = full.get(r["model"], r)
    out.append(f"| {r['model']} | {r['variant']} | {r['bytes']:,} | {ratio:.2f}x | "
               f"{r['array_bytes']:,} ({ref['array_bytes'] / r['array_bytes']:.2f}x) | "
               f"{r['nonzero']:,} of {r['params']:,} | {r['latency_b1_ms']:.2f} | "
               f"{r[f'latency_b{batch}_ms_per_example']:.3f} | {_accuracy(r)} |")
  return out


def write_report(config, workdir: str, results: dict) -> str:
  path = os.path.join(workdir, "report.md")
  if jax.process_index() != 0:
    return path
  b = config.latency.batch
  lines = [
      "# Compression of trained models", "",
      f"Sources: {results['sources']}. Each variant is a compressed workdir loaded back with "
      "`metajax.load_trained` and measured there. Weights on disk: the bytes of its "
      "`weights.npz` (uncompressed numpy; int8: int8 weights with float32 per-channel "
      "scales; pruned: bitmask + nonzero values); array bytes: the arrays alone, without "
      "the container's per-array headers. Latency: median of "
      f"{config.latency.repeats} calls after three warm-up calls, on this machine's CPU: the "
      "multimodal model's `predict` on raw inputs (tokenizing and table encoding included), "
      f"the ProtoNet's jitted `learner.predict` of queries against a {config.protonet.ways}-way 1-example-per-class support set. "
      "Accuracy: "
      "multimodal relational / non-relational on the test split (all modalities); ProtoNet "
      f"{config.protonet.episodes} test episodes, 95% CI. Pruning: {config.prune.scope} "
      f"magnitude, sparsity {config.prune.sparsity} of the rank >= 2 weights, then "
      f"{config.prune.multimodal_steps} (multimodal) / {config.prune.protonet_steps} "
      "(ProtoNet) fine-tune steps with the masks fixed.", "",
      *table(results["rows"], b), ""]
  runlog.atomic_write(path, "\n".join(lines))
  runlog.atomic_write(os.path.join(workdir, "results.json"),
                      runlog.dumps_strict(results, indent=2, sort_keys=True))
  return path

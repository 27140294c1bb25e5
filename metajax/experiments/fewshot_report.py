"""report.md of a few-shot run: what ran, meta-test metrics with 95% CIs, learning and
adaptation curves, and for the MAML family the inner loop and its learned rates."""

from __future__ import annotations

import os

import jax
import numpy as np

from metajax import runlog
from metajax.meta.maml import MAML
from metajax.report import md_table, plot_panels


def has_batch_norm(state) -> bool:
  """Whether the trained model holds batch-norm parameters or statistics."""
  paths = [jax.tree_util.keystr(p).lower() for p, _ in
           jax.tree_util.tree_leaves_with_path((state.params, state.model_state))]
  return any("batchnorm" in p or "batch_stats" in p for p in paths)


def batch_norm(learner, state) -> str | None:
  """How the learner's batch norm normalises, in words; None for a model without it."""
  if not has_batch_norm(state):
    return None
  if not isinstance(learner, MAML):
    return "batch statistics in training, running averages at evaluation"
  if learner.config.batch_norm == "transductive":
    return ("transductive: batch statistics of the current support/query set, in training "
            "and meta-test")
  return ("per-step (MAML++ BNWB+BNRS): per-inner-step BN scale/bias and running statistics; "
          "meta-test uses the running statistics (not transductive)")


QUANTITIES = {"loss": "loss (cross-entropy)", "accuracy": "accuracy (fraction correct)",
              "mse": "MSE"}


def learning_panels(rows, config, summary, learner):
  """[(y label, {series label: points})] for learning_curve.png: one quantity per panel, the
  training episodes and the validation tasks each labelled with their shape."""
  e = config.episodes
  if getattr(getattr(learner, "config", None), "task", "") == "regression":  # train loss: MSE
    train, val = f"train ({e.shots}-shot tasks)", f"validation ({summary['val']})"
    return [("MSE", {train: runlog.summarise(rows, "train/loss"),
                     val: runlog.summarise(rows, "val/mse")})]
  train = f"train ({e.ways}-way {e.shots}-shot episodes)"
  val = f"validation ({summary['val']})"
  return [(QUANTITIES[q], {train: runlog.summarise(rows, f"train/{q}"),
                           val: runlog.summarise(rows, f"val/{q}")})
          for q in ("loss", "accuracy")]


def adaptation_panels(curves: dict):
  """[(y label, {setting: [(inner step, mean)]})] of the meta-test adaptation curves, one
  panel per metric ('accuracy_by_step', 'loss_by_step', 'mse_by_step')."""
  panels: dict[str, dict] = {}
  for name, pts in curves.items():
    setting, metric = name.rsplit(" ", 1)
    quantity = metric.removesuffix("_by_step")
    label = f"meta-test {QUANTITIES.get(quantity, quantity)} after k inner steps"
    panels.setdefault(label, {})[setting] = [(j, m) for j, m, _ in pts]
  return list(panels.items())


def inner_loop(learner: MAML, state, workdir: str) -> list[str]:
  """Markdown on MAML's inner loop; for learned rates a table and a plot (inner_lr.png)."""
  c = learner.config
  lines = ["## Inner loop", "",
           f"- {c.inner_steps} inner step(s) in training, {c.test_steps} at meta-test; "
           f"alpha = {c.inner_lr}; direction: {c.inner_optimizer}; "
           f"{'first' if c.first_order else 'second'} order; "
           f"adapted: {'head only (ANIL)' if c.head_only else 'all weights'}; "
           f"learned rates: {c.learn_lr}; multi-step loss: {c.multi_step_loss}"
           + (f"; batch norm: {c.batch_norm}" if has_batch_norm(state) else "")]
  rates = {k: np.asarray(v) for k, v in learner.learning_rates(state).items()}
  if not rates:
    return lines
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
  if c.learn_lr == "per_layer_step":
    for name, r in rates.items():
      ax.plot(np.arange(1, len(r) + 1), r, marker="o", label=name)
    ax.set_xlabel("inner step")
    header = ["| tensor | rate per step |", "|---|---|"]
    rows = [f"| {n} | " + ", ".join(f"{v:.4g}" for v in r) + " |" for n, r in rates.items()]
  else:
    ax.boxplot([r.ravel() for r in rates.values()], showfliers=False)
    ax.set_xticks(range(1, len(rates) + 1), list(rates), rotation=60, ha="right", fontsize=7)
    header = ["| tensor | mean | median | min | max |", "|---|---|---|---|---|"]
    rows = [f"| {n} | {r.mean():.4g} | {np.median(r):.4g} | {r.min():.4g} | {r.max():.4g} |"
            for n, r in rates.items()]
  ax.axhline(c.inner_lr, color="k", ls=":", label=f"init {c.inner_lr}")
  ax.set_yscale("log")
  ax.set_ylabel("inner learning rate")
  ax.set_title("learned inner learning rates (Meta-SGD: per entry, all steps)"
               if c.learn_lr == "per_param" else "learned inner learning rates (LSLR)")
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "inner_lr.png"))
  plt.close(fig)
  return lines + ["", "### Learned inner learning rates", "",
                  "![inner learning rates](inner_lr.png)", "", *header, *rows]


def write_report(config, workdir: str, learner, state, summary: dict) -> str:
  """report.md: what ran, meta-test metrics with 95% CI, learning and adaptation curves."""
  rows = runlog.read_metrics(workdir)
  e, t = config.episodes, config.train
  model = {k: v for k, v in config.model.items() if k != "name"}
  lines = [f"# {config.learner.name} on {config.data.name}", "",
           f"- model: `{config.model.name}` {model}",
           f"- meta-training: {t.steps} steps of {t.meta_batch} task(s), "
           f"{e.ways}-way {e.shots}-shot {e.queries}-query"
           + (", rotations as new classes" if e.rotations else ""),
           f"- outer optimizer: {dict(config.optimizer)}",
           f"- validation curve: {summary['val']}",
           *([f"- batch norm: {bn}"] if (bn := batch_norm(learner, state)) else []),
           f"- seed {config.seed}; {summary['devices']} device(s) "
           f"({jax.devices()[0].platform}); wall time {summary['train_seconds']:.0f} s "
           "(training incl. compilation)",
           "- full config: `config.json`; metrics: `metrics.jsonl` and `tensorboard/`; "
           "trained model: `metajax.load_trained(workdir)` (`model.json`)", "",
           "## Meta-test", ""]
  table = []
  for name, metrics in summary["results"].items():
    for metric, (mean, ci) in metrics.items():
      if metric != "eval_seconds":
        table.append([name, metric, f"{mean:.4f} ± {ci:.4f}", config.eval.episodes])
  lines += [md_table(["setting", "metric", "mean ± 95% CI", "episodes"], table), ""]
  if summary["skipped"]:
    lines += ["Skipped (impossible on that dataset): " + "; ".join(summary["skipped"]), ""]
  png = plot_panels(os.path.join(workdir, "learning_curve.png"),
                    learning_panels(rows, config, summary, learner), xlabel="meta-training step",
                    title="learning curve", integer_x=True)
  lines += ["## Learning curve", "", f"![learning curve]({png})", ""]
  if summary["curves"]:
    png = plot_panels(os.path.join(workdir, "adaptation_curve.png"),
                      adaptation_panels(summary["curves"]), xlabel="inner steps (k)",
                      title="adaptation speed (meta-test)", integer_x=True)
    lines += ["## Adaptation speed", "", f"![adaptation]({png})", ""]
    for k, v in summary["curves"].items():
      lines.append(f"- {k}: " + ", ".join(f"{j}: {m:.4f}±{c:.4f}" for j, m, c in v))
    lines.append("")
  if isinstance(learner, MAML):
    lines += [*inner_loop(learner, state, workdir), ""]
  path = os.path.join(workdir, "report.md")
  runlog.atomic_write(path, "\n".join(lines))
  return path

"""report.md of an hp_metalearn run: learned rate schedules, tbptt vs pes, zero-shot transfer."""

from __future__ import annotations

import math
import os

import numpy as np

from metajax import report, runlog

STYLES = {"tbptt": "--", "pes": "-"}


def _fmt(mc) -> str:
  m, ci = mc
  return "n/a" if not math.isfinite(m) else (f"{m:.3f}" if not math.isfinite(ci)
                                              else f"{m:.3f} ± {ci:.3f}")


def _figure(n: int):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), dpi=110, squeeze=False)
  return plt, fig, axes[0]


def plot_rates(path: str, rates: dict, default_lr: float) -> str:
  """One panel per family: each layer's learned rate over the inner run (step function over
  segments), one line style per estimator, the manual default dotted."""
  families = list(next(iter(rates.values())))
  plt, fig, axes = _figure(len(families))
  for ax, fam in zip(axes, families):
    for ei, (est, by_fam) in enumerate(rates.items()):
      r = by_fam[fam]
      edges = np.linspace(0, r.inner_steps, r.segments + 1)
      for li, layer in enumerate(r.layers):
        y = np.exp(np.append(r.log_lr[li], r.log_lr[li, -1]))
        ax.step(edges, y, where="post", linestyle=STYLES.get(est, "-."), color=f"C{li}",
                label=f"{layer} ({est})")
    ax.axhline(default_lr, color="k", linestyle=":", label=f"default {default_lr:g}")
    ax.set_yscale("log")
    ax.set_xlabel("inner training step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{fam}: learned per-layer rates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return os.path.basename(path)


def plot_meta_val(path: str, rows: list[dict], families: list[str], estimators,
                  metric: str = "objective") -> str:
  """One panel per family: meta-validation `metric` against meta-step, one line per estimator."""
  plt, fig, axes = _figure(len(families))
  for ax, fam in zip(axes, families):
    for est in estimators:
      pts = runlog.summarise(rows, f"{est}/{fam}/{metric}")
      if pts:
        x, y = zip(*pts)
        ax.plot(x, y, linestyle=STYLES.get(est, "-."), marker=".", label=est)
    ax.set_xlabel("meta-step")
    ax.set_ylabel({"objective": "meta-objective (mean window-end val loss)",
                   "val_accuracy": "final validation accuracy"}.get(metric, metric))
    ax.set_title(f"{fam}: full inner runs, fixed meta-validation tasks")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return os.path.basename(path)


def write_report(config, workdir: str, rates: dict, summary: dict) -> str:
  rows = runlog.read_metrics(workdir)
  estimators = list(rates)
  families = list(next(iter(rates.values())))
  i = config.inner
  lines = ["# Hyperparameter meta-learning: per-layer learning-rate schedules", "",
           f"Inner run: {i.steps} steps of {i.optimizer} (batch {i.batch_size or 'full'}), "
           f"{i.segments} segments, weight decay {'learned' if i.learn_weight_decay else 'off'}; "
           f"meta: {config.meta.tasks} tasks per meta-step, unroll {config.meta.unroll}, "
           f"{summary['steps']} meta-steps, estimators {', '.join(estimators)} "
           f"(pes: {config.meta.pes_pairs} pairs, sigma {config.meta.pes_sigma}); "
           f"{summary['devices']} device(s), {summary['train_seconds']:.0f} s meta-training, "
           f"{summary['transfer_seconds']:.0f} s transfer.", ""]
  lines += ["## Datasets (split by dataset)", "",
            report.md_table(["family", "meta-train", "meta-test (held out)"],
                            [[f, ", ".join(d["train"]), ", ".join(d["test"]) or "none"]
                             for f, d in summary["families"].items()]), ""]
  if summary["notes"]:
    lines += ["Skipped:", ""] + [f"- {n}" for n in summary["notes"]] + [""]

  at = lambda name: os.path.join(workdir, name)
  lines += ["## Learned rates over the inner run", "",
            f"![learned rates]({plot_rates(at('learned_rates.png'), rates, i.default_lr)})", ""]
  for fam in families:
    head = ["estimator", "layer"] + [f"lr seg {k}" for k in range(i.segments)] + ["weight decay"]
    body = []
    for est in estimators:
      r = rates[est][fam]
      for li, layer in enumerate(r.layers):
        wd = "off" if r.log_wd is None else f"{math.exp(r.log_wd[li]):.2e}"
        body.append([est, layer] + [f"{math.exp(v):.2e}" for v in r.log_lr[li]] + [wd])
    lines += [f"### {fam}", "", report.md_table(head, body), ""]

  lines += ["## Meta-validation: tbptt vs pes", "",
            "Full inner runs from scratch on fixed tasks drawn from the meta-train datasets "
            "(not the training stream), with the rates learned so far (step 0: the default "
            "rate). The meta-objective is what both estimators optimise: the validation loss "
            "at the end of every unroll window, averaged over the run (it rewards fast as well "
            "as good training).", "",
            "![meta-objective](" + plot_meta_val(at("meta_val_objective.png"), rows, families,
                                                 estimators) + ")",
            "![meta-validation accuracy](" + plot_meta_val(at("meta_val_accuracy.png"), rows,
                                                           families, estimators,
                                                           "val_accuracy") + ")",
            ""]
  table = []
  for fam in families:
    for est in estimators:
      series = [runlog.summarise(rows, f"{est}/{fam}/{k}")
                for k in ("objective", "val_loss", "val_accuracy")]
      if all(series):
        table.append([fam, est] + [v for pts in series for v in (pts[0][1], pts[-1][1])])
  lines += [report.md_table(["family", "estimator", "objective start", "objective end",
                             "final val loss start", "end", "final val acc start", "end"],
                            table), ""]
  sel = summary.get("selected_step", {})
  if sel:
    lines += [f"Rates kept ({config.eval.select}): " + ", ".join(
        f"{key} from meta-step {step}" for key, step in sel.items()) +
        ("; the lowest meta-validation objective." if config.eval.select == "best" else "."), ""]

  lines += ["## Zero-shot transfer to held-out datasets", "",
            f"Test accuracy, mean ± 95% CI over {config.transfer.seeds} split seed(s). Each "
            "method trains one run except random search at "
            f"{config.transfer.random_runs}x (best of {config.transfer.random_runs} global "
            "learning rates by validation accuracy).", ""]
  tr = summary["transfer"]
  if tr:
    methods = list(next(iter(tr.values()))["summary"])
    lines.append(report.md_table(["family/dataset"] + methods,
                                 [[k] + [_fmt(v["summary"][m]["test_accuracy"]) for m in methods]
                                  for k, v in tr.items()]))
  else:
    lines.append("No meta-test dataset could be loaded.")
  lines.append("")
  path = os.path.join(workdir, "report.md")
  runlog.atomic_write(path, "\n".join(lines))
  return path

"""report.md, results.json (strict JSON: NaN written as null) and plots of a Sort-of-CLEVR run."""

from __future__ import annotations

import math
import os

import jax

from metajax import report, runlog
from metajax.data import sort_of_clevr as soc

TARGET = 0.95  # the accuracy target, on relational and non-relational questions
GROUPS = soc.GROUPS
PUBLISHED = [  # Santoro et al. 2017, Sort-of-CLEVR, as stated in the paper's text
    ("CNN+MLP (published)", "> 94 (\"reached this performance\")", "63"),
    ("CNN+RN (published)", "> 94", "> 94")]


def first_reaching(rows, target: float):
  """The first step whose validation row reaches `target` on both question kinds, or None."""
  for r in rows:
    if (r.get("eval/relational") or 0) >= target and (r.get("eval/non-relational") or 0) >= target:
      return r["step"]
  return None


strict = runlog.strict  # non-finite floats as None (JSON has no NaN), tuple keys joined by '/'


def stem_desc(mcfg) -> str:
  if mcfg.stem == "patch":
    grid = f"{mcfg.patch}x{mcfg.patch} patches"
  else:
    grid = f"conv stem {tuple(mcfg.stem_channels)}"
  pooled = f" pooled by {mcfg.image_queries} learned queries" if mcfg.image_queries else ""
  if mcfg.image_merge > 1:
    pooled += f", {mcfg.image_merge}x{mcfg.image_merge} cells merged"
  return f"{grid}{pooled} ({mcfg.num_patches} image tokens)"


def _time_at(rows, step) -> float:
  t = [r["time_s"] for r in rows if "time_s" in r and r["step"] <= step]
  return t[-1] if t else float("nan")


def _row_at(rows, step):
  hits = [r for r in rows if r["step"] == step and "eval/all" in r]
  return hits[-1] if hits else None


def write_report(config, workdir, mcfg, accuracy, late, fs, n_params, ablations=()) -> str:
  """report.md (with accuracy.png, loss.png) and results.json in `workdir`; returns the
  report's path. fs: {(embedding, shots): (mean, ci95)} or None."""
  rows = runlog.read_metrics(workdir)
  pct = lambda v: "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"  # null: NaN
  row = lambda a: [pct(a[g]) for g in GROUPS + ("all",)]
  full = accuracy["image+text+table"]
  t = config.train
  last_time = [r for r in rows if "time_s" in r]
  secs = last_time[-1]["time_s"] if last_time else float("nan")
  reach = first_reaching(rows, TARGET)
  trained = max([r["step"] for r in rows if "train/loss" in r], default=0)
  lines = [f"# Multimodal transformer on Sort-of-CLEVR ({mcfg.fusion} fusion)", "",
           f"{config.data.num_train} training images (10 non-relational + 10 relational + 2 "
           f"table questions per image; table lists {config.data.table_rows} of 6 objects); "
           f"test: {config.data.num_test} images; validation (periodic evals, early stopping): "
           f"{config.data.num_val} images. Model: dim {mcfg.dim}, depth {mcfg.depth} (+ "
           f"{mcfg.image_depth} image-only blocks per scene), heads "
           f"{mcfg.heads}, {stem_desc(mcfg)}, {mcfg.image_pos} image positions, "
           f"text-conditioned tokens: {mcfg.text_condition}; {n_params:,} parameters, "
           f"{mcfg.dtype}. {trained:,} steps (of at most {t.steps:,}) x batch {t.batch_size} "
           f"({t.questions_per_image} questions per image) = {trained * t.batch_size:,} "
           f"examples, {secs:.0f} s of training on {jax.device_count()} "
           f"{jax.devices()[0].platform} device(s). Optimizer: {dict(config.optimizer)}. "
           f"Modality dropout in training: {dict(t.drop)}; auxiliary regression (x, y of the "
           f"object the answer is about) loss weight {t.regression_weight}; colour curriculum: "
           + (f"one more question colour every {t.colour_curriculum} steps."
              if t.colour_curriculum else "off.") + " Trained model: "
           "`metajax.load_trained(workdir)` (`model.json`).", "",
           "## Accuracy (%) beside the published Relation Network results", "",
           report.md_table(["model", "non-relational", "relational"],
                           [list(r) for r in PUBLISHED] +
                           [[f"this run, {mcfg.fusion} fusion, all modalities",
                             pct(full["non-relational"]), pct(full["relational"])]] +
                           ([[f"this run, {late['fusion']} fusion ({late['steps']} steps)",
                              pct(late["accuracy"]["image+text+table"]["non-relational"]),
                              pct(late["accuracy"]["image+text+table"]["relational"])]]
                            if late else [])), "",
           f"Target (>= {100 * TARGET:.0f}% on both): " + (
               f"the validation split first reached it at step {reach} "
               f"({reach * t.batch_size:,} examples, {_time_at(rows, reach):.0f} s of training)."
               if reach else "the validation split did not reach it in this run."), "",
           "## Modality ablations and robustness (test-time subsets, %)", "",
           "One model trained with all three modalities and modality dropout, evaluated with "
           "modalities removed at test time. 'table' questions ask a weight listed only in the "
           "table; 'image+table' ones need both.", "",
           report.md_table(["present at test"] + list(GROUPS) + ["all"],
                           [[n] + row(a) for n, a in accuracy.items()])]
  families = [f for f in soc.FAMILIES if f"family/{f}" in full]
  lines += ["", "## Accuracy per question family (test set, %)", "",
            "Relational: closest, furthest, count; table: heavy; image+table: closest_heavy.", "",
            report.md_table(["present at test"] + families,
                            [[n] + [pct(a[f"family/{f}"]) for f in families]
                             for n, a in accuracy.items()])]
  if late:
    main_row = _row_at(rows, late["steps"])
    lines += ["", f"## Early vs late fusion (same encoder size, {late['steps']} steps each)", "",
              report.md_table(
                  ["model", "present"] + list(GROUPS) + ["all"],
                  [[f"{late['fusion']} fusion", n] + row(a) for n, a in late["accuracy"].items()]
                  + [[f"{mcfg.fusion} fusion at step {late['steps']} (validation split)", "all"]
                     + ([pct(main_row[f"eval/{g}"]) for g in GROUPS + ("all",)] if main_row
                        else ["-"] * (len(GROUPS) + 1))])]
  if ablations:
    steps = sorted({a["steps"] for a in ablations})
    main_row = _row_at(rows, steps[0]) if len(steps) == 1 else None
    lines += ["", f"## Separately trained ablations ({', '.join(map(str, steps))} steps, test "
              "set, %)", "",
              "The same model and recipe trained and evaluated on a subset of the modalities "
              "(the others never given to it).", "",
              report.md_table(
                  ["trained on", "steps"] + list(GROUPS) + ["all"],
                  [[a["trained on"], a["steps"]] + row(a["accuracy"]) for a in ablations] +
                  ([["image+text+table (this run, validation split)", steps[0]] +
                    [pct(main_row[f"eval/{g}"]) for g in GROUPS + ("all",)]] if main_row else []))]
  if fs:
    from metajax.experiments.sort_of_clevr_fewshot import table
    lines += [""] + table(config.eval.fewshot, fs)
  curves = {g: [(s, 100 * v) for s, v in runlog.summarise(rows, f"eval/{g}")] for g in GROUPS}
  acc_png = report.plot_curves(os.path.join(workdir, "accuracy.png"), curves,
                               xlabel="training step", ylabel="validation accuracy (%)",
                               title="accuracy by question kind", legend_below=True,
                               ylim=(0, 100), integer_x=True)
  loss_png = report.plot_curves(
      os.path.join(workdir, "loss.png"), {"train loss": runlog.summarise(rows, "train/loss")},
      xlabel="training step", ylabel="training loss (cross-entropy + regression, log scale)",
      logy=True, integer_x=True)
  lines += ["", "## Curves", "", f"![accuracy]({acc_png})", f"![loss]({loss_png})"]
  path = os.path.join(workdir, "report.md")
  if jax.process_index() == 0:
    runlog.atomic_write(path, "\n".join(lines) + "\n")
    results = {"accuracy": accuracy, "late_fusion": late and late["accuracy"],
               "ablations": ablations, "fewshot": fs, "params": int(n_params),
               "train_seconds": secs, "target_step": reach, "steps": config.train.steps,
               "eval": config.eval.to_dict()}
    runlog.atomic_write(os.path.join(workdir, "results.json"),
                        runlog.dumps_strict(results, indent=2))
  return path

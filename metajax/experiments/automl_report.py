"""The AutoML experiment's `report.md` and self-contained `report.html` (plots inlined as
base64) in the workdir."""

from __future__ import annotations

import base64
import datetime
import html
import math
import os

import numpy as np

from metajax.automl import search
from metajax.report import md_table
from metajax.runlog import atomic_write


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


COLORS = {"mlp": "tab:blue", "cnn": "tab:purple", "gru": "tab:brown", "rf": "tab:green",
          "gbm": "tab:orange"}


def plot_rungs(path, trials, metric):
  """Validation score against budget, one line per trial, coloured by family."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
  seen = set()
  for t in trials:
    pts = [(h["budget"], h["score"]) for h in t.history if math.isfinite(h["score"])]
    if not pts:
      continue
    x, y = zip(*pts)
    ax.plot(x, y, marker="o", ms=3, lw=0.8, alpha=0.7, color=COLORS.get(t.family),
            label=None if t.family in seen else t.family)
    seen.add(t.family)
  ax.set_xscale("log")
  from matplotlib.ticker import NullFormatter, ScalarFormatter
  ax.xaxis.set_major_formatter(ScalarFormatter())
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel("budget (epochs / tree units)")
  ax.set_ylabel(f"validation {metric}")
  ax.set_title("score vs budget by rung")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_leaderboard(path, board, metric, k=15):
  plt = _plt()
  top = [t for t in board if math.isfinite(t.score)][:k][::-1]
  fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(top) + 1.2), dpi=100)
  ax.barh([f"#{t.id} {t.family} @{t.budget:g}" for t in top], [t.score for t in top],
          color=[COLORS.get(t.family) for t in top])
  if top:
    lo = min(t.score for t in top)
    ax.set_xlim(lo - 0.05 * (abs(lo) + 1e-3), max(t.score for t in top) + 0.01 * (abs(lo) + 1e-3))
  ax.set_xlabel(f"validation {metric}")
  ax.set_title("leaderboard (budget reached, then score)")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_hparams(path, trials, metric):
  """Final validation score against each hyperparameter (categoricals at their index),
  coloured by family, with one family legend for the figure."""
  plt = _plt()
  from matplotlib.lines import Line2D
  names = sorted({k for t in trials for k in t.hp})
  cols = 3
  rows = max(1, math.ceil(len(names) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(9, 2.6 * rows + 0.6), dpi=90, squeeze=False)
  families = set()
  for i, (ax, name) in enumerate(zip(axes.ravel(), names)):
    pts = [(t.hp[name], t.score, t.family) for t in trials if name in t.hp and math.isfinite(t.score)]
    if not pts:
      ax.set_visible(False)
      continue
    vals = [p[0] for p in pts]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    if numeric:
      x = np.array(vals, float)
      if name in ("learning_rate", "l2_regularization", "weight_decay"):
        from matplotlib.ticker import NullFormatter
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
      levels = sorted({str(v) for v in vals})
      x = np.array([levels.index(str(v)) for v in vals], float)
      ax.set_xticks(range(len(levels)), levels, fontsize=7)
    ax.scatter(x, [p[1] for p in pts], s=12, c=[COLORS.get(p[2]) for p in pts], alpha=0.7)
    families |= {p[2] for p in pts}
    ax.set_xlabel(name, fontsize=8)
    if i % cols == 0:
      ax.set_ylabel(f"final val {metric}", fontsize=8)
  for ax in axes.ravel()[len(names):]:
    ax.set_visible(False)
  fig.suptitle(f"final validation {metric} vs hyperparameter", fontsize=10)
  handles = [Line2D([], [], ls="", marker="o", color=COLORS.get(f), label=f)
             for f in sorted(families)]
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  if handles:
    fig.legend(handles=handles, title="family", loc="upper right", fontsize=8, title_fontsize=8)
  fig.savefig(path)
  plt.close(fig)


def best_so_far(ex) -> list[tuple[float, float]]:
  """(search seconds, best validation score up to then): one point per time a rung ended
  (the trials of a rung share its end time, so one point, not a vertical bar)."""
  best_at: dict[float, float] = {}
  for t in ex.trials.values():
    for h in t.history:
      if math.isfinite(h["score"]):
        best_at[h["elapsed"]] = max(best_at.get(h["elapsed"], -math.inf), h["score"])
  best, pts = -math.inf, []
  for e in sorted(best_at):
    best = max(best, best_at[e])
    pts.append((e, best))
  return pts


def plot_progress(path, executors, metric):
  """Best validation score so far against search seconds, per method, as step lines."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
  for name, ex in executors.items():
    pts = best_so_far(ex)
    if pts:
      held = pts + [(max(ex.elapsed, pts[-1][0]), pts[-1][1])]  # to the method's last second
      line, = ax.step(*zip(*held), where="post", label=name)
      ax.plot(*zip(*pts), ls="", marker=".", color=line.get_color())
  ax.set_xlabel("seconds of search (including compiles)")
  ax.set_ylabel(f"best validation {metric} so far")
  ax.set_title("best score so far")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _compiles(by_kind) -> str:
  return ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))


def _compile_line(ex) -> str:
  """This process's compile seconds: in all, blocking the search, from the disk cache."""
  p = ex.programs
  first = ("" if ex.first_result_s is None
           else f"; first trial result at {ex.first_result_s:.1f} s")
  return (f"compiling took {p.compile_s:.1f} s in this process, of which the search waited "
          f"{p.wait_s:.1f} s (the rest overlapped the tree trials); {p.cache_hits} of "
          f"{p.compiles} programs came from the persistent compilation cache{first}")


def _hp(hp: dict) -> str:
  return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(hp.items()))


def trial_rows(trials):
  rows = []
  for t in search.leaderboard(trials):
    rungs = "; ".join(f"{h['budget']:g}: {_fmt(h['score'])}" for h in t.history)
    rows.append([t.id, t.family, _hp(t.hp), rungs, _fmt(t.score), f"{t.cost_s:.2f}",
                 f"{t.compile_s:.2f}",
                 f"{max((h['mem_mb'] for h in t.history), default=0):.2f}",
                 t.status + (f" ({t.note})" if t.note else "")])
  return rows


def selection_lines(final, metric: str) -> list[str]:
  """What `selection.finalize` did: how it scored, the ensemble, the refit, its warnings."""
  i = final.info
  out = [f"**Warning:** {w}" for w in i["warnings"]] + [
      f"scored by {i['method']}; {metric} of the candidates: "
      + ", ".join(f"#{k} {_fmt(v)}" for k, v in i["scores"].items())] + i["notes"]
  e = i.get("ensemble")
  if e:
    weights = ", ".join(f"#{k} x{w:.2f}" for k, w in e["weights"].items())
    out.append(f"greedy ensemble selection (Caruana et al.): {weights}, {metric} {_fmt(e['score'])}"
               + (" - kept: better than the best single model" if e["used"] else
                  " - not kept: no better than the best single model"))
  out.append(i.get("refit") or "no refit: models trained on the training split")
  out.append(f"selection and refit took {i['seconds']:.1f} s after the search")
  return out


def write(workdir, prep, cfg, ex, best, test, base, base_results, compiled=None,
          final=None) -> str:
  """Writes report.md and report.html in `workdir`; returns the path of report.md.

  compiled: programs compiled by the whole run by kind (a resumed run's processes together);
  default: those of this process. final: the `selection.Final` the model came from."""
  compiled = ex.programs.compiles_by if compiled is None else compiled
  s, plots = cfg.search, {}
  board = search.leaderboard(ex.trials.values())
  trials = list(ex.trials.values())
  for name, fn, args in (("rungs.png", plot_rungs, (trials, s.metric)),
                         ("leaderboard.png", plot_leaderboard, (board, s.metric)),
                         ("hyperparameters.png", plot_hparams, (trials, s.metric)),
                         ("progress.png", plot_progress, ({"search": ex, **base}, s.metric))):
    path = os.path.join(workdir, name)
    fn(path, *args)
    plots[name] = path
  status = {k: sum(t.status == k for t in trials) for k in ("complete", "pruned", "failed")}
  sections: list[tuple] = [
      ("h1", f"AutoML report: {prep.name}"),
      ("p", f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
            f"seed {cfg.seed}; {ex.mesh.size} device(s); {sum(compiled.values())} compiled "
            f"population programs ({_compiles(compiled)}); search {ex.elapsed:.1f} s "
            f"(including compiles); {_compile_line(ex)}."),
      ("h2", "Dataset"),
      ("table", ["property", "value"],
       [["name", prep.name], ["modality", prep.modality], ["classes", len(prep.classes)],
        ["train / val / test rows", f"{len(prep.y[0])} / {len(prep.y[1])} / {len(prep.y[2])}"]]
       + [[k, _fmt(v)] for k, v in prep.meta.items()]),
      ("h2", "Steps and algorithms"),
      ("ul", prep.notes + [
          f"families searched: {', '.join(sorted({t.family for t in trials}))}",
          f"scheduler: {s.scheduler} (eta={s.eta}, budgets {s.min_budget:g}..{s.max_budget:g};"
          f" budget = epochs for neural families, x{s.trees_per_budget} random-forest trees, "
          f"x{s.get('boost_per_budget', s.trees_per_budget)} boosting iterations; the linear "
          "family is fitted once)",
          f"sampler: {s.sampler}, {s.group_size} consecutive samples share architecture and "
          "batch size and train as one vmapped population; one compiled program per family "
          "covers every architecture and batch size (mlp: masked widths and depths)",
          f"metric: validation {s.metric}; trials: {len(trials)} ({status['complete']} complete, "
          f"{status['pruned']} pruned, {status['failed']} failed); budget used: {ex.units:g} units",
      ]),
  ]
  if getattr(ex, "warm", None) is not None:  # what the experience store and the prior gave
    sections += [("h2", "Warm start"), ("ul", ex.warm.report_lines())]
  sections.append(("h2", "Selected model"))
  if best is None:
    sections.append(("p", "Every trial failed: no model selected."))
  else:
    ens = final is not None and len(final.members) > 1
    what = (f"an ensemble of {len(final.members)} models led by trial #{best.id} ({best.family})"
            if ens else f"Trial #{best.id}: **{best.family}** with {_hp(best.hp)}")
    sections += [
        ("p", f"{what}, trained to budget {best.budget:g}; validation {s.metric} "
              f"{best.score:.4f} in the search. Saved in the workdir "
              "(model.json, model.pkl): `metajax.load_trained(workdir).predict(X)`."),
        ("ul", selection_lines(final, s.metric) if final is not None else []),
        ("table", ["test accuracy", "test macro F1", "test log-loss"],
         [[f"{test['accuracy']:.4f}", f"{test['f1']:.4f}", f"{test['log_loss']:.4f}"]]),
    ]
  rows = [["search (" + s.scheduler + ")", len(trials), f"{ex.units:g}",
           _fmt(best.score) if best else "-", _fmt(test.get("accuracy", float("nan"))),
           _fmt(test.get("f1", float("nan"))), _fmt(test.get("log_loss", float("nan")))]]
  for name, (b, tm) in base_results.items():
    rows.append([name, len(base[name].trials), f"{base[name].units:g}",
                 _fmt(b.score) if b else "-", _fmt(tm.get("accuracy", float("nan"))),
                 _fmt(tm.get("f1", float("nan"))), _fmt(tm.get("log_loss", float("nan")))])
  sections += [
      ("h2", "Beside it, at the same budget"),
      ("table", ["method", "trials", "budget units", f"val {s.metric}", "test accuracy",
                 "test F1", "test log-loss"], rows),
      ("h2", "Leaderboard"), ("img", plots["leaderboard.png"]),
      ("h2", "Plots"), ("img", plots["rungs.png"]), ("img", plots["progress.png"]),
      ("img", plots["hyperparameters.png"]),
      ("h2", "Every trial"),
      ("table", ["id", "family", "hyperparameters", "budget: val score per rung", "final val",
                 "train s", "compile s", "peak MB", "status"], trial_rows(trials)),
  ]
  md = _markdown(sections)
  atomic_write(os.path.join(workdir, "report.md"), md)
  atomic_write(os.path.join(workdir, "report.html"), _html(sections, prep.name))
  return os.path.join(workdir, "report.md")


def _markdown(sections) -> str:
  out = []
  for s in sections:
    kind = s[0]
    if kind == "h1":
      out.append(f"# {s[1]}")
    elif kind == "h2":
      out.append(f"## {s[1]}")
    elif kind == "p":
      out.append(s[1])
    elif kind == "ul":
      out.append("\n".join(f"- {x}" for x in s[1]))
    elif kind == "table":
      out.append(md_table(s[1], [[str(c).replace("|", "/") for c in r] for r in s[2]]))
    elif kind == "img":
      out.append(f"![{os.path.basename(s[1])}]({os.path.basename(s[1])})")
  return "\n\n".join(out) + "\n"


def _html(sections, title) -> str:
  out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
         "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>"]
  for s in sections:
    kind = s[0]
    if kind in ("h1", "h2"):
      out.append(f"<{kind}>{html.escape(s[1])}</{kind}>")
    elif kind == "p":
      out.append(f"<p>{html.escape(s[1]).replace('**', '')}</p>")
    elif kind == "ul":
      out.append("<ul>" + "".join(f"<li>{html.escape(str(x))}</li>" for x in s[1]) + "</ul>")
    elif kind == "table":
      head = "".join(f"<th>{html.escape(str(h))}</th>" for h in s[1])
      body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                     for r in s[2])
      out.append(f"<table><tr>{head}</tr>{body}</table>")
    elif kind == "img":
      with open(s[1], "rb") as f:
        b64 = base64.b64encode(f.read()).decode()
      out.append(f"<p><img src='data:image/png;base64,{b64}'></p>")
  return "\n".join(out) + "</body></html>\n"

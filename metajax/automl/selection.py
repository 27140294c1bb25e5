"""The final model after a search: selection that holds on small data, an ensemble, a refit.

`finalize(ex)` (config group `selection`):
  1. Candidates: the top `top_k` trials of the leaderboard, each at the budget it reached.
  2. Scores: with fewer than `small_rows` train+validation rows, every candidate is trained
     again on k = ceil(rows / validation rows) stratified holdouts of train+validation and
     scored on its out-of-fold probabilities (every row held out at least once, by models that
     did not see it; a row held out twice gets the mean); otherwise on the validation split,
     by the search's own models. Each holdout has exactly the search's train and validation
     sizes, so the neural families reuse the search's compiled programs. With a time budget
     (search and final selection together: the search stops at (1 - `time_share`) of it),
     only the leading candidates whose holdouts and refit (estimated from their training
     seconds in the search) fit in the time left are re-scored (at least two, or none: then
     validation scores, noted).
  3. Warning when those rows cannot separate the top two candidates: a paired per-row
     comparison (correct or not; per-row log-loss for `log_loss`) whose mean difference is
     within two standard errors of zero.
  4. Ensemble: greedy selection with replacement (`ensemble.caruana`) over the candidates'
     out-of-fold (or validation) probabilities, kept only when it beats the best single
     candidate on them.
  5. Refit: the chosen configuration, or each ensemble member, is trained again on
     train+validation at its budget (`refit`), when its estimated cost (training seconds
     scaled by rows, plus a neural family's compile) fits in the time left of the budget;
     otherwise the models trained on the training split are kept, noted. The test split is
     scored once, on the final model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from metajax.automl import ensemble, search
from metajax.automl.config import NEURAL
from metajax.automl.data import Prepared


@dataclasses.dataclass
class Final:
  """The selected model: `members` (family, hp, state, arch, weight, id; one for a single
  model), the best single candidate `trial`, test metrics and what the selection did."""
  trial: search.Trial
  members: list[dict]
  test: dict[str, float]
  info: dict[str, Any]


def candidates(ex: search.Executor, k: int) -> list[search.Trial]:
  """The top `k` usable trials of the leaderboard (finished or pruned, finite score; a
  resumed search has no states of pruned trials, which `finalize` retrains when it needs them)."""
  board = [t for t in search.leaderboard(ex.trials.values())
           if t.status != "failed" and math.isfinite(t.score)]
  return board[:k]


def _subset(prep: Prepared, views: dict, y: np.ndarray, tr, va, te=None) -> Prepared:
  """A Prepared whose train/val(/test) rows are `tr`/`va`(/`te`) of the stacked views."""
  te = va if te is None else te
  return dataclasses.replace(
      prep, views={k: (v[tr], v[va], v[te]) for k, v in views.items()},
      y=(y[tr], y[va], y[te]))


def _stacked(prep: Prepared):
  """Every view and the labels over train then validation rows."""
  views = {k: _vstack(v[0], v[1]) for k, v in prep.views.items()}
  return views, np.concatenate(prep.y[:2])


def _vstack(a, b):
  if hasattr(a, "tocsr"):  # scipy sparse (TF-IDF)
    import scipy.sparse as sp
    return sp.vstack([a, b]).tocsr()
  return np.concatenate([a, b])


def _train(ex: search.Executor, prep: Prepared, trials, label: str) -> search.Executor:
  """Trains `trials`' configurations from scratch on prep's train rows, each to its budget
  and with its own seed (the trial id), as one executor run (neural ones as populations)."""
  sub = search.Executor(prep, ex.cfg, None, label, programs=ex.programs)
  sub.deadline = math.inf
  sub.run([(sub.trial(t.id, t.family, t.hp), t.budget) for t in trials])
  return sub


def holdouts(y: np.ndarray, n_val: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """k = ceil(N / n_val) (train, val) index pairs over labels y [N]: each val has exactly
  n_val rows (consecutive blocks of a class-interleaved shuffle, so each is stratified; the
  last wraps around), together they cover every row, and train is the rest."""
  n = len(y)
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n)
  rank = np.empty(n)  # a row's position within its class, as a share of the class
  for c in np.unique(y):
    rows = perm[y[perm] == c]
    rank[rows] = (np.arange(len(rows)) + rng.uniform()) / len(rows)
  order = perm[np.argsort(rank[perm], kind="stable")]
  k = max(2, math.ceil(n / n_val))
  out = []
  for f in range(k):
    va = np.take(order, np.arange(f * n_val, (f + 1) * n_val), mode="wrap")
    out.append((np.setdiff1d(np.arange(n), va), np.sort(va)))
  return out


def refit_seconds(trials, rows: int, train_rows: int) -> float:
  """Estimated seconds to train `trials` again on `rows` rows: their training seconds in the
  search scaled by rows / train_rows, plus each neural family's compile (new shapes)."""
  return sum(t.cost_s * rows / max(train_rows, 1) + (t.compile_s if t.family in NEURAL else 0.0)
             for t in trials)


def affordable(cands, k: int, seconds: float):
  """The leading candidates whose k holdout trainings plus a refit (estimated from their
  training seconds in the search) fit in `seconds`; (candidates, note) where the note says why
  the holdouts are skipped when fewer than two fit (then all are scored on validation)."""
  keep, total = [], 0.0
  for t in cands:
    cost = (k + 1) * t.cost_s
    if total + cost > seconds:
      break
    keep.append(t)
    total += cost
  if len(keep) >= 2:
    return keep, None
  est = (k + 1) * sum(t.cost_s for t in cands[:2])
  return cands, (f"out-of-fold re-scoring skipped: it would take about {est:.1f} s for the top "
                 f"two alone, over the {max(seconds, 0.0):.1f} s left of time_budget_s; scored "
                 "on the validation split")


def _rowwise(metric: str, y: np.ndarray, prob: np.ndarray) -> np.ndarray:
  """Per-row merit: correct (0/1), or minus the row's log-loss for `log_loss`."""
  if metric == "log_loss":
    return np.log(np.clip(prob[np.arange(len(y)), y], 1e-7, 1.0))
  return (prob.argmax(1) == y).astype(np.float64)


def separation(metric: str, y, probs: dict, scores: dict, where: str) -> str | None:
  """A warning when the two best-scored candidates are not separated on these rows."""
  if len(scores) < 2:
    return None
  a, b = sorted(scores, key=lambda i: -scores[i])[:2]
  d = _rowwise(metric, y, probs[a]) - _rowwise(metric, y, probs[b])
  se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
  if abs(float(d.mean())) > 2 * se:
    return None
  return (f"the {where} ({len(y)} rows) is too small to separate the top configurations: "
          f"trial {a} scores {scores[a]:.4f} and trial {b} {scores[b]:.4f} on {metric}, a "
          f"per-row difference of {d.mean():+.4f} with standard error {se:.4f}; the choice "
          "between them is close to chance, and the winner's score, a maximum over near-ties, "
          "is optimistic")


def _out_of_fold(ex, views, y_all, cands, splits) -> dict[int, np.ndarray]:
  """Candidate id -> out-of-fold probabilities [N, C] over train+validation (rows held out
  twice: the mean), each holdout's models trained from scratch; diverged candidates left out."""
  prep = ex.prep
  total = {t.id: np.zeros((len(y_all), prep.num_classes)) for t in cands}
  seen = np.zeros(len(y_all))
  for f, (tr, va) in enumerate(splits):
    sub = _train(ex, _subset(prep, views, y_all, tr, va), cands, f"holdout{f}")
    seen[va] += 1
    for t in cands:
      total[t.id][va] += (sub.predict_proba(sub.trials[t.id], sub.prep.views[
          search.VIEW[t.family]][1]) if t.id in sub.states else np.nan)
  return {i: (p / seen[:, None]).astype(np.float32) for i, p in total.items()
          if np.isfinite(p).all()}


def _validation(ex, cands) -> dict[int, np.ndarray]:
  """Candidate id -> validation probabilities of the search's models (those a resumed search
  no longer holds are trained again on the training split)."""
  prep = ex.prep
  gone = [t for t in cands if t.id not in ex.states]
  again = _train(ex, prep, gone, "rescore") if gone else None
  out = {}
  for t in cands:
    x = prep.views[search.VIEW[t.family]][1]
    if t.id in ex.states:
      out[t.id] = ex.predict_proba(t, x)
    elif t.id in again.states:
      out[t.id] = again.predict_proba(again.trials[t.id], x)
  return out


def finalize(ex: search.Executor) -> Final | None:
  """Selects, optionally ensembles and refits the search's final model (module docstring).
  None when no trial finished."""
  cfg, prep = ex.cfg, ex.prep
  sel, metric = cfg.selection, cfg.search.metric
  t0 = time.perf_counter()
  cands = candidates(ex, sel.top_k)
  if not cands:
    return None
  views, y_all = _stacked(prep)
  n = len(y_all)
  info: dict[str, Any] = dict(rows=n, val_rows=len(prep.y[1]), notes=[], warnings=[])
  budget = cfg.search.time_budget_s
  left = lambda: budget - ex.now() if budget else math.inf  # ex.now(): search + this so far
  splits = holdouts(y_all, len(prep.y[1]), cfg.seed) if n < sel.small_rows else []
  if splits and budget:
    cands, skipped = affordable(cands, len(splits), left())
    if skipped:
      info["notes"].append(skipped)
      splits = []
  if splits:
    probs = _out_of_fold(ex, views, y_all, cands, splits)
    k = len(splits)
    y_sel, where = y_all, f"out-of-fold prediction over {k} holdouts of train+validation"
    info.update(method=f"{k} stratified holdouts covering train+validation (fewer than "
                f"{sel.small_rows} rows), out-of-fold scores of the top {len(cands)} "
                "configurations", folds=k)
  else:
    probs = _validation(ex, cands)
    y_sel, where = prep.y[1], "validation split"
    info.update(method=f"validation score of the top {len(cands)} configurations", folds=0)
  scores = {i: search.score(metric, y_sel, p) for i, p in probs.items()}
  scores = {i: s for i, s in scores.items() if math.isfinite(s)}
  if not scores:
    return None
  order = sorted(scores, key=lambda i: (-scores[i], [t.id for t in cands].index(i)))
  best = ex.trials[order[0]]
  info["scores"] = {i: scores[i] for i in order}
  warn = separation(metric, y_sel, probs, scores, where)
  if warn:
    info["warnings"].append(warn)
  weights = {best.id: 1.0}
  info["score"] = scores[best.id]
  if sel.ensemble and len(order) > 1:
    w, s = ensemble.caruana([probs[i] for i in order], y_sel, metric, sel.ensemble_rounds)
    info["ensemble"] = dict(weights={i: float(x) for i, x in zip(order, w) if x > 0}, score=s,
                            used=bool(s > scores[best.id] + 1e-12 and (w > 0).sum() > 1))
    if info["ensemble"]["used"]:
      weights, info["score"] = info["ensemble"]["weights"], s
  chosen = [ex.trials[i] for i in weights]
  refit, cost = sel.refit, refit_seconds(chosen, n, len(prep.y[0]))
  if refit and cost > left():
    refit = False
    info["refit"] = None
    info["notes"].append(
        f"refit on train+validation skipped: about {cost:.1f} s, over the "
        f"{max(left(), 0.0):.1f} s left of time_budget_s; the models trained on the training "
        "split are kept")
  if refit:
    full = dataclasses.replace(
        prep, views={k: (views[k], prep.views[k][1], prep.views[k][2]) for k in views},
        y=(y_all, prep.y[1], prep.y[2]))
    sub = _train(ex, full, chosen, "refit")
    info["refit"] = f"refit on train+validation ({n} rows)"
  else:
    sub = None
  if sub is None or any(t.id not in sub.states for t in chosen):
    if refit:  # a refit that diverged: the models trained on the training split
      info["warnings"].append("a refit on train+validation diverged: models trained on the "
                              "training split kept")
      info["refit"] = None
    missing = [t for t in chosen if t.id not in ex.states]
    sub = _train(ex, prep, missing, "retrain") if missing else ex
    sub.states = {**ex.states, **sub.states}
  members = [dict(id=t.id, family=t.family, hp=dict(t.hp), weight=float(weights[t.id]),
                  state=sub.states[t.id], arch=sub.arch(t) if t.family in NEURAL else None)
             for t in chosen]
  test_prob = predict_members(prep, members, lambda view: prep.views[view][2], ex.programs)
  info["seconds"] = time.perf_counter() - t0
  return Final(best, members, search.test_metrics(prep.y[2], test_prob), info)


def predict_members(prep: Prepared, members: list[dict], features, programs=None) -> np.ndarray:
  """[N, C] weighted mean of the members' probabilities; features(view) gives the inputs."""
  cache: dict[str, Any] = {}
  out = None
  for m in members:
    view = search.VIEW[m["family"]]
    if view not in cache:
      cache[view] = features(view)
    p = m["weight"] * search.predict_proba(prep, m["family"], m["hp"], m["state"], cache[view],
                                           programs, m["arch"])
    out = p if out is None else out + p
  return np.asarray(out, np.float32)

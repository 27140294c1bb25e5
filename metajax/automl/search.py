"""The search: trials, the executor that trains them by population, and the schedulers.

Schedulers (successive halving, Hyperband, ASHA, random search, a fixed
configuration) only decide *which trials advance to which budget*; they call
`Executor.run(jobs)` with a list of (trial, budget). The executor groups the
neural jobs into vmapped populations (one compiled program per family covers the
whole space: `population`), starts compiling those programs in the background
before it grows the tree ensembles (warm starts), so compiles overlap the tree
trials, scores every trial on the validation split, marks NaN/inf trials failed,
persists the search and prints one progress line per rung (`runlog.say`; off with
`search.progress=False` or `runlog.set_quiet`).
A restarted search replays the (deterministic) scheduler and skips every job
already in the persisted state, so finished work is never redone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time
from typing import Any, Callable

import jax
import numpy as np

from metajax import parallel, runlog
from metajax.automl import population, space as space_lib, trees
from metajax.automl.config import NEURAL as NN
from metajax.automl.data import Prepared
from metajax.runlog import atomic_write

TREES = ("rf", "gbm", "linear")  # scikit-learn estimators (`trees`)
VIEW = {"mlp": "flat", "cnn": "image", "gru": "ids", "rf": "flat", "gbm": "flat",
        "linear": "linear"}  # linear: TF-IDF n-grams for texts, else the flat features


def score(metric: str, y: np.ndarray, prob: np.ndarray) -> float:
  """Validation score, higher is better (`log_loss` is negated). prob: [N, C]."""
  from sklearn import metrics as skm
  if not np.all(np.isfinite(prob)):
    return float("nan")
  pred = prob.argmax(1)
  if metric == "accuracy":
    return float((pred == y).mean())
  if metric == "balanced_accuracy":
    return float(skm.balanced_accuracy_score(y, pred))
  if metric == "f1":
    return float(skm.f1_score(y, pred, average="macro"))
  return -float(skm.log_loss(y, np.clip(prob, 1e-7, 1.0), labels=np.arange(prob.shape[1])))


def test_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
  """Accuracy, macro F1 and log-loss of probabilities prob [N, C] against labels y [N]."""
  return {"accuracy": score("accuracy", y, prob), "f1": score("f1", y, prob),
          "log_loss": -score("log_loss", y, prob)}


def search_seconds(cfg) -> float:
  """When the search stops: time_budget_s less the share kept for the final selection
  (`selection.time_share`); inf without a budget."""
  budget = cfg.search.time_budget_s
  if not budget:
    return math.inf
  sel = cfg.get("selection")
  return budget * (1.0 - (sel.time_share if sel is not None else 0.0))


@dataclasses.dataclass
class Trial:
  """One configuration and what happened to it.

  history: one row per rung reached: budget, val score, train loss curve, elapsed
  search seconds at the result, train seconds, compile seconds (its population's wait for
  a compile, shared among the members like train seconds), peak memory (MB).
  status: 'running' | 'complete' | 'pruned' | 'failed'.
  """
  id: int
  family: str
  hp: dict
  bracket: int = 0
  status: str = "running"
  history: list = dataclasses.field(default_factory=list)
  note: str = ""

  @property
  def budget(self) -> float:
    return self.history[-1]["budget"] if self.history else 0.0

  @property
  def score(self) -> float:
    s = self.history[-1]["score"] if self.history else float("nan")
    return s if math.isfinite(s) else -math.inf

  def score_at(self, budget: float) -> float:
    """Validation score at `budget` (-inf if not reached or non-finite): rankings of a
    rung use it, so a replayed rung ranks as the original did, whatever came later."""
    s = next((h["score"] for h in self.history if h["budget"] == budget), float("nan"))
    return s if math.isfinite(s) else -math.inf

  @property
  def cost_s(self) -> float:
    return sum(h["train_s"] for h in self.history)

  @property
  def compile_s(self) -> float:
    return sum(h.get("compile_s", 0.0) for h in self.history)

  def row(self) -> dict:
    return dict(id=self.id, family=self.family, hp=self.hp, bracket=self.bracket,
                status=self.status, history=self.history, note=self.note)


class StopSearch(Exception):
  """The time budget ran out (or a test asked to stop): the search keeps what it has."""


class Executor:
  """Trains jobs (trial, budget) grouped into populations; persists after every call.

  prep: the prepared data; cfg: the automl config (reads seed and search.*); state_path:
  pickle of the search
  (None: not persisted). on_rung(executor) runs after every persisted rung.
  """

  def __init__(self, prep: Prepared, cfg, state_path: str | None, label: str = "search",
               store=None, run_id: str = "", on_rung: Callable | None = None, mesh=None,
               programs: population.Programs | None = None):
    self.prep, self.cfg, self.state_path, self.label = prep, cfg, state_path, label
    self.store, self.run_id, self.on_rung = store, run_id, on_rung
    self.programs = programs or population.Programs(mesh or parallel.make_mesh())
    self.mesh = self.programs.mesh
    self.trials: dict[int, Trial] = {}
    self.states: dict[int, Any] = {}
    self.done: set[tuple[int, float]] = set()
    self.elapsed, self.units, self.rungs = 0.0, 0.0, 0
    self.skipped = 0
    self.first_result_s = None  # search seconds at the first trial's validation score
    self.deadline = search_seconds(cfg)
    self._t0 = time.perf_counter()
    self._dev: dict[str, Any] = {}
    if state_path and os.path.exists(state_path):
      with open(state_path, "rb") as f:
        s = pickle.load(f)
      self.trials = {r["id"]: Trial(**r) for r in s["trials"]}
      self.states, self.done = s["states"], s["done"]
      self.elapsed, self.units, self.rungs = s["elapsed"], s["units"], s["rungs"]
      self.first_result_s = s.get("first_result_s")
    self._base = self.elapsed

  # -------------------------------------------------------------- bookkeeping
  def now(self) -> float:
    """Search seconds so far, including those of earlier (killed) processes."""
    return self._base + time.perf_counter() - self._t0

  def trial(self, i: int, family: str, hp: dict, bracket: int = 0) -> Trial:
    """Trial `i`, created on first request (a replay gets the persisted one)."""
    if i not in self.trials:
      self.trials[i] = Trial(i, family, dict(hp), bracket)
    return self.trials[i]

  def persist(self) -> None:
    self.elapsed = self.now()
    if self.state_path:
      live = {i: s for i, s in self.states.items()
              if self.trials[i].status in ("running", "complete")}  # pruned ones are not needed
      atomic_write(self.state_path, pickle.dumps(dict(
          trials=[t.row() for t in self.trials.values()], states=live, done=self.done,
          elapsed=self.elapsed, units=self.units, rungs=self.rungs,
          first_result_s=self.first_result_s)))
    if self.store is not None:
      self.store.record(self.run_id, self.prep, self.cfg, list(self.trials.values()))

  # -------------------------------------------------------------- training
  def _data(self, view: str, part: int):
    k = f"{view}{part}"
    if k not in self._dev:
      arr = self.prep.views[view][part]
      self._dev[k] = parallel.replicate(jax.numpy.asarray(arr), self.mesh)
    return self._dev[k]

  def arch(self, t: Trial) -> population.Arch:
    """The program trial `t` trains in: its family's largest batch size in the space, and
    the largest layers / units where the family masks them (`population.MASKED`: mlp both,
    gru units; else the trial's own), never below the trial's values (a warm-started
    configuration may lie outside the space)."""
    x = self.prep.views[VIEW[t.family]][0]
    top = lambda k, d: max(int(t.hp.get(k, d)), space_lib.upper(self.cfg.space, t.family, k, d))
    masked = population.MASKED.get(t.family, ())
    layers = top("layers", 1) if "layers" in masked else int(t.hp.get("layers", 1))
    units = top("units", int(t.hp["units"])) if "units" in masked else int(t.hp["units"])
    bs = min(top("batch_size", int(t.hp["batch_size"])), len(x))
    return population.Arch(
        t.family, layers, units, bs, tuple(x.shape[1:]), self.prep.num_classes,
        max(1, len(x) // bs), getattr(self.prep.prep, "vocab_size", 0) if t.family == "gru" else 0,
        own_layers=int(t.hp.get("layers", 1)), own_units=int(t.hp["units"]))

  def _member_hp(self, t: Trial) -> dict:
    """The trial's hyperparameters with its batch size capped by the training rows."""
    return dict(t.hp, batch_size=min(int(t.hp["batch_size"]), len(self.prep.y[0])))

  def run(self, jobs: list[tuple[Trial, float]]) -> None:
    """Advances every (trial, budget) job; skips those already done (resume)."""
    todo = [(t, b) for t, b in jobs if (t.id, b) not in self.done and t.status == "running"]
    if not todo:
      self.skipped += len(jobs)
      return
    if self.now() > self.deadline:
      raise StopSearch
    yv = self.prep.y[1]
    results = {}
    groups: dict[Any, list] = {}
    late = False  # the time budget ran out part-way: keep what finished, then stop
    P = population.bucket(self.cfg.search.group_size, self.mesh.size)
    for t, b in todo:
      if t.family in NN:
        groups.setdefault((self.arch(t), int(round(b - t.budget))), []).append((t, b))
    for arch, _ in groups:  # compiles run in the background while the trees grow
      view = VIEW[arch.family]
      self.programs.prefetch(arch, P, self._data(view, 0), self._labels(), self._data(view, 1))
    for t, b in todo:
      if t.family in NN:
        continue
      if self.now() > self.deadline:
        late = True
        break
      est, secs, nbytes, reached = trees.grow(
          t.family, t.hp, self.cfg.seed + t.id, self.states.get(t.id), b,
          self.cfg.search.boost_per_budget if t.family == "gbm" else
          self.cfg.search.trees_per_budget, self.prep.views[VIEW[t.family]][0], self.prep.y[0],
          stop=lambda: self.now() > self.deadline)
      if reached < b:  # stopped by the time budget part-way
        late, b = True, reached
      self.states[t.id] = est
      prob = trees.predict_proba(est, self.prep.views[VIEW[t.family]][1], self.prep.num_classes)
      results[t.id] = (b, score(self.cfg.search.metric, yv, prob), [], secs, 0.0,
                       nbytes / 2**20)
      self.units += b - t.budget
      self._first_result()
    for (arch, epochs), group in groups.items():
      view = VIEW[arch.family]
      # one batch size per population where possible: an epoch loops for its largest count
      group.sort(key=lambda tb: (-int(self._member_hp(tb[0])["batch_size"]), tb[0].id))
      for c in range(0, len(group), P):
        t0, w0 = time.perf_counter(), self.programs.wait_s
        # a compile cannot be interrupted: wait for it only while the budget lasts
        left = self.deadline - self.now()
        if late or left <= 0 or not self.programs.ready(arch, None if math.isinf(left) else left):
          late = True
          break
        members = group[c:c + P]
        new, curves, probs, nbytes = population.train_population(
            self.programs, arch, P, [self.cfg.seed * 100003 + t.id for t, _ in members],
            [self._member_hp(t) for t, _ in members], [self.states.get(t.id) for t, _ in members],
            epochs, self._data(view, 0), self._labels(), self._data(view, 1),
            stop=lambda: self.now() > self.deadline)
        wait = self.programs.wait_s - w0
        secs = (time.perf_counter() - t0 - wait) / len(members)
        self._first_result()
        if curves.shape[1] < epochs:  # stopped by the time budget part-way
          late = True
        for i, (t, b) in enumerate(members):
          if late:
            b = t.budget + curves.shape[1]
          self.states[t.id] = new[i]
          results[t.id] = (b, score(self.cfg.search.metric, yv, probs[i]), curves[i].tolist(), secs,
                           wait / len(members), nbytes / P / 2**20)
          self.units += b - t.budget
    todo = [(t, b) for t, b in todo if t.id in results]
    now = self.now()
    for t, b in todo:
      b, s, curve, secs, comp, mb = results[t.id]
      finite = math.isfinite(s) and all(math.isfinite(c) for c in curve)
      t.history.append(dict(budget=b, score=s if finite else float("nan"), loss=curve,
                            elapsed=now, train_s=secs, compile_s=comp, mem_mb=mb))
      if not finite:
        t.status, t.note = "failed", f"loss became non-finite by budget {b:g}: pruned"
        self.states.pop(t.id, None)
      self.done.add((t.id, b))
    self.rungs += 1
    self.persist()
    if self.cfg.search.get("progress", True):
      runlog.say(self.progress_line(len(todo)))
    if self.on_rung is not None:
      self.on_rung(self)
    if late:
      raise StopSearch

  def _first_result(self) -> None:
    if self.first_result_s is None:
      self.first_result_s = self.now()

  def progress_line(self, trained: int) -> str:
    """'<label> rung k: trials, best so far, time (left)' after a rung of `trained` jobs."""
    ok = [t for t in self.trials.values() if math.isfinite(t.score)]
    best = max(ok, key=lambda t: (t.score, -t.id), default=None)
    top = (f"best val {self.cfg.search.metric} {best.score:.4f} (#{best.id} {best.family}, "
           f"budget {best.budget:g})" if best else "no finished trial yet")
    left = (f", {max(0.0, self.deadline - self.now()):.0f} s left"
            if math.isfinite(self.deadline) else "")
    return (f"{self.label} rung {self.rungs}: {trained} trained, {len(self.trials)} trials, "
            f"{top}; {self.now():.1f} s{left} (compiles {self.programs.compile_s:.1f} s, "
            f"{self.programs.wait_s:.1f} s waited)")

  def _labels(self):
    if "y0" not in self._dev:
      self._dev["y0"] = parallel.replicate(jax.numpy.asarray(self.prep.y[0]), self.mesh)
    return self._dev["y0"]

  # -------------------------------------------------------------- predictions
  def predict_proba(self, t: Trial, X: np.ndarray) -> np.ndarray:
    """[N, C] probabilities of trial `t`'s current model on model-ready inputs X."""
    return predict_proba(self.prep, t.family, t.hp, self.states[t.id], X, self.programs,
                         self.arch(t) if t.family in NN else None)


def predict_proba(prep: Prepared, family: str, hp: dict, state, X, programs=None, arch=None):
  """Probabilities [N, C] from a trained state (an estimator or a `population.Member`)."""
  if family in TREES:
    return trees.predict_proba(state, X, prep.num_classes)
  programs = programs or population.Programs(parallel.make_mesh())
  P = programs.mesh.size
  members = parallel.shard_batch(jax.tree.map(lambda a: np.stack([a] * P), state), programs.mesh)
  return programs.predict(arch, members, X)[0]


# ------------------------------------------------------------------ schedulers
def budgets(min_b: float, max_b: float, eta: int) -> list[float]:
  """Rung budgets min_b * eta^k, capped by (and ending at) max_b."""
  out, b = [], float(min_b)
  while b < max_b - 1e-9:
    out.append(b)
    b *= eta
  return out + [float(max_b)]


class Sampler:
  """Fresh configurations in a fixed order (so a replayed search sees the same trials)."""

  def __init__(self, space, families, method, seed, group_size):
    self.space, self.families, self.method = space, families, method
    self.seed, self.group_size, self.n = seed, group_size, 0
    self._pts: list[dict] = []

  def take(self, k: int) -> list[tuple[int, dict]]:
    while len(self._pts) < self.n + k:
      chunk = max(64, 2 * k)
      self._pts += space_lib.sample(self.space, self.families, chunk, self.method, self.seed,
                                    self.group_size, offset=len(self._pts))
    out = [(self.n + i, self._pts[self.n + i]) for i in range(k)]
    self.n += k
    return out


def _new(ex: Executor, sampler: Sampler, k: int, bracket: int = 0) -> list[Trial]:
  return [ex.trial(i, c["family"], {a: v for a, v in c.items() if a != "family"}, bracket)
          for i, c in sampler.take(k)]


def successive_halving(ex: Executor, trials: list[Trial], r0: float, max_b: float, eta: int):
  """Trains `trials` at r0, keeps the top 1/eta, continues them at eta*r0, ... up to max_b."""
  alive = list(trials)
  for b in budgets(r0, max_b, eta):
    ex.run([(t, b) for t in alive])
    ok = sorted((t for t in alive if t.status != "failed" and t.budget >= b),
                key=lambda t: (-t.score_at(b), t.id))
    if b >= max_b or not ok:
      for t in ok:
        t.status = "complete"
      return
    keep = max(1, len(ok) // eta)
    for t in ok[keep:]:
      t.status, t.note = "pruned", f"below the top 1/{eta} at budget {b:g}"
    alive = ok[:keep]  # a lone survivor still climbs to max_b: it is the bracket's answer


def hyperband(ex: Executor, sampler: Sampler, min_b: float, max_b: float, eta: int,
              max_trials: int, iterations: int):
  """Brackets s = s_max..0 of successive halving (n = ceil((s_max+1)/(s+1) eta^s) trials at
  max_b eta^-s), repeated `iterations` times (0: until the time budget or max_trials)."""
  s_max = len(budgets(min_b, max_b, eta)) - 1
  it = 0
  while iterations == 0 or it < iterations:
    for s in range(s_max, -1, -1):
      n = math.ceil((s_max + 1) / (s + 1) * eta ** s)
      if max_trials:
        n = min(n, max_trials - sampler.n)
        if n <= 0:
          return
      successive_halving(ex, _new(ex, sampler, n, s), max_b / eta ** s, max_b, eta)
    it += 1


def asha(ex: Executor, sampler: Sampler, min_b: float, max_b: float, eta: int,
         max_trials: int, workers: int):
  """Asynchronous successive halving, simulated deterministically in waves of `workers` jobs.

  Each free worker promotes the best not-yet-promoted trial in the top 1/eta of
  the highest rung that has one; otherwise it starts a new trial at min_b. A wave
  (one job per worker) trains together as populations; the next wave sees its results.
  """
  rb = budgets(min_b, max_b, eta)
  promoted: list[set] = [set() for _ in rb]
  while True:
    wave: list[tuple[Trial, float]] = []
    busy: set[int] = set()
    for _ in range(workers):
      job = None
      for k in range(len(rb) - 2, -1, -1):
        at_k = [t for t in ex.trials.values()
                if any(h["budget"] == rb[k] for h in t.history) and t.status != "failed"]
        at_k.sort(key=lambda t: (-t.score_at(rb[k]), t.id))
        top = [t for t in at_k[: len(at_k) // eta] if t.id not in promoted[k] and t.id not in busy]
        if top:
          job = (top[0], rb[k + 1])
          promoted[k].add(top[0].id)
          break
      if job is None and (max_trials == 0 or sampler.n < max_trials):
        job = (_new(ex, sampler, 1)[0], rb[0])
      if job is None:
        break
      busy.add(job[0].id)
      wave.append(job)
    if not wave:
      break
    ex.run(wave)
  for t in ex.trials.values():
    if t.status == "running":
      t.status = "complete" if t.budget >= max_b else "pruned"
      if t.status == "pruned":
        t.note = f"not promoted past budget {t.budget:g}"


def fixed(ex: Executor, configs: list[dict], max_b: float, first_id: int = 0):
  """Trains the given configurations straight to max_b (random search, hand-set default)."""
  trials = [ex.trial(first_id + i, c["family"], {a: v for a, v in c.items() if a != "family"})
            for i, c in enumerate(configs)]
  ex.run([(t, max_b) for t in trials])
  for t in trials:
    if t.status == "running":
      t.status = "complete"


def leaderboard(trials) -> list[Trial]:
  """Trials ranked by budget reached, then validation score (failed last)."""
  return sorted(trials, key=lambda t: (t.status == "failed", -t.budget, -t.score, t.id))

"""Experience store: every trial of every search in SQLite, for resuming and for mining later.

Two tables. `datasets` holds one row per dataset with its meta-features as
columns (so `SELECT ... WHERE n_classes > 2` works) and as JSON. `trials` holds
one row per (run, trial): family, hyperparameters (JSON), learning curve (JSON:
budget, val score, train losses per rung), final scores, cost, status. Writers
in several processes are safe: WAL journal, a busy timeout, and one short
`BEGIN IMMEDIATE` transaction per write, so concurrent writes queue instead of
failing or overwriting each other.

Query API (for warm starts): `trials(...)`, `similar_datasets(meta, k)`,
`best_configs(meta, family=None, k)`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from typing import Any

META_KEYS = ("n_rows", "log_rows", "n_features", "log_features", "n_classes", "class_entropy",
             "minority_frac", "missing_frac", "categorical_frac", "is_table", "is_image",
             "is_text", "mean_abs_corr")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS datasets (
  name TEXT PRIMARY KEY, meta TEXT NOT NULL, updated REAL,
  {", ".join(f"{k} REAL" for k in META_KEYS)});
CREATE TABLE IF NOT EXISTS trials (
  run_id TEXT NOT NULL, trial INTEGER NOT NULL, dataset TEXT NOT NULL, scheduler TEXT,
  metric TEXT, family TEXT NOT NULL, hparams TEXT NOT NULL, curve TEXT NOT NULL,
  budget REAL, val_score REAL, test_score REAL, status TEXT, cost_s REAL, note TEXT,
  updated REAL, PRIMARY KEY (run_id, trial));
CREATE INDEX IF NOT EXISTS trials_dataset ON trials (dataset, family);
"""


def _clean(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if hasattr(x, "item"):
    return x.item()
  return x


class ExperienceStore:
  """SQLite experience store at `path` (created with its tables on first use)."""

  def __init__(self, path: str):
    self.path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with self._conn() as c:
      c.execute("PRAGMA journal_mode=WAL")
      c.executescript(_SCHEMA)

  def _conn(self) -> sqlite3.Connection:
    c = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
    c.execute("PRAGMA busy_timeout=120000")
    return c

  def _write(self, statements: list[tuple[str, tuple]]) -> None:
    c = self._conn()
    try:
      for attempt in range(50):
        try:
          c.execute("BEGIN IMMEDIATE")
          break
        except sqlite3.OperationalError:  # locked beyond the timeout: back off and retry
          time.sleep(0.05 * (attempt + 1))
      else:
        raise sqlite3.OperationalError(f"experience store {self.path} stayed locked")
      for sql, args in statements:
        c.execute(sql, args)
      c.execute("COMMIT")
    except BaseException:
      if c.in_transaction:
        c.execute("ROLLBACK")
      raise
    finally:
      c.close()

  # ---------------------------------------------------------------- writing
  def put_dataset(self, name: str, meta: dict[str, float]) -> tuple[str, tuple]:
    cols = ", ".join(META_KEYS)
    return (f"INSERT INTO datasets (name, meta, updated, {cols}) VALUES (?, ?, ?, "
            f"{', '.join('?' * len(META_KEYS))}) ON CONFLICT(name) DO UPDATE SET "
            f"meta=excluded.meta, updated=excluded.updated, "
            + ", ".join(f"{k}=excluded.{k}" for k in META_KEYS),
            (name, json.dumps(meta), time.time(), *[_clean(meta.get(k)) for k in META_KEYS]))

  def add(self, run_id: str, dataset: str, meta: dict[str, float], rows: list[dict]) -> None:
    """Upserts trial rows (keys: trial, family, hparams, curve, budget, val_score,
    test_score, status, cost_s, scheduler, metric, note) and the dataset's meta-features."""
    sql = ("INSERT INTO trials (run_id, trial, dataset, scheduler, metric, family, hparams, curve,"
           " budget, val_score, test_score, status, cost_s, note, updated) VALUES "
           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(run_id, trial) DO UPDATE SET "
           "curve=excluded.curve, budget=excluded.budget, val_score=excluded.val_score, "
           "test_score=COALESCE(excluded.test_score, trials.test_score), status=excluded.status, "
           "cost_s=excluded.cost_s, note=excluded.note, updated=excluded.updated")
    now = time.time()
    stmts = [self.put_dataset(dataset, meta)]
    for r in rows:
      stmts.append((sql, (run_id, int(r["trial"]), dataset, r.get("scheduler"), r.get("metric"),
                          r["family"], json.dumps(r["hparams"], sort_keys=True, default=str),
                          json.dumps(r.get("curve", []), default=_clean),
                          _clean(r.get("budget")), _clean(r.get("val_score")),
                          _clean(r.get("test_score")), r.get("status"), _clean(r.get("cost_s")),
                          r.get("note", ""), now)))
    self._write(stmts)

  def record(self, run_id: str, prep, cfg, trials, test_scores: dict[int, float] | None = None):
    """Upserts the trials of a search (search.Trial objects) on `prep`'s dataset."""
    rows = []
    for t in trials:
      rows.append(dict(trial=t.id, family=t.family, hparams=t.hp,
                       scheduler=cfg.search.scheduler, metric=cfg.search.metric,
                       budget=t.budget, val_score=t.score, status=t.status,
                       cost_s=t.cost_s, note=t.note,
                       test_score=(test_scores or {}).get(t.id),
                       curve=[dict(budget=h["budget"], score=_clean(h["score"]),
                                   loss=[_clean(x) for x in h["loss"]]) for h in t.history]))
    self.add(run_id, prep.name, prep.meta, rows)

  # ---------------------------------------------------------------- reading
  def trials(self, dataset: str | None = None, family: str | None = None,
             status: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Trial rows (hparams and curve decoded), best validation score first."""
    where, args = [], []
    for col, val in (("dataset", dataset), ("family", family), ("status", status),
                     ("run_id", run_id)):
      if val is not None:
        where.append(f"{col} = ?")
        args.append(val)
    sql = "SELECT * FROM trials" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY val_score IS NULL, val_score DESC, trial"
    c = self._conn()
    c.row_factory = sqlite3.Row
    try:
      rows = [dict(r) for r in c.execute(sql, args)]
    finally:
      c.close()
    for r in rows:
      r["hparams"], r["curve"] = json.loads(r["hparams"]), json.loads(r["curve"])
    return rows

  def datasets(self) -> dict[str, dict[str, float]]:
    """Dataset name -> meta-features."""
    c = self._conn()
    try:
      return {n: json.loads(m) for n, m in c.execute("SELECT name, meta FROM datasets")}
    finally:
      c.close()

  def similar_datasets(self, meta: dict[str, float], k: int = 3,
                       exclude: str | None = None) -> list[tuple[str, float]]:
    """The k stored datasets nearest to `meta` (euclidean over range-normalised meta-features)."""
    known = {n: m for n, m in self.datasets().items() if n != exclude}
    if not known:
      return []
    keys = [k_ for k_ in META_KEYS if k_ in meta]
    allv = [[m.get(k_, 0.0) for k_ in keys] for m in known.values()] + [[meta[k_] for k_ in keys]]
    lo = [min(col) for col in zip(*allv)]
    hi = [max(col) for col in zip(*allv)]
    def dist(m):
      return math.sqrt(sum(((m.get(k_, 0.0) - meta[k_]) / ((h - l) or 1.0)) ** 2
                           for k_, l, h in zip(keys, lo, hi)))
    return sorted(((n, dist(m)) for n, m in known.items()), key=lambda x: x[1])[:k]

  def best_configs(self, meta: dict[str, float], family: str | None = None, k: int = 5,
                   neighbours: int = 3, exclude: str | None = None) -> list[dict[str, Any]]:
    """Warm-start candidates: the k best finished trials on the datasets nearest to `meta`."""
    out = []
    for name, _ in self.similar_datasets(meta, neighbours, exclude):
      out += [r for r in self.trials(dataset=name, family=family)
              if r["status"] == "complete" and r["val_score"] is not None]
    out.sort(key=lambda r: -r["val_score"])
    return out[:k]

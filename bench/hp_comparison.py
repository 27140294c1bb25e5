"""The users' comparison of hyperparameter methods on held-out datasets, at equal compute.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/hp_comparison.py \
      --workdirs=runs/hp_mlp,runs/hp_cnn,runs/hp_gru --out=/tmp/hp_comparison.json
  .venv/bin/python bench/hp_comparison.py --tiny --workdirs=/tmp/hp_tiny   # smoke run
  .venv/bin/python bench/hp_comparison.py --merge=/tmp/a.json,/tmp/b.json --out=/tmp/all.json

Input: finished hp_metalearn workdirs (configs/hp_metalearn.py). Each gives the families it
meta-trained, their held-out datasets (`families.F.test_datasets`, never seen in
meta-training), the inner run and the learned rates (`learned_rates.json`). For every held-out
dataset and seed s (split `split_rows(pool, seed + s)`, key `key(seed + s)`), the methods:

  default            Adam at inner.default_lr (1e-3) in every layer: the manual default
  zero-shot E        the rates meta-learned by estimator E (per layer and segment), one run
  random search 1x   one global log LR ~ U(transfer.random_log_lr) (the first random run)
  random search Rx   the best of R such runs by validation accuracy (R = --budget_runs, 8)
  SH cold            successive halving over global log LRs ~ U(transfer.random_log_lr)
  SH warm E          successive halving whose first rung is the learned schedule of E (trial
                     0, exactly) and the same schedule shifted by a common log offset
                     LR_STD * z, z ~ N(0, 1) clipped to +-2 (trials 1..n-1)

Why successive halving over `metajax.hpo.inner.Problem` rather than `metajax.automl`: AutoML's
neural families are other models (their width, depth and batch size are searched, the budget
is epochs, the preprocessing and split are AutoML's), so its searches would differ from the
zero-shot run in model, data and training length as well as in learning rates. Here every
method trains the workdir's family model on the same pool, the same stratified split, the same
initialisation and minibatch sequence, for the same inner run of T = inner.steps steps; only
the learning rates differ. An SH trial that reaches the top rung is the same T-step run as a
full one (step i's key is fold_in(fold_in(k_data, 0), i) as in `Problem.run`). The warm start
follows AutoML's prior (`metajax.automl.warmstart`: the prior's configuration first, the first
rung's rates drawn around it with LR_STD, z clipped to +-2) but keeps the learned per-layer,
per-segment schedule and shifts it, instead of collapsing it to one global rate.

Equal compute is counted in inner training steps: one step is one optimizer step on a
minibatch of inner.batch_size rows through the same model (the same FLOPs in every method).
One run is T steps: default, zero-shot and random 1x use T; random Rx uses R*T; SH uses eta 2
and rungs T/8, T/4, T/2, T (fewer when T is not divisible) with the largest first rung n0 whose
total stays within R*T (T=200, R=8: n0=27, 27*25 + 13*25 + 6*50 + 3*100 = 1,600 steps, 8
runs). Validation passes (forward only, every rung) are not counted. One selection rule
everywhere: the highest validation accuracy, ties to the lower validation loss; the test
accuracy of the selected run is reported. Mean and 95% CI (normal, 1.96 s / sqrt(n)) over
seeds. "zero-shot reaches random Rx": the zero-shot mean test accuracy >= random Rx's (within
1e-6, float32 rounding: the same number of correct test rows is a tie, which reaches).

Default, zero-shot and random search are the runs the workdir's own transfer already made
(results.json, one vmapped program per dataset, `metajax.hpo.transfer`) when it holds enough
seeds and random runs; otherwise (or with --recompute_transfer) they are rerun here with
`transfer.evaluate_dataset`, which gives the same numbers on the same split and key.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from metajax import report, runlog
from metajax.automl import search
from metajax.automl.warmstart import LR_STD
from metajax.experiments import hp_metalearn
from metajax.hpo import learned, spec, transfer
from metajax.hpo.inner import Problem, init_hparams
from metajax.hpo.tasks import Tasks, split_rows


# ---------------------------------------------------------------- the budget

def sh_plan(steps: int, budget_runs: int, eta: int = 2, max_rungs: int = 4) -> dict:
  """Rung budgets (cumulative inner steps), first-rung size n0 and total steps of successive
  halving within `budget_runs` full runs of `steps` steps (see the module docstring)."""
  rungs = max_rungs
  while rungs > 1 and steps % eta ** (rungs - 1):
    rungs -= 1
  budgets = [int(b) for b in search.budgets(steps // eta ** (rungs - 1), steps, eta)]

  def cost(n0):
    total, n, prev = 0, n0, 0
    for b in budgets:
      total, prev, n = total + n * (b - prev), b, max(1, n // eta)
    return total

  n0 = 1
  while cost(n0 + 1) <= budget_runs * steps:
    n0 += 1
  return {"budgets": budgets, "eta": eta, "n0": n0, "steps": cost(n0),
          "runs": cost(n0) / steps, "chunk": budgets[0]}


# ---------------------------------------------------------------- candidates

def cold_candidates(num_layers: int, inner: spec.InnerSpec, n: int, log_lr_range, seed: int):
  """n global log learning rates ~ U(log_lr_range), every layer and segment alike."""
  rng = np.random.default_rng([seed, 19])
  return [init_hparams(num_layers, inner, float(lr))
          for lr in rng.uniform(*log_lr_range, size=n)]


def warm_candidates(hp: dict, n: int, log_lr_range, seed: int):
  """The learned schedule `hp` (trial 0) and n-1 copies shifted by LR_STD * z in log space."""
  rng = np.random.default_rng([seed, 17])
  z = np.concatenate([[0.0], np.clip(rng.normal(size=n - 1), -2.0, 2.0)])
  out = []
  for zi in z:
    c = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
    c["log_lr"] = jnp.clip(c["log_lr"] + LR_STD * float(zi), *log_lr_range)
    out.append(c)
  return out


def _stack(hps):
  return jax.tree.map(lambda *x: jnp.stack(x), *hps)


# ---------------------------------------------------------------- successive halving

@functools.lru_cache(maxsize=32)
def _sh_programs(family: spec.FamilySpec, inner: spec.InnerSpec, num_outputs: int, shape: tuple,
                 chunk: int):
  """(problem, init, advance, score): one member's state from `key` as `Problem.run` starts it;
  `chunk` steps of every member from step `start` (vmapped over members); val and test
  metrics of every member."""
  problem = Problem(family, inner, num_outputs, shape)

  def init(key):
    return problem.init(jax.random.split(key)[0])

  def advance(hp, state, task: Tasks, key, start):
    k = jax.random.fold_in(jax.random.split(key)[1], 0)

    def body(s, i):
      return problem.train_step(hp, s, task.x_train, task.y_train, task.n_train, task.n_classes,
                                jax.random.fold_in(k, i)), None
    return jax.lax.scan(body, state, start + jnp.arange(chunk))[0]

  def score(state, task: Tasks, xte, yte):
    vl, va = problem.val(state, task)
    tl, ta = problem.metrics(state.params, xte, yte, yte.shape[0], task.n_classes)
    return {"val_loss": vl, "val_accuracy": va, "test_loss": tl, "test_accuracy": ta}

  return (problem, jax.jit(init),
          jax.jit(jax.vmap(advance, (0, 0, None, None, None)), donate_argnums=1),
          jax.jit(jax.vmap(score, (0, None, None, None))))


def best(rows: list[dict]) -> int:
  """Index of the selected run: highest validation accuracy, ties to the lower val loss."""
  return max(range(len(rows)), key=lambda i: (rows[i]["val_accuracy"], -rows[i]["val_loss"], -i))


def successive_halving(progs, populations: dict[str, list], task: Tasks, xte, yte, key,
                       plan: dict) -> dict[str, dict]:
  """Successive halving of every population at once (their members trained together, one
  vmapped program): per population the selected trial's metrics, its index and the rungs."""
  _, init, advance, score = progs
  names = list(populations)
  hps = [hp for n in names for hp in populations[n]]
  owner = np.array([i for i, n in enumerate(names) for _ in populations[n]])
  trial = np.concatenate([np.arange(len(populations[n])) for n in names])
  s0 = init(key)
  state = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(hps),) + x.shape), s0)
  hp = _stack(hps)
  prev, steps, trace = 0, {n: 0 for n in names}, {n: [] for n in names}
  out = {}
  for r, b in enumerate(plan["budgets"]):
    for start in range(prev, b, plan["chunk"]):
      state = advance(hp, state, task, key, jnp.int32(start))
    for p, n in enumerate(names):
      steps[n] += int((owner == p).sum()) * (b - prev)
    prev = b
    m = jax.device_get(score(state, task, xte, yte))
    rows = [{k: float(v[i]) for k, v in m.items()} for i in range(len(owner))]
    keep = []
    for p, n in enumerate(names):
      mine = [i for i in range(len(owner)) if owner[i] == p]
      ranked = sorted(mine, key=lambda i: (-rows[i]["val_accuracy"], rows[i]["val_loss"], i))
      trace[n].append({"budget": b, "trials": [int(trial[i]) for i in mine],
                       "val_accuracy": [rows[i]["val_accuracy"] for i in mine]})
      if r == len(plan["budgets"]) - 1:
        i = ranked[0]
        out[n] = dict(rows[i], trial=int(trial[i]), rungs=trace[n])
      else:
        keep += ranked[:max(1, len(mine) // plan["eta"])]
    if keep:
      keep = np.sort(np.array(keep))
      state = jax.tree.map(lambda x: x[keep], state)
      hp = jax.tree.map(lambda x: x[keep], hp)
      owner, trial = owner[keep], trial[keep]
  for n in names:
    out[n]["steps"] = steps[n]
  return out


# ---------------------------------------------------------------- one dataset

def transfer_runs(wd_results: dict | None, config, fam, inner, pool, hps, runs: int,
                  seeds: int, recompute: bool) -> tuple[dict, str]:
  """{name: {metric: [per seed]}} of default, zero-shot and random runs, and where from."""
  key = f"{fam.name}/{pool.name}"
  have = (wd_results or {}).get("transfer", {}).get(key, {}).get("runs", {})
  if (not recompute and f"random {runs - 1}" in have
      and len(have["default"]["test_accuracy"]) >= seeds
      and all(f"zero-shot {e}" in have for e in hps)):
    return ({n: {k: v[:seeds] for k, v in r.items()} for n, r in have.items()},
            "workdir results.json")
  out = transfer.evaluate_dataset(fam, inner, pool, hps, runs,
                                  tuple(config.transfer.random_log_lr), seeds, int(config.seed))
  return out["runs"], "recomputed"


def compare_dataset(config, fam, inner, pool, rates: dict, args, wd_results) -> dict:
  """Per seed, every method's selected run on `pool` (see the module docstring)."""
  R, T = args.budget_runs, inner.steps
  plan = sh_plan(T, R, args.eta)
  hps = {e: r.families[fam.name].hparams() for e, r in rates.items()}
  t0 = time.perf_counter()
  runs, source = transfer_runs(wd_results, config, fam, inner, pool, hps, R, args.seeds,
                               args.recompute_transfer)
  t_transfer = time.perf_counter() - t0
  num_outputs = max(fam.max_classes, pool.num_classes)
  shape = pool.x.shape[1:] if fam.kind == "flat" else fam.input_shape
  progs = _sh_programs(fam, inner, num_outputs, tuple(shape), plan["chunk"])
  lr_range = tuple(config.transfer.random_log_lr)
  clamp = tuple(config.meta.log_lr_range)
  seeds, t0 = [], time.perf_counter()
  for s in range(args.seeds):
    seed = int(config.seed) + s
    pick = lambda name: {k: runs[name][k][s] for k in runs[name]}
    row = {"default": pick("default"), "random search 1x": pick("random 0")}
    rnd = [pick(f"random {i}") for i in range(R)]
    row[f"random search {R}x"] = dict(rnd[best(rnd)], trial=best(rnd))
    for e in hps:
      row[f"zero-shot {e}"] = pick(f"zero-shot {e}")
    tr, va, te = split_rows(pool, seed)
    (xtr, ytr), (xva, yva), (xte, yte) = (transfer._task(pool, r, fam) for r in (tr, va, te))
    task = Tasks(xtr, ytr, np.int32(len(ytr)), xva, yva, np.int32(len(yva)),
                 np.int32(pool.num_classes))
    L = len(progs[0].names)
    pops = {"SH cold": cold_candidates(L, inner, plan["n0"], lr_range, seed)}
    for e, hp in hps.items():
      pops[f"SH warm {e}"] = warm_candidates(hp, plan["n0"], clamp, seed)
    row.update(successive_halving(progs, pops, task, xte, yte, jax.random.key(seed), plan))
    seeds.append(row)
  t_sh = time.perf_counter() - t0
  return {"family": fam.name, "rows": int(len(pool.y)), "classes": pool.num_classes,
          "plan": plan, "inner_steps": T, "transfer_source": source, "seeds": seeds,
          "seconds": {"transfer": t_transfer, "sh": t_sh},
          "summary": summarise(seeds, list(hps), R)}


TIE = 1e-6  # float32 means of equal accuracies differ by ~1e-8; a test row is >= 1/3000


def summarise(seeds: list[dict], estimators, R: int) -> dict:
  out = {m: {"test_accuracy": report.mean_ci95([r[m]["test_accuracy"] for r in seeds]),
             "val_accuracy": report.mean_ci95([r[m]["val_accuracy"] for r in seeds])}
         for m in seeds[0]}
  rs = out[f"random search {R}x"]["test_accuracy"][0]
  out["zero-shot reaches random"] = {e: out[f"zero-shot {e}"]["test_accuracy"][0] >= rs - TIE
                                     for e in estimators}
  return out


# ---------------------------------------------------------------- the table

def methods(estimators, R: int) -> list[str]:
  return (["default", "random search 1x", f"random search {R}x", "SH cold"]
          + [f"zero-shot {e}" for e in estimators] + [f"SH warm {e}" for e in estimators])


def _cell(mc) -> str:
  m, ci = (float("nan") if v is None else v for v in mc)  # JSON null: NaN (one seed's CI)
  return f"{m:.3f}" if not math.isfinite(ci) else f"{m:.3f} ± {ci:.3f}"


def markdown(results: dict, estimators, R: int) -> str:
  ms = methods(estimators, R)
  head = (["held-out dataset (family)"] + ms
          + [f"zero-shot {e} ≥ random {R}x" for e in estimators])
  rows = []
  for name, d in results.items():
    s = d["summary"]
    rows.append([f"{name.split('/')[1]} ({d['family']})"]
                + [_cell(s[m]["test_accuracy"]) for m in ms]
                + ["yes" if s["zero-shot reaches random"][e] else "no" for e in estimators])
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  counts = {e: sum(d["summary"]["zero-shot reaches random"][e] for d in results.values())
            for e in estimators}
  lines.append("")
  lines.append("zero-shot reaches random search {}x on: {} of {} datasets".format(
      R, ", ".join(f"{counts[e]} ({e})" for e in estimators), len(results)))
  return "\n".join(lines)


# ---------------------------------------------------------------- main

def merge(paths: list[str], out: str) -> None:
  """One JSON and table from several outputs of this bench (same budget and estimators)."""
  docs = [json.load(open(p)) for p in paths]
  R = {d["args"]["budget_runs"] for d in docs}
  if len(R) != 1:
    raise SystemExit(f"outputs with different --budget_runs {sorted(R)}")
  results = {k: v for d in docs for k, v in d["results"].items()}
  estimators = list(next(iter(results.values()))["summary"]["zero-shot reaches random"])
  R = R.pop()
  for v in results.values():  # summaries again, under this version's rule
    v["summary"] = summarise(v["seeds"], estimators, R)
  table = markdown(results, estimators, R)
  doc = {"merged": paths, "runs": [{k: d[k] for k in ("date", "machine", "load", "args",
                                                       "seconds", "notes")} for d in docs],
         "results": results, "table": table}
  runlog.atomic_write(out, runlog.dumps_strict(doc, indent=1))
  runlog.atomic_write(os.path.splitext(out)[0] + ".md", table + "\n")
  print(table)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdirs", default="", help="comma-separated hp_metalearn workdirs")
  p.add_argument("--merge", default="", help="only join earlier outputs (comma-separated JSON)")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--budget_runs", type=int, default=8, help="R: random search Rx, SH at R runs")
  p.add_argument("--eta", type=int, default=2)
  p.add_argument("--datasets", default="", help="only these held-out datasets (comma list)")
  p.add_argument("--recompute_transfer", action="store_true")
  p.add_argument("--tiny", action="store_true", help="smoke run: 1 seed, R=2")
  p.add_argument("--out", default="/tmp/hp_comparison.json")
  args = p.parse_args()
  if args.tiny:
    args.seeds, args.budget_runs = 1, 2
  if args.merge:
    return merge(args.merge.split(","), args.out)
  only = set(filter(None, args.datasets.split(",")))
  results, notes, estimators, t0 = {}, [], None, time.perf_counter()
  for wd in args.workdirs.split(","):
    config = runlog.read_config(wd)
    spec.check(config)
    inner = spec.inner_spec(config)
    ests = tuple(spec._tuple(config.meta.estimators))
    estimators = estimators or ests
    if ests != estimators:
      raise SystemExit(f"{wd}: estimators {ests} differ from the first workdir's {estimators}")
    rates = {e: learned.load_learned_rates(wd, e) for e in ests}
    path = os.path.join(wd, "results.json")
    wd_results = json.load(open(path)) if os.path.isfile(path) else None
    for name in spec._tuple(config.run_families):
      fam = spec.family_spec(config, name)
      names = [n for n in fam.test_datasets if not only or n in only]
      for pool in hp_metalearn.load_pools(config, fam, names, notes):
        t1 = time.perf_counter()
        results[f"{name}/{pool.name}"] = d = compare_dataset(config, fam, inner, pool, rates,
                                                             args, wd_results)
        d["workdir"] = wd
        print(f"{name}/{pool.name}: {time.perf_counter() - t1:.0f} s "
              f"(transfer {d['transfer_source']}; SH {d['plan']['n0']} trials, "
              f"{d['plan']['steps']} steps = {d['plan']['runs']:.2f} runs)", flush=True)
        for m in methods(estimators, args.budget_runs):
          print(f"  {m:20s} {_cell(d['summary'][m]['test_accuracy'])}", flush=True)
  for n in notes:
    print(f"note: {n}")
  table = markdown(results, estimators, args.budget_runs)
  doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
         "load": os.getloadavg(), "args": vars(args), "seconds": time.perf_counter() - t0,
         "notes": notes, "results": results, "table": table}
  runlog.atomic_write(args.out, runlog.dumps_strict(doc, indent=1))
  runlog.atomic_write(os.path.splitext(args.out)[0] + ".md", table + "\n")
  print(table)
  print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
  main()

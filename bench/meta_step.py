"""Meta-step speed, memory and compile time of metajax vs a PyTorch torch.func peer (issue 5).

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/meta_step.py --json bench_meta_step.json
  .venv/bin/python bench/meta_step.py --quick            # smoke run: tiny meta-batches, 1 step
  .venv/bin/python bench/meta_step.py --only sinusoid,protonet --repeats 3

Rows (each JAX row beside its PyTorch peer, interleaved in one run):
  conv4 MAML 5-way 1-shot 15 queries, meta-batch 32, 1 and 5 inner steps, 2nd and 1st order
      -> tasks/s;
  ProtoNet conv4 5-way 5-shot 15 queries, one episode per step -> episodes/s;
  sinusoid MAML, meta-batch 25, K=10 -> meta-iterations/s;
  memory: conv4 MAML 2nd order at 1/5/10 inner steps, JAX with and without remat
      (meta-batch --memory-meta-batch, default 8).
Results and what was tried: BUILD_NOTES.md.

Every (row, framework, repeat) runs in a fresh subprocess, so memory numbers are
clean: peak RSS (VmHWM) during the steps minus the RSS just before them (after
imports, data setup and, for JAX, compilation; the peak is reset with
/proc/self/clear_refs so compiler memory is not counted). For JAX we also report
XLA's compiled memory analysis (temp + output bytes). Compile time = jit lower +
compile of the train step. Rates: medians over repeats of (steps / wall time)
after one warm-up step. The library's own learners (metajax.meta.maml.MAML,
metajax.meta.protonet.ProtoNet) are measured; the model is conv4 with
`conv_impl`/`pool_impl` from the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------- memory probes

def _rss_kb(field: str = "VmRSS") -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


def _reset_peak() -> None:
  """Resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


# ----------------------------------------------------------------- workers (one row, one framework)

def _jax_worker(job: dict) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from metajax import models
  from metajax.data.episodes import Tasks
  from metajax.meta.maml import MAML, MAMLConfig
  from metajax.meta.protonet import ProtoNet

  kind, rng = job["kind"], np.random.default_rng(0)
  conv = dict(filters=64, conv_impl=job.get("conv_impl", "im2col"), pool_impl=job.get("pool_impl", "reshape"))
  if kind == "sinusoid":
    b, k = job["meta_batch"], 10
    x = rng.uniform(-5, 5, (b, 2 * k, 1)).astype(np.float32)
    y = (rng.uniform(0.1, 5, (b, 1, 1)) * np.sin(x - rng.uniform(0, np.pi, (b, 1, 1)))).astype(np.float32)
    tasks = Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
    learner = MAML(models.make("mlp", num_outputs=1, hidden=(40, 40)), optax.adam(1e-3),
                   MAMLConfig(inner_steps=job["inner_steps"], inner_lr=0.01, task="regression",
                              task_batching=job.get("task_batching", "vmap")))
  else:
    ways, shots, queries, b = 5, job["shots"], 15, job["meta_batch"]
    img = lambda n: rng.random((b, n, 28, 28, 1), dtype=np.float32)
    lab = lambda n: np.tile(np.repeat(np.arange(ways, dtype=np.int32), n)[None], (b, 1))
    tasks = Tasks(img(ways * shots), lab(shots), img(ways * queries), lab(queries))
    if kind == "protonet":
      learner = ProtoNet(models.make("conv4", num_outputs=None, **conv), optax.adam(1e-3))
    else:
      learner = MAML(models.make("conv4", num_outputs=ways, **conv), optax.adam(1e-3),
                     MAMLConfig(inner_steps=job["inner_steps"], inner_lr=0.4,
                                first_order=job["first_order"], remat=job.get("remat", False),
                                unroll=job.get("unroll", False),
                                task_batching=job.get("task_batching", "map")), num_ways=ways)
  tasks = jax.tree.map(jnp.asarray, tasks)
  key = jax.random.key(0)
  state = learner.init(key, tasks)
  jax.block_until_ready(state)
  rss_setup = _rss_kb()

  t0 = time.perf_counter()
  compiled = jax.jit(learner.train_step, donate_argnums=0).lower(state, tasks, key).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  xla_mb = (ma.temp_size_in_bytes + ma.output_size_in_bytes) / 2**20 if ma is not None else None

  def step():
    nonlocal state
    state, metrics = compiled(state, tasks, key)
    return metrics["loss"]

  return _run(step, job, compile_s, rss_setup, lambda x: jax.block_until_ready(x), xla_mb=xla_mb)


def _torch_worker(job: dict) -> dict:
  import torch
  sys.path.insert(0, HERE)
  import torch_peer as tp
  torch.set_num_threads(job.get("threads", os.cpu_count()))
  kind = job["kind"]
  if kind == "sinusoid":
    step_fn, batch = tp.make_sinusoid_maml(meta_batch=job["meta_batch"], inner_steps=job["inner_steps"])
  elif kind == "protonet":
    step_fn, batch = tp.make_protonet(shots=job["shots"])
  else:
    step_fn, batch = tp.make_conv4_maml(shots=job["shots"], meta_batch=job["meta_batch"],
                                        inner_steps=job["inner_steps"], first_order=job["first_order"],
                                        task_batching=job.get("torch_batching", "vmap"))
  rss_setup = _rss_kb()
  return _run(lambda: step_fn(batch), job, 0.0, rss_setup, lambda x: x)


def _run(step, job, compile_s, rss_setup, block, **extra) -> dict:
  """Warm-up step, then `job['steps']` timed steps; peak RSS over all of them."""
  _reset_peak()
  rss0 = _rss_kb()
  t0 = time.perf_counter()
  block(step())
  first_s = time.perf_counter() - t0
  t0, loss = time.perf_counter(), None
  for _ in range(job["steps"]):
    loss = step()
  block(loss)
  wall = time.perf_counter() - t0
  peak = _rss_kb("VmHWM")
  per_step = job["meta_batch"] if job["kind"] == "maml" else 1
  return dict(rate=per_step * job["steps"] / wall if job["steps"] else None, compile_s=compile_s,
              first_step_s=first_s, peak_mb=(peak - rss0) / 1024, setup_mb=rss_setup / 1024,
              load=os.getloadavg()[0], **extra)


# ----------------------------------------------------------------- driver

def rows(quick: bool, memory_meta_batch: int) -> list[dict]:
  """The benchmark rows; `group` names them for --only."""
  mb = 4 if quick else 32
  n_fast, n_slow = 1, 1
  out = []
  for steps in (1, 5):
    for fo in (False, True):
      out.append(dict(group="maml", name=f"conv4 MAML {'1st' if fo else '2nd'} order, {steps} step(s)",
                      kind="maml", shots=1, meta_batch=mb, inner_steps=steps, first_order=fo,
                      steps=n_fast if steps == 1 else n_slow, unit="tasks/s"))
  out.append(dict(group="protonet", name="ProtoNet conv4 5-way 5-shot", kind="protonet", shots=5,
                  meta_batch=1, steps=5 if quick else 20, unit="episodes/s"))
  out.append(dict(group="sinusoid", name="sinusoid MAML, meta-batch 25, K=10", kind="sinusoid",
                  meta_batch=25, inner_steps=1, steps=20 if quick else 300, unit="meta-it/s"))
  mem_mb = 4 if quick else memory_meta_batch
  for steps in (1, 5, 10):
    for remat in (False, True):
      out.append(dict(group="memory", name=f"memory: conv4 MAML 2nd order, {steps} step(s)"
                      + (", remat" if remat else "") + f", meta-batch {mem_mb}",
                      kind="maml", shots=1, meta_batch=mem_mb,
                      inner_steps=steps, first_order=False, remat=remat, steps=0,
                      unit="tasks/s", torch=not remat))
  return out


def _spawn(job: dict, framework: str, timeout: float, env: dict) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, json.dumps(job)]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
  except subprocess.TimeoutExpired:
    return {"error": f"timeout after {timeout:.0f}s"}
  for line in reversed(p.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def _median(results, key):
  vals = [r[key] for r in results if r.get(key) is not None]
  return statistics.median(vals) if vals else None


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="meta-batch 4, few steps: a smoke run")
  ap.add_argument("--repeats", type=int, default=1)
  ap.add_argument("--only", default="", help="comma-separated groups: maml,protonet,sinusoid,memory")
  ap.add_argument("--json", default="", help="write the results here")
  ap.add_argument("--conv-impl", default="im2col")
  ap.add_argument("--pool-impl", default="reshape")
  ap.add_argument("--task-batching", default="map", help="JAX MAML over conv4: map or vmap")
  ap.add_argument("--torch-batching", default="vmap", help="PyTorch MAML: vmap or loop")
  ap.add_argument("--memory-meta-batch", type=int, default=8,
                  help="meta-batch of the memory rows (the rate rows use 32)")
  ap.add_argument("--match", default="", help="only rows whose name contains this")
  ap.add_argument("--torch-omp-wait", default="PASSIVE",
                  help="OMP_WAIT_POLICY for the PyTorch peer: on a shared machine the default "
                       "(active spinning) makes 2-thread PyTorch up to 50x slower; '' keeps the default")
  ap.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
  ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    framework, job = args.worker[0], json.loads(args.worker[1])
    print(json.dumps((_jax_worker if framework == "jax" else _torch_worker)(job)), flush=True)
    return

  groups = set(filter(None, args.only.split(",")))
  todo = [r for r in rows(args.quick, args.memory_meta_batch) if (not groups or r["group"] in groups) and args.match in r["name"]]
  torch_env = {"OMP_WAIT_POLICY": args.torch_omp_wait} if args.torch_omp_wait else {}
  for r in todo:
    r.update(conv_impl=args.conv_impl, pool_impl=args.pool_impl, task_batching=args.task_batching,
             torch_batching=args.torch_batching)
    if r["kind"] == "sinusoid":
      r["task_batching"] = "vmap"
  results = {r["name"]: {"job": r, "jax": [], "torch": []} for r in todo}
  for rep in range(args.repeats):
    for r in todo:  # JAX and PyTorch interleaved, row by row
      for fw in ("jax", "torch"):
        if fw == "torch" and not r.get("torch", True):
          continue
        res = _spawn(r, fw, args.timeout, torch_env if fw == "torch" else {})
        results[r["name"]][fw].append(res)
        print(f"[{rep}] {r['name']:<45} {fw:<5} {json.dumps(res)}", file=sys.stderr, flush=True)

  print(f"\n{'row':<45} {'unit':<10} {'jax':>8} {'torch':>8} {'ratio':>6} "
        f"{'jax MB':>7} {'torch MB':>8} {'mem x':>5} {'XLA MB':>7} {'compile s':>9}")
  summary = {}
  for name, res in results.items():
    j, t = res["jax"], res["torch"]
    s = dict(unit=res["job"]["unit"], jax_rate=_median(j, "rate"), torch_rate=_median(t, "rate"),
             jax_peak_mb=_median(j, "peak_mb"), torch_peak_mb=_median(t, "peak_mb"),
             xla_mb=_median(j, "xla_mb"), compile_s=_median(j, "compile_s"),
             errors=[r["error"] for r in j + t if "error" in r])
    s["ratio"] = s["jax_rate"] / s["torch_rate"] if s["jax_rate"] and s["torch_rate"] else None
    s["mem_ratio"] = (s["jax_peak_mb"] / s["torch_peak_mb"]
                      if s["jax_peak_mb"] is not None and s["torch_peak_mb"] else None)
    summary[name] = s
    f = lambda v, w, p=1: f"{v:>{w}.{p}f}" if isinstance(v, float) else f"{'-':>{w}}"
    print(f"{name:<45} {s['unit']:<10} {f(s['jax_rate'], 8, 2)} {f(s['torch_rate'], 8, 2)} "
          f"{f(s['ratio'], 6, 2)} {f(s['jax_peak_mb'], 7, 0)} {f(s['torch_peak_mb'], 8, 0)} "
          f"{f(s['mem_ratio'], 5, 2)} {f(s['xla_mb'], 7, 0)} {f(s['compile_s'], 9, 1)}"
          + (f"  ERRORS: {s['errors']}" if s["errors"] else ""))
  out = dict(argv=sys.argv[1:], date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             cpus=os.cpu_count(), summary=summary, raw=results)
  print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "errors"} for k, v in summary.items()}))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()

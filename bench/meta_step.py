"""Meta-step speed, memory and compile time of metajax against every form of its PyTorch peers.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/meta_step.py --json bench_meta_step.json
  .venv/bin/python bench/meta_step.py --quick    # smoke run: one row per kind, meta-batch 2
  .venv/bin/python bench/meta_step.py --only sinusoid,protonet --forms loop,eager

Rows:
  conv4 MAML 5-way 1-shot 15 queries, meta-batch 32, 1 and 5 inner steps, 2nd and 1st order
      -> tasks/s;
  ProtoNet conv4 5-way 5-shot 15 queries, one episode per step -> episodes/s;
  sinusoid MAML, meta-batch 25, K=10 -> meta-iterations/s;
  memory: conv4 MAML 2nd order at 1/5/10 inner steps, metajax with and without remat
      (meta-batch --memory-meta-batch, default 8; their rates come from one timed step and
      only pick the fastest form).

metajax runs as its configs set it: the learner and model sub-configs of
configs/maml_glyphs.py (conv4 MAML rows and memory rows), configs/protonet_glyphs.py and
configs/maml_sinusoid.py (task batching, unroll, conv/pool implementation, batch norm), built
through `metajax.meta.ALGORITHMS` as the trainer builds them, Adam 1e-3, one `jax.jit` train
step with the state donated; only the row's shape (shots, queries, inner steps, order, meta-batch,
remat) is set by the bench. --conv-impl, --pool-impl, --task-batching, --unroll override the
configs for every row.

The peers, every form each has (bench/torch_peer.py, bench/l2l_peer.py):
  MAML (conv4, sinusoid): torch.func `loop` over tasks, torch.func `vmap` over tasks,
      learn2learn's `MAML` (`l2l`, from the venv .venv-l2l; its absence is reported, not skipped);
  ProtoNet: `eager`, `channels_last`, `compile` (torch.compile of the loss).
PyTorch keeps its default threading and OMP settings; --torch-omp-wait and --torch-threads
are opt-in overrides for both peers.

Measurement: every (row, form, repeat) runs in a fresh subprocess; each repeat goes through
every row, a row's forms back to back, so a change in machine load spreads over all forms. One
subprocess builds its data and learner, compiles (metajax: jit
lower + compile, reported as compile time), runs one warm-up step (torch.compile compiles here;
its compile time is the warm-up minus one step), then timed steps until both `min_steps`
steps and `min_time` seconds have passed (3 and 3 s by default), blocking on the result.
Rate = examples / wall time of the timed block. Memory = peak RSS (VmHWM, reset with
/proc/self/clear_refs after the warm-up so compilers are not counted) during the timed steps
minus the RSS just before the warm-up; metajax also reports XLA's compiled memory analysis
(temp + output). A row reports the median over repeats of each number, and metajax's rate
and memory as ratios against the peer form with the highest median rate in that row; every
form's rate and memory is listed below the summary. PyTorch's default OpenMP threads
spin-wait, so its rates collapse when other processes share the cores: the run prints a
warning when the load average is above 0.5 at its start; measure on an idle machine.
--quick runs one row of each kind (and the remat path) at meta-batch 2, timed for 0.2 s, once.
Results and their dates: BUILD_NOTES.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = {"maml": "maml_glyphs", "protonet": "protonet_glyphs", "sinusoid": "maml_sinusoid"}
PEER_FORMS = {  # kind -> (framework, form) of every peer form
    "maml": (("torch", "loop"), ("torch", "vmap"), ("l2l", "maml")),
    "sinusoid": (("torch", "loop"), ("torch", "vmap"), ("l2l", "maml")),
    "protonet": (("torch", "eager"), ("torch", "channels_last"), ("torch", "compile")),
}
FORM_NAMES = {"torch:loop": "torch loop", "torch:vmap": "torch vmap", "l2l:maml": "learn2learn",
              "torch:eager": "torch eager", "torch:channels_last": "torch chlast",
              "torch:compile": "torch compile"}


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


# ----------------------------------------------------------------- workers (one row, one form)

def _metajax_worker(job: dict) -> dict:
  """One row's train step as the row's config builds it."""
  sys.path.insert(0, ROOT)
  import importlib

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from metajax import models
  from metajax.data.episodes import Tasks
  from metajax.meta import ALGORITHMS

  kind, rng = job["kind"], np.random.default_rng(0)
  config = importlib.import_module(f"configs.{CONFIGS[kind]}").get_config()
  model_cfg = dict(config.model)
  model_cfg.update({k: job[k] for k in ("conv_impl", "pool_impl") if job.get(k) and k in model_cfg})
  learner_cfg = dict(config.learner)
  if kind == "sinusoid":
    b, k = job["meta_batch"], job["shots"]
    x = rng.uniform(-5, 5, (b, 2 * k, 1)).astype(np.float32)
    amp, phase = rng.uniform(0.1, 5, (b, 1, 1)), rng.uniform(0, np.pi, (b, 1, 1))
    y = (amp * np.sin(x - phase)).astype(np.float32)
    tasks, ways, task = Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:]), 1, "regression"
  else:
    ways, shots, queries, b = 5, job["shots"], job["queries"], job["meta_batch"]
    img = lambda n: rng.random((b, n, 28, 28, 1), dtype=np.float32)
    lab = lambda n: np.tile(np.repeat(np.arange(ways, dtype=np.int32), n)[None], (b, 1))
    tasks = Tasks(img(ways * shots), lab(shots), img(ways * queries), lab(queries))
    task = "classification"
  if kind != "protonet":
    first_order = job.get("first_order", False)
    learner_cfg.update(name="fomaml" if first_order else "maml", first_order=first_order,
                       inner_steps=job["inner_steps"], remat=job.get("remat", False))
    if job.get("task_batching"):
      learner_cfg["task_batching"] = job["task_batching"]
    if job.get("unroll") is not None:
      learner_cfg["unroll"] = job["unroll"]
  learner = ALGORITHMS.get(learner_cfg["name"])(
      learner_cfg, lambda n: models.from_config(model_cfg, num_outputs=n), optax.adam(1e-3),
      ways, task)
  tasks = jax.tree.map(jnp.asarray, tasks)
  key = jax.random.key(0)
  state = learner.init(key, tasks)
  jax.block_until_ready(state)

  t0 = time.perf_counter()
  compiled = jax.jit(learner.train_step, donate_argnums=0).lower(state, tasks, key).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  xla_mb = (ma.temp_size_in_bytes + ma.output_size_in_bytes) / 2**20 if ma is not None else None

  def step():
    nonlocal state
    state, metrics = compiled(state, tasks, key)
    return metrics["loss"]

  settings = {"model": model_cfg,
              "learner": {k: v for k, v in learner_cfg.items() if v is not None}}
  return _timed(step, job, jax.block_until_ready, compile_s=compile_s, xla_mb=xla_mb,
                jax=jax.__version__, backend=jax.default_backend(), settings=settings)


def _torch_env(job: dict) -> None:
  if job.get("omp_wait"):
    os.environ["OMP_WAIT_POLICY"] = job["omp_wait"]


def _torch_worker(job: dict) -> dict:
  _torch_env(job)
  cache = None
  if job["form"] == "compile":  # a cold inductor cache, so every repeat pays the whole compile
    cache = tempfile.mkdtemp(prefix="metajax_bench_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
  import torch
  sys.path.insert(0, HERE)
  import torch_peer as tp
  if job.get("threads"):
    torch.set_num_threads(job["threads"])
  try:
    step, batch = tp.make(job["kind"], job["form"], **_peer_shape(job))
    out = _timed(lambda: step(batch), job, lambda x: x, torch=torch.__version__,
                 threads=torch.get_num_threads(), omp_wait=os.environ.get("OMP_WAIT_POLICY", ""))
  finally:
    if cache:
      shutil.rmtree(cache, ignore_errors=True)
  if job["form"] == "compile":
    out["compile_s"] = out["first_step_s"] - out["step_s"]
  return out


def _l2l_worker(job: dict) -> dict:
  _torch_env(job)
  import torch
  sys.path.insert(0, HERE)
  import l2l_peer
  if job.get("threads"):
    torch.set_num_threads(job["threads"])
  _, version, how = l2l_peer.load_maml()
  step, batch = l2l_peer.make(job["kind"], **_peer_shape(job))
  return _timed(lambda: step(batch), job, lambda x: x, torch=torch.__version__, learn2learn=version,
                imported=how, threads=torch.get_num_threads(),
                omp_wait=os.environ.get("OMP_WAIT_POLICY", ""))


def _peer_shape(job: dict) -> dict:
  if job["kind"] == "protonet":
    return dict(shots=job["shots"], queries=job["queries"])
  if job["kind"] == "sinusoid":
    return dict(meta_batch=job["meta_batch"], inner_steps=job["inner_steps"])
  return dict(shots=job["shots"], queries=job["queries"], meta_batch=job["meta_batch"],
              inner_steps=job["inner_steps"], first_order=job.get("first_order", False))


def _timed(step, job, block, **extra) -> dict:
  """A warm-up step, then timed steps until `min_steps` steps and `min_time` seconds have passed;
  the peak RSS of the timed steps over the RSS before the warm-up."""
  rss0 = _rss_kb()
  t0 = time.perf_counter()
  block(step())
  first_s = time.perf_counter() - t0
  _reset_peak()
  n, chunk, t0 = 0, 1, time.perf_counter()
  while True:
    for _ in range(chunk):
      out = step()
    block(out)
    n += chunk
    wall = time.perf_counter() - t0
    if n >= job["min_steps"] and wall >= job["min_time"]:
      break
    chunk = max(1, job["min_steps"] - n, math.ceil((job["min_time"] - wall) * n / wall))
  per_step = job["meta_batch"] if job["kind"] == "maml" else 1
  return dict(rate=per_step * n / wall, steps=n, step_s=wall / n, timed_s=wall,
              first_step_s=first_s, peak_mb=(_rss_kb("VmHWM") - rss0) / 1024, setup_mb=rss0 / 1024,
              load=os.getloadavg()[0], **extra)


# ----------------------------------------------------------------- driver

def rows(quick: bool, memory_meta_batch: int) -> list[dict]:
  """The benchmark rows; `group` names them for --only. --quick keeps one row of each kind
  (and the remat path) at meta-batch 2, timed for 0.2 s."""
  mb = 2 if quick else 32
  timing = dict(min_steps=1, min_time=0.2) if quick else dict(min_steps=3, min_time=3.0)
  maml = [(1, False)] if quick else [(s, fo) for s in (1, 5) for fo in (False, True)]
  memory = [(1, True)] if quick else [(s, r) for s in (1, 5, 10) for r in (False, True)]
  out = []
  for steps, fo in maml:
    name = f"conv4 MAML {'1st' if fo else '2nd'} order, {steps} step(s), mb {mb}"
    out.append(dict(group="maml", name=name, kind="maml", shots=1, queries=15, meta_batch=mb,
                    inner_steps=steps, first_order=fo, unit="tasks/s", **timing))
  out.append(dict(group="protonet", name="ProtoNet conv4 5-way 5-shot", kind="protonet", shots=5,
                  queries=15, meta_batch=1, unit="episodes/s", **timing))
  out.append(dict(group="sinusoid", name="sinusoid MAML, meta-batch 25, K=10", kind="sinusoid",
                  shots=10, meta_batch=25, inner_steps=1, unit="meta-it/s", **timing))
  mem_mb = 2 if quick else memory_meta_batch
  for steps, remat in memory:
    out.append(dict(group="memory", name=f"memory: conv4 MAML 2nd, {steps} step(s)"
                    + (", remat" if remat else "") + f", mb {mem_mb}",
                    kind="maml", shots=1, queries=15, meta_batch=mem_mb, inner_steps=steps,
                    first_order=False, remat=remat, unit="tasks/s", peers=not remat,
                    min_steps=1, min_time=0.0))
  return out


def _spawn(job: dict, framework: str, timeout: float, python: str) -> dict:
  cmd = [python, os.path.abspath(__file__), "--worker", framework, json.dumps(job)]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timeout after {timeout:.0f}s"}
  for line in reversed(p.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def l2l_status(python: str) -> tuple[bool, str]:
  """(usable, one line) for learn2learn in the interpreter `python`."""
  if not python:
    return False, "learn2learn: not measured (--l2l-python '')"
  if not os.path.exists(python):
    return False, (f"learn2learn: not installable here (no interpreter at {python}; the recipe "
                   "for its venv is in bench/l2l_peer.py)")
  code = (f"import sys; sys.path.insert(0, {HERE!r}); import l2l_peer; "
          "print(repr(l2l_peer.load_maml()[1:]))")
  try:
    p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
  except subprocess.TimeoutExpired:
    return False, "learn2learn: not installable here (importing it took over 300 s)"
  if p.returncode:
    reason = (p.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return False, f"learn2learn: not installable here ({reason})"
  version, how = ast.literal_eval(p.stdout.strip().splitlines()[-1])
  return True, f"learn2learn {version} from {python}: {how}"


def _median(results, key):
  vals = [r[key] for r in results if r.get(key) is not None]
  return statistics.median(vals) if vals else None


def _stats(results: list[dict]) -> dict:
  return dict(rate=_median(results, "rate"), peak_mb=_median(results, "peak_mb"),
              compile_s=_median(results, "compile_s"), xla_mb=_median(results, "xla_mb"),
              n=sum("error" not in r for r in results),
              errors=[r["error"] for r in results if "error" in r])


def summarise(results: dict) -> dict:
  """Per row: metajax's medians, every peer form's medians, and metajax against the fastest form."""
  summary = {}
  for name, res in results.items():
    mj = _stats(res["metajax"])
    forms = {f: _stats(rs) for f, rs in res["peers"].items()}
    timed = {f: s for f, s in forms.items() if s["rate"]}
    fastest = max(timed, key=lambda f: timed[f]["rate"]) if timed else None
    fs = forms.get(fastest, {})
    summary[name] = dict(
        unit=res["job"]["unit"], metajax=mj, forms=forms, fastest=fastest,
        ratio=mj["rate"] / fs["rate"] if mj["rate"] and fs.get("rate") else None,
        mem_ratio=(mj["peak_mb"] / fs["peak_mb"]
                   if mj["peak_mb"] is not None and fs.get("peak_mb") else None))
  return summary


def _f(v, w, p=1):
  number = isinstance(v, (int, float)) and not isinstance(v, bool)
  return f"{v:>{w}.{p}f}" if number else f"{'-':>{w}}"


def print_tables(summary: dict, l2l_line: str) -> None:
  print(f"\nmetajax against the fastest peer form of each row (medians over repeats)\n"
        f"{'row':<48} {'unit':<10} {'metajax':>8} {'fastest form':<14} {'rate':>8} {'ratio':>6} "
        f"{'mj MB':>6} {'peer MB':>7} {'mem x':>5} {'XLA MB':>6} {'compile s':>9}")
  for name, s in summary.items():
    mj, fs = s["metajax"], s["forms"].get(s["fastest"], {})
    fastest = FORM_NAMES.get(s["fastest"], "-")
    print(f"{name:<48} {s['unit']:<10} {_f(mj['rate'], 8, 2)} {fastest:<14} "
          f"{_f(fs.get('rate'), 8, 2)} {_f(s['ratio'], 6, 2)} {_f(mj['peak_mb'], 6, 0)} "
          f"{_f(fs.get('peak_mb'), 7, 0)} {_f(s['mem_ratio'], 5, 2)} {_f(mj['xla_mb'], 6, 0)} "
          f"{_f(mj['compile_s'], 9, 1)}")
  print(f"\nevery form: rate / peak MB (n = repeats that ran)\n"
        f"{'row':<48} {'form':<14} {'rate':>9} {'MB':>6} {'n':>2} {'compile s':>9}")
  for name, s in summary.items():
    for form, st in [("metajax", s["metajax"]), *s["forms"].items()]:
      print(f"{name:<48} {FORM_NAMES.get(form, form):<14} {_f(st['rate'], 9, 2)} "
            f"{_f(st['peak_mb'], 6, 0)} {st['n']:>2} {_f(st['compile_s'], 9, 1)}"
            + (f"  ERRORS: {st['errors']}" if st["errors"] else ""))
  print(f"\n{l2l_line}")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true",
                  help="smoke run: one row of each kind, meta-batch 2, 0.2 s timings, 1 repeat")
  ap.add_argument("--repeats", type=int, default=None,
                  help="subprocesses per form and row (3; --quick 1)")
  ap.add_argument("--only", default="",
                  help="comma-separated groups: maml,protonet,sinusoid,memory")
  ap.add_argument("--match", default="", help="only rows whose name contains this")
  ap.add_argument("--forms", default="", help="comma-separated peer forms to run (default all): "
                  "loop,vmap,maml (learn2learn),eager,channels_last,compile; "
                  "'none' for metajax only")
  ap.add_argument("--min-time", type=float, default=None, help="seconds per timed block (3)")
  ap.add_argument("--min-steps", type=int, default=None, help="steps per timed block (3)")
  ap.add_argument("--json", default="", help="write the results here")
  ap.add_argument("--conv-impl", default="", help="metajax override for every row ('' = configs)")
  ap.add_argument("--pool-impl", default="", help="metajax override for every row ('' = configs)")
  ap.add_argument("--task-batching", default="",
                  help="metajax MAML override: vmap or map ('' = configs)")
  ap.add_argument("--unroll", default="", choices=("", "true", "false"),
                  help="metajax MAML override ('' = configs)")
  ap.add_argument("--memory-meta-batch", type=int, default=8,
                  help="meta-batch of the memory rows (the rate rows use 32)")
  ap.add_argument("--torch-omp-wait", default="",
                  help="opt-in OMP_WAIT_POLICY for the PyTorch peers ('' keeps PyTorch's default)")
  ap.add_argument("--torch-threads", type=int, default=0,
                  help="opt-in torch.set_num_threads (0: PyTorch's default)")
  ap.add_argument("--l2l-python", default=os.path.join(ROOT, ".venv-l2l", "bin", "python"),
                  help="interpreter with learn2learn installed ('' to leave it out)")
  ap.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
  ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    framework, job = args.worker[0], json.loads(args.worker[1])
    worker = {"metajax": _metajax_worker, "torch": _torch_worker, "l2l": _l2l_worker}[framework]
    print(json.dumps(worker(job)), flush=True)
    return

  repeats = args.repeats or (1 if args.quick else 3)
  groups = set(filter(None, args.only.split(",")))
  wanted = set(filter(None, args.forms.split(",")))
  todo = [r for r in rows(args.quick, args.memory_meta_batch)
          if (not groups or r["group"] in groups) and args.match in r["name"]]
  l2l_ok, l2l_line = l2l_status(args.l2l_python)
  print(l2l_line, file=sys.stderr, flush=True)
  load0 = os.getloadavg()[0]
  load_line = (f"WARNING: load average {load0:.1f} on {os.cpu_count()} CPUs before the run. "
               "PyTorch's default OpenMP threads spin-wait and slow down many-fold when other "
               "processes share the cores; these peer rates are not its idle-machine rates. Run "
               "on an idle machine (or opt in to --torch-omp-wait PASSIVE / --torch-threads 1 "
               "and say so)."
               if load0 > 0.5 else f"load average {load0:.1f} before the run")
  print(load_line, file=sys.stderr, flush=True)
  overrides = dict(conv_impl=args.conv_impl, pool_impl=args.pool_impl,
                   task_batching=args.task_batching,
                   unroll={"": None, "true": True, "false": False}[args.unroll],
                   omp_wait=args.torch_omp_wait, threads=args.torch_threads)
  results = {}
  for r in todo:
    r.update(overrides)
    if args.min_time is not None and r["group"] != "memory":
      r["min_time"] = args.min_time
    if args.min_steps is not None and r["group"] != "memory":
      r["min_steps"] = args.min_steps
    forms = [(fw, f) for fw, f in PEER_FORMS[r["kind"]] if r.get("peers", True)
             and (not wanted or f in wanted)]
    results[r["name"]] = {"job": r, "metajax": [], "forms": forms,
                          "peers": {f"{fw}:{f}": [] for fw, f in forms}}
  t_start = time.time()
  for rep in range(repeats):
    for name, res in results.items():  # every form of a row back to back, rows in turn
      for fw, form in [("metajax", None), *res["forms"]]:
        if fw == "l2l" and not l2l_ok:
          out = {"error": l2l_line}
        else:
          python = args.l2l_python if fw == "l2l" else sys.executable
          out = _spawn({**res["job"], "form": form}, fw, args.timeout, python)
        (res["metajax"] if fw == "metajax" else res["peers"][f"{fw}:{form}"]).append(out)
        label = "metajax" if fw == "metajax" else FORM_NAMES[f"{fw}:{form}"]
        print(f"[{rep}] {name:<48} {label:<14} {json.dumps(out)}", file=sys.stderr, flush=True)

  summary = summarise(results)
  print_tables(summary, l2l_line)
  print(load_line)
  print(f"wall time {time.time() - t_start:.0f} s, {repeats} repeat(s), {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f} at the end")
  if args.json:
    out = dict(argv=sys.argv[1:], date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               cpus=os.cpu_count(), learn2learn=l2l_line, load_before=load0, summary=summary,
               raw={k: {kk: vv for kk, vv in v.items() if kk != "forms"}
                    for k, v in results.items()})
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()

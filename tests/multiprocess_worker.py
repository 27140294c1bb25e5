"""One process of a multi-process test (tests/test_multiprocess.py starts 1, 2 or 4 of these).

  python tests/multiprocess_worker.py OUT TASK [TASK ...] [--coordinator HOST:PORT
      --num_processes N --process_id I]

The number of devices per process comes from XLA_FLAGS, set by the test. Tasks, each leaving
OUT/<name>.json (+ .npz of arrays) written by process 0 only:
  protonet:WORKDIR   the few-shot driver (`fewshot.run`) on tiny_images, then the trained
                     parameters read back with `metajax.load_trained` (same topology)
  restore:WORKDIR    `load_trained` of a run some other topology wrote, and its evaluation
  maml               3 MAML train steps on sinusoid tasks, each process building only its
                     rows of the meta-batch (`parallel.host_local_batch`)
  automl             an 8-member AutoML population trained 2 epochs (`train_population`)
  bad_batch          the few-shot config check with a meta-batch of 3: its ConfigError
  kill_after:STEP    (before protonet) process 1 SIGKILLs itself right after it has called
                     `checkpoint.save` for STEP, the save possibly unfinished
"""

import argparse
import faulthandler
import json
import os
import signal
import sys
import time
import traceback

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conftest  # noqa: E402  (registers tiny_images)

from metajax import distributed  # noqa: E402


def protonet_config(global_devices: int):
  """The tiny ProtoNet config, one task per device, SGD: Adam turns float-order noise in
  gradients near 0 into whole learning-rate steps, which would hide real differences."""
  c = conftest.fewshot_config()
  c.optimizer.name, c.optimizer.learning_rate = "sgd", 0.1
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 6, 2, 2
  c.train.meta_batch = c.eval.batch = global_devices
  c.eval.episodes, c.eval.val_every = 2 * global_devices, 0
  return c


def flat_params(tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def save(out: str, name: str, scalars: dict, arrays: dict | None = None) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(out, f"{name}.json"), "w") as f:
      json.dump(scalars, f)
    if arrays:
      np.savez(os.path.join(out, f"{name}.npz"), **arrays)


def trained(workdir: str, evaluate: bool) -> tuple[dict, dict]:
  """({step, evaluation on tiny_images test}, parameters) of the run in `workdir`."""
  import metajax
  t = metajax.load_trained(workdir)
  n = jax.device_count()
  ev = (t.evaluate("tiny_images", ways=5, shots=1, queries=3, episodes=2 * n, batch=n)
        if evaluate else None)
  return {"step": t.step, "eval": ev}, flat_params(t.state.params)


def late_card(delay_s: float = 3.0) -> None:
  """Process 0 writes model.json `delay_s` late: a process that read it before process 0 had
  written it (the race `saved.load_trained` waits out) fails every time, not once in a few."""
  from metajax import saved
  write = saved.write_card

  def slow_write(*args, **kwargs):
    if jax.process_index() == 0:
      time.sleep(delay_s)
    write(*args, **kwargs)
  saved.write_card = slow_write


def run_protonet(out: str, workdir: str) -> None:
  from metajax import runlog
  from metajax.experiments import fewshot
  if jax.process_count() > 1:
    late_card()
  result = fewshot.run(protonet_config(jax.device_count()), workdir)
  scalars, params = trained(workdir, evaluate=False)
  rows = runlog.read_metrics(workdir) if jax.process_index() == 0 else []
  scalars.update(results=result["results"], metrics=[
      {k: v for k, v in r.items() if k in ("step", "train/loss", "train/accuracy")}
      for r in rows if "train/loss" in r])
  save(out, "protonet", scalars, params)


def run_restore(out: str, workdir: str) -> None:
  scalars, params = trained(workdir, evaluate=True)
  save(out, "restore", scalars, params)


def run_maml(out: str) -> None:
  import optax
  from metajax import parallel
  from metajax.data.episodes import EpisodeSpec, Tasks
  from metajax.data.sinusoid import Sinusoid
  from metajax.meta.maml import MAML, MAMLConfig
  from metajax.models import MLP
  n = jax.device_count()
  spec = EpisodeSpec(1, 5, 5, batch=2 * n)
  mesh = parallel.make_mesh()
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  lrn = MAML(MLP(1, hidden=(8, 8)), optax.adam(1e-2),
             MAMLConfig(inner_steps=2, task="regression", learn_lr="per_layer_step"))
  host_tasks = lambda i: jax.device_get(Sinusoid().sample(jax.random.key(10 + i), spec))
  state = jax.jit(lrn.init, out_shardings=repl)(jax.random.key(0), host_tasks(0))
  step = jax.jit(lrn.train_step, in_shardings=(repl, shard, repl), out_shardings=(repl, repl))
  rows = parallel.process_rows(spec.batch, mesh)
  losses = []
  for i in range(3):
    mine = Tasks(*(x[rows] for x in host_tasks(i)))  # this process's rows only
    tasks = parallel.host_local_batch(mine, mesh, spec.batch)
    state, metrics = step(state, tasks, jax.random.key(i))
    losses.append(float(jax.block_until_ready(metrics["loss"])))
  save(out, "maml", {"loss": losses, "rows": [rows.start, rows.stop]}, flat_params(state.params))


def run_automl(out: str) -> None:
  from metajax import parallel
  from metajax.automl import population
  rng = np.random.default_rng(0)
  X = rng.normal(size=(48, 5)).astype(np.float32)
  Y = (X[:, 0] > 0).astype(np.int32)
  hp = [dict(learning_rate=0.05, optimizer=o, dropout=0.2)
        for o in ("adam", "sgd", "rmsprop", "adam", "sgd", "rmsprop", "adam", "sgd")]
  progs = population.Programs(parallel.make_mesh())
  arch = population.Arch("mlp", 2, 8, 16, (5,), 2, 3)
  Xd, Yd = parallel.replicate(X, progs.mesh), parallel.replicate(Y, progs.mesh)
  states, curves, probs, _ = population.train_population(
      progs, arch, 8, list(range(8)), hp, [None] * 8, 2, Xd, Yd, Xd)
  save(out, "automl", {"curves": np.asarray(curves).tolist()},
       {"probs": np.asarray(probs), **flat_params(states)})


def run_bad_batch(out: str) -> None:
  from metajax.errors import ConfigError
  from metajax.experiments import fewshot
  c = protonet_config(jax.device_count())
  c.train.meta_batch = 3
  try:
    fewshot.check_config(c)
    save(out, "bad_batch", {"error": None})
  except ConfigError as e:
    save(out, "bad_batch", {"error": str(e)})


def kill_after(step: int) -> None:
  """Process 1 SIGKILLs itself right after asking Orbax to save `step`."""
  from metajax import checkpoint
  save_fn = checkpoint.save

  def save_then_die(mngr, done, state, force=False):
    save_fn(mngr, done, state, force)
    if done == step and jax.process_index() == 1:
      os.kill(os.getpid(), signal.SIGKILL)
  checkpoint.save = save_then_die


def main() -> None:
  faulthandler.enable()  # a hang ended by JAX's abort (SIGABRT) leaves every thread's stack
  faulthandler.dump_traceback_later(240)  # and so does one still running after 4 minutes
  p = argparse.ArgumentParser()
  p.add_argument("out")
  p.add_argument("tasks", nargs="+")
  p.add_argument("--coordinator")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  p.add_argument("--timeout", type=float, default=30)
  p.add_argument("--compile_cache", default="")
  a = p.parse_args()
  if a.coordinator:
    distributed.initialize(a.coordinator, a.num_processes, a.process_id, timeout_s=a.timeout,
                           shutdown_timeout_s=60)
  if a.compile_cache:  # launches of one topology share their compiled programs
    from metajax import compile_cache
    compile_cache.use(a.compile_cache)
  from metajax import runlog
  runlog.set_quiet(True)
  for task in a.tasks:
    name, _, arg = task.partition(":")
    if name == "protonet":
      run_protonet(a.out, arg)
    elif name == "restore":
      run_restore(a.out, arg)
    elif name == "maml":
      run_maml(a.out)
    elif name == "automl":
      run_automl(a.out)
    elif name == "bad_batch":
      run_bad_batch(a.out)
    elif name == "kill_after":
      kill_after(int(arg))
    else:
      raise SystemExit(f"unknown task {task}")
  print(f"DONE process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} of {jax.device_count()} devices", flush=True)
  distributed.shutdown()
  print("SHUTDOWN", flush=True)


if __name__ == "__main__":
  try:
    main()
  except BaseException:  # fail now, not after the others' shutdown barrier times out
    traceback.print_exc()
    sys.stdout.flush()
    os._exit(1)

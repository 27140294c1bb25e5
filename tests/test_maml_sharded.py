"""The MAML step on 8 fake CPU devices: same meta-gradient as one device, one compilation.

Runs in a subprocess because the device count is fixed when JAX initialises.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from metajax import parallel
    from metajax.data.sinusoid import Sinusoid
    from metajax.data.episodes import EpisodeSpec
    from metajax.meta.maml import MAML, MAMLConfig
    from metajax.models import MLP
    assert jax.device_count() == 8, jax.devices()

    spec = EpisodeSpec(1, 5, 5, batch=8)
    tasks = Sinusoid().sample(jax.random.key(1), spec)
    for batching in ("vmap", "map"):
      lrn = MAML(MLP(1, hidden=(8, 8)), optax.adam(1e-3),
                 MAMLConfig(inner_steps=2, task="regression", learn_lr="per_layer_step",
                            task_batching=batching))
      state = lrn.init(jax.random.key(0), tasks)
      single = jax.jit(lrn.meta_gradient)(state, tasks)[0]

      mesh = parallel.make_mesh()
      tasks_s, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
      traces = []
      def grad_fn(state, tasks):
        traces.append(1)
        return lrn.meta_gradient(state, tasks)[0]
      sharded_grad = jax.jit(grad_fn, in_shardings=(repl, tasks_s), out_shardings=repl)
      sharded = sharded_grad(parallel.replicate(state, mesh), parallel.shard_batch(tasks, mesh))
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), single, sharded)

      # the train step as the trainer jits it: compiles once over several steps
      step_traces = []
      def train_step(state, tasks, key):
        step_traces.append(1)
        return lrn.train_step(state, tasks, key)
      step = jax.jit(train_step, in_shardings=(repl, tasks_s, repl), out_shardings=(repl, repl),
                     donate_argnums=0)
      st = parallel.replicate(state, mesh)
      for i in range(3):
        t = parallel.shard_batch(Sinusoid().sample(jax.random.key(10 + i), spec), mesh)
        st, m = step(st, t, parallel.replicate(jax.random.key(i), mesh))
      assert np.isfinite(float(m["loss"]))
      assert len(step_traces) == 1, f"train_step traced {len(step_traces)} times"
      assert len(traces) == 1
    print("OK")
""")


def test_sharded_meta_gradient_equals_single_device_and_compiles_once():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                     timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]

"""JAX's persistent compilation cache: a second run on data of the same shape compiles nothing.

`use(path)` points JAX's on-disk cache at `path` ('' turns it off) with both thresholds at
their minimum (`jax_persistent_cache_min_compile_time_secs` 0, `..._min_entry_size_bytes` -1),
so the small programs an AutoML search compiles on CPU are kept too, and (when `filelock` is
installed, which JAX needs for it) a size cap of `MAX_BYTES` with least-recently-used eviction,
under a file lock, so concurrent searches write safely. JAX decides once per
process whether it uses a cache; `use` resets that decision whenever the path changes, so it
must be called before the compiles it should cover (the search calls it first).

The default directory, `DEFAULT_DIR`, stands for `$METAJAX_COMPILE_CACHE` when that is set
(the tests point it at a temporary directory), else for the user's own cache directory. The
cache is trusted code: keep it in a directory only you can write.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import jax
from jax.experimental.compilation_cache import compilation_cache

DEFAULT_DIR = "~/.cache/metajax/jax_compilation_cache"
MAX_BYTES = 1 << 30
_current: str | None = None
_local = threading.local()  # per thread: compiles served by the cache (JAX's own event)


def _on_event(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _local.hits = getattr(_local, "hits", 0) + 1


jax.monitoring.register_event_listener(_on_event)


def hits() -> int:
  """Compiles this thread has loaded from the persistent cache so far."""
  return getattr(_local, "hits", 0)


def resolve(path: str) -> str:
  """The directory `path` names ('' stays '': no cache; `DEFAULT_DIR`: $METAJAX_COMPILE_CACHE
  when set); '~' is expanded."""
  if path == DEFAULT_DIR:
    path = os.environ.get("METAJAX_COMPILE_CACHE") or path
  return os.path.abspath(os.path.expanduser(path)) if path else ""


def use(path: str) -> str:
  """Persistent compilation cache in `path` ('' disables it); returns the resolved directory."""
  global _current
  path = resolve(path)
  if path == _current:
    return path
  if path:
    os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path or None)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  if importlib.util.find_spec("filelock") is not None:
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  compilation_cache.reset_cache()  # JAX checks the directory once; make it look again
  _current = path
  return path


def entries(path: str) -> int:
  """Number of compiled programs stored in the cache directory `path` (0 if none)."""
  path = resolve(path)
  if not path or not os.path.isdir(path):
    return 0
  return sum(1 for f in os.listdir(path) if f.endswith("-cache"))

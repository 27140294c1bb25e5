"""Components picked by name from the config.

A registry maps a name to an object or to a lazy "module:attribute" path, so
heavy optional components (scikit-learn, tokenizers) are imported only when a
config asks for them. An unknown name fails and lists the valid ones.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from metajax.errors import ConfigError


class Registry:
  """Name -> component. `kind` is the config key the name comes from."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Any] = {}

  def register(self, name: str, obj: Any = None) -> Any:
    """Registers `obj` under `name`; usable as a decorator when `obj` is None.

    `obj` may be a string "package.module:attribute", resolved on first `get`.
    """
    if obj is None:
      return lambda o: self.register(name, o)
    if name in self._entries:
      raise KeyError(f"{self.kind} {name!r} is registered twice")
    self._entries[name] = obj
    return obj

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def get(self, name: str) -> Any:
    """The component registered as `name`; ConfigError listing valid names if none."""
    if name not in self._entries:
      raise ConfigError(self.kind, name, f"no {self.kind} of that name", ", ".join(self.names()))
    obj = self._entries[name]
    if isinstance(obj, str):
      module, _, attr = obj.partition(":")
      obj = getattr(importlib.import_module(module), attr)
      self._entries[name] = obj
    return obj


def lazy(path: str) -> Callable[..., Any]:
  """A callable that imports "module:attr" on first call (for registries of factories)."""
  def call(*args, **kwargs):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)(*args, **kwargs)
  return call

"""The one error type for bad input: it names the key, the value and what is valid."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
  """A config value (or input) is invalid. Raised before any expensive work.

  The message reads `config.<key>=<value> is invalid: <why>. Valid: <valid>.`
  so a researcher can fix the flag without reading the code. A `key` that is a command-line
  flag ('--config') is shown as the flag: `--config='x.py' is invalid: ...`.
  """

  def __init__(self, key: str, value: Any, why: str, valid: str | None = None):
    self.key, self.value, self.why, self.valid = key, value, why, valid
    name = key if key.startswith("--") else f"config.{key}"
    msg = f"{name}={value!r} is invalid: {why}"
    if valid:
      msg += f". Valid: {valid}"
    super().__init__(msg + ".")


def require_positive(config, *keys: str, allow_zero: bool = False) -> None:
  """Raises ConfigError unless every dotted `key` of `config` is > 0 (>= 0)."""
  for key in keys:
    value = config
    for part in key.split("."):
      value = value[part]
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
      raise ConfigError(key, value, "must be " + ("non-negative" if allow_zero else "positive"),
                        ">= 0" if allow_zero else "> 0")


def require_in(key: str, value: Any, valid) -> None:
  """Raises ConfigError unless `value` is one of `valid`."""
  valid = list(valid)
  if value not in valid:
    raise ConfigError(key, value, "unknown value", ", ".join(map(repr, valid)))

"""Command-line mistakes as ConfigErrors, found before absl parses the flags.

absl and ml_collections report a missing config file, a bad `:mode`, a misspelled
`--config.key` or an unparsable value as tracebacks; these checks turn each into one
ConfigError that names the bad value and the valid choices.
"""

from __future__ import annotations

import difflib
import glob
import importlib.util
import os

from absl import flags

from metajax.errors import ConfigError

CONFIG_PREFIX = "--config."
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def flag_value(argv: list[str], name: str) -> str | None:
  """The value of `--name=V` or `--name V` in `argv` (the last one wins), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def known_configs(near: str = "") -> list[str]:
  """Experiment config files beside `near` (or in the repository's configs/)."""
  root = os.path.dirname(near) if near and os.path.isdir(os.path.dirname(near) or ".") else ""
  if not root or not glob.glob(os.path.join(root, "*.py")):
    root = os.path.relpath(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "configs"))
  skip = {"__init__.py", "common.py"}
  return sorted(p for p in glob.glob(os.path.join(root, "*.py")) if os.path.basename(p) not in skip)


def load_config(arg: str):
  """`get_config(mode)` of `--config=PATH[:MODE]`; ConfigError for a missing file or bad mode."""
  path, _, mode = arg.partition(":")
  if not os.path.isfile(path):
    raise ConfigError("--config", arg, f"there is no file {path}",
                      ", ".join(known_configs(path)) + " (with an optional :mode)")
  spec = importlib.util.spec_from_file_location("metajax_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError("--config", arg, f"{path} defines no get_config()",
                      ", ".join(known_configs(path)))
  try:
    return module.get_config(mode) if mode else module.get_config()
  except ConfigError as e:
    if e.key != "mode":
      raise
    raise ConfigError("--config", arg, f"mode {e.value!r}: {e.why}",
                      f"{e.valid} (as {path}:MODE)") from None


def check_override(config, arg: str) -> None:
  """ConfigError unless the dotted key of `--config.KEY=VALUE` exists in `config`."""
  key, _, value = arg[len(CONFIG_PREFIX):].partition("=")
  node, seen = config, []
  for part in key.split("."):
    children = list(node.keys()) if hasattr(node, "keys") else []
    if part not in children:
      close = difflib.get_close_matches(part, children, n=1)
      where = ".".join(seen) or "the config"
      hint = f" (did you mean {'.'.join(seen + close)}?)" if close else ""
      raise ConfigError(key, value or None, f"{where} has no key {part!r}{hint}",
                        ", ".join(".".join(seen + [c]) for c in sorted(children))
                        or f"{where} is a value, not a group")
    node, seen = node[part], seen + [part]


def check_argv(argv: list[str]) -> None:
  """ConfigError for a missing/unknown config file or mode, or an unknown --config.KEY."""
  if any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
    return  # absl prints the help
  arg = flag_value(argv, "config")
  if arg is None:
    raise ConfigError("--config", None, "every run needs an experiment config",
                      ", ".join(known_configs()))
  config = load_config(arg)
  for a in argv[1:]:
    if a.startswith(CONFIG_PREFIX):
      check_override(config, a)


def as_config_error(error: flags.Error, argv: list[str]) -> ConfigError:
  """An absl flag error (unparsable value, unknown or missing flag) as a ConfigError."""
  msg = str(error).splitlines()[0]
  if msg.startswith("Unknown command line flag") and "'" in msg:
    name = msg.split("'")[1]
    given = next((a for a in argv if a.lstrip("-").split("=")[0] == name), f"--{name}")
    close = msg.split("Did you mean:", 1)[1].strip(" ?") if "Did you mean:" in msg else ""
    return ConfigError("--flags", given, "unknown flag" + (f" (did you mean --{close}?)"
                                                          if close else ""),
                       "--config, --workdir, --config.KEY=VALUE, --quiet, --distributed, "
                       "--coordinator_address, --num_processes, --process_id, --distributed_timeout")
  prefix = "flag --config."
  if msg.startswith(prefix) and ": " in msg:  # "flag --config.K=V: why"
    flag, why = msg[len(prefix):].split(": ", 1)
    why = why.rstrip(".")
    key, _, value = flag.partition("=")
    return ConfigError(key, value, why, "a value of the key's type, as in the config file")
  if msg.startswith("flag --workdir=None"):
    return ConfigError("--workdir", None, "every run needs a directory to write to",
                       "a new directory, or one holding a run of this config to resume")
  return ConfigError("--flags", " ".join(argv[1:]), msg,
                     "--config, --workdir, --config.KEY=VALUE, --quiet, --distributed, "
                     "--coordinator_address, --num_processes, --process_id, --distributed_timeout")

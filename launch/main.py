"""Entry point: `python -m launch.main --config=configs/NAME.py --workdir=DIR [--config.key=value ...]`.

Parses flags and calls `metajax.experiments.run`; everything else lives in the library.
Rerunning with the same workdir resumes from its latest checkpoint.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first (multi-host pods; reads the cluster from the environment).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO chatter (Orbax) off; ours stays on
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("metajax").setLevel(std_logging.INFO)
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  from metajax.errors import ConfigError
  from metajax.experiments import run
  try:
    result = run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    print(f"metajax: {e}", file=sys.stderr)
    sys.exit(2)
  report = getattr(result, "get", lambda *_: None)("report")
  if report:
    print(f"report: {report}")


if __name__ == "__main__":
  app.run(main)

"""Entry point: `python -m launch.main --config=configs/NAME.py --workdir=DIR [--config.key=value ...]`.

Parses flags and calls `metajax.experiments.run`; everything else lives in the library.
Rerunning with the same workdir resumes from its latest checkpoint. `--quiet` keeps only
errors and the report path. Every command-line or config mistake is one `metajax:` line on
stderr and exit status 2.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the report.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars or progress lines (errors stay).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Join JAX's multi-controller runtime first (metajax.distributed.initialize): the mesh then "
    "spans every device of every process. Alone, the cluster is detected (Slurm, Cloud TPU, "
    "Open MPI); elsewhere give the three flags below.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with "
                                      "--coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1.")
_DIST_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 60, "Seconds to wait for the coordinator before failing.")
flags.mark_flags_as_required(["config", "workdir"])


def fail(error) -> None:
  """Prints `error` as the one `metajax:` line and exits with status 2."""
  print(f"metajax: {error}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake turned into one `metajax:` line (exit 2)."""
  from launch import flag_checks
  from metajax.errors import ConfigError
  try:
    flag_checks.check_argv(argv)
    return flags.FLAGS(argv)
  except ConfigError as e:
    fail(e)
  except flags.Error as e:
    fail(flag_checks.as_config_error(e, argv))


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO chatter (Orbax) off; ours stays on
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("metajax").setLevel(
        std_logging.WARNING if _QUIET.value else std_logging.INFO)
  from metajax import runlog
  runlog.set_quiet(_QUIET.value)
  from metajax.errors import ConfigError
  from metajax import distributed
  try:
    if _DISTRIBUTED.value or _COORDINATOR.value or _NUM_PROCESSES.value is not None:
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             timeout_s=_DIST_TIMEOUT.value)
    from metajax.experiments import run
    result = run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    fail(e)
  distributed.shutdown()
  report = getattr(result, "get", lambda *_: None)("report")
  if report:
    print(f"report: {report}")


def cli() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()

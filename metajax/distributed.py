"""JAX's multi-controller runtime: one process per host (or per GPU), one global mesh.

  distributed.initialize()                                  # Slurm, TPU pod, Open MPI: auto
  distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=1)   # explicit

After `initialize`, `jax.devices()` lists every device of every process and
`parallel.make_mesh()` spans them all; each process feeds only its own devices
(`parallel.shard_batch`, `parallel.host_local_batch`) and only process 0 writes reports.

JAX aborts the whole process (a C++ fatal error, no Python exception) when the coordinator
cannot be reached or bound, so the address is checked here first, in Python, and a bad one
is a ConfigError naming it: a malformed address or process id at once, an address this
machine cannot listen on (process 0) at once, and a coordinator that does not answer
(other processes) after `timeout_s`.

End a run with `shutdown()` while every process is still alive: its barrier then comes
before the interpreter tears the CPU client and its collectives down, not from inside that
teardown, and a process that never arrives fails the others after `shutdown_timeout_s`
instead of JAX's 5 minutes.
"""

from __future__ import annotations

import socket
import time

import jax

from metajax.errors import ConfigError

DEFAULT_TIMEOUT_S = 60
DEFAULT_SHUTDOWN_TIMEOUT_S = 120


def parse_address(address: str) -> tuple[str, int]:
  """'host:port' -> (host, port); ConfigError unless the port is a number in 1..65535 and
  the host resolves."""
  host, sep, port = str(address).rpartition(":")
  host = host.strip("[]")  # [::1]:1234
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError("--coordinator_address", address, "is not HOST:PORT with a port in 1..65535",
                      "e.g. 10.0.0.1:1234 (the address of process 0 and a free port)")
  try:
    socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
  except OSError as e:
    raise ConfigError("--coordinator_address", address, f"the host does not resolve ({e})",
                      "an IP address or host name of the machine of process 0") from None
  return host, int(port)


def _family(host: str) -> socket.AddressFamily:
  return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


def check_can_listen(address: str) -> None:
  """Process 0 hosts the coordinator: ConfigError unless it can bind `address`."""
  host, port = parse_address(address)
  with socket.socket(_family(host), socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind((host, port))
    except OSError as e:
      raise ConfigError("--coordinator_address", address,
                        f"process 0 cannot listen there ({e.strerror}): not an address of this "
                        "machine, or the port is taken",
                        "an address of process 0's machine and a free port") from None


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Processes other than 0: ConfigError unless something accepts TCP at `address` within
  `timeout_s` seconds (process 0 may start a little later, so this retries)."""
  host, port = parse_address(address)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise ConfigError("--coordinator_address", address,
                          f"no coordinator answered there within {timeout_s:g} s ({e.strerror or e})",
                          "the address and port that process 0 was given, reachable from "
                          "this machine") from None
      time.sleep(0.2)


def check_process(num_processes: int | None, process_id: int | None) -> None:
  """ConfigError unless both are given with 0 <= process_id < num_processes, or neither."""
  if (num_processes is None) != (process_id is None):
    raise ConfigError("--process_id" if process_id is None else "--num_processes", None,
                      "num_processes and process_id go together",
                      "both (with --coordinator_address), or neither (auto-detection)")
  if num_processes is not None and (num_processes < 1 or not 0 <= process_id < num_processes):
    raise ConfigError("--process_id", process_id, f"num_processes is {num_processes}",
                      f"0..{max(num_processes - 1, 0)}, each process its own")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
               shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
  """Starts (process 0) or joins the coordinator, then `jax.distributed.initialize`.

  With no arguments JAX detects the cluster (Slurm, Cloud TPU pod, Open MPI) from the
  environment. CPU processes use gloo collectives. Bad arguments are a ConfigError before
  JAX is touched.
  """
  check_process(num_processes, process_id)
  if coordinator_address is not None:
    if num_processes is None:
      raise ConfigError("--num_processes", None, "an explicit coordinator needs the process count "
                        "and this process's id", "--num_processes=N --process_id=I")
    if process_id == 0:
      check_can_listen(coordinator_address)
    else:
      wait_for_coordinator(coordinator_address, timeout_s)
  elif num_processes is not None:
    raise ConfigError("--coordinator_address", None, "num_processes and process_id need it",
                      "HOST:PORT of process 0, or none of the three (auto-detection)")
  try:  # cross-process collectives of CPU devices (GPUs and TPUs use their own)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, KeyError, ValueError):  # a JAX without the option: its default
    pass
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=int(max(timeout_s, 1)),
                               shutdown_timeout_seconds=int(max(shutdown_timeout_s, 1)))
  except ValueError as e:  # auto-detection found no cluster
    raise ConfigError("--distributed", True, f"no cluster detected ({str(e).splitlines()[0]})",
                      "run under Slurm (srun), on a Cloud TPU VM, or give --coordinator_address, "
                      "--num_processes and --process_id") from None


def shutdown() -> None:
  """Leaves the multi-controller runtime (a barrier of all processes); a no-op when this
  process never joined one. Call it at the end of a run, from every process."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()

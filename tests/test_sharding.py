"""The same code on 1 and 8 (fake CPU) devices gives the same meta-step."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_protonet_step_sharded_over_8_devices_equals_single_device():
  r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_protonet.py")],
                     cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0 and "OK sharded == single" in r.stdout, r.stderr[-3000:]

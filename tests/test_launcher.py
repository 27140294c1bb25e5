"""The launcher end to end: flags, outputs, bad input, SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/protonet_glyphs.py:tiny", "--config.dataset=tiny_images",
        "--config.eval.datasets=('tiny_images',)"]


def launch(workdir, *flags, wait=True):
  cmd = [sys.executable, "tests/launch_tiny.py", f"--workdir={workdir}", *TINY, *flags]
  env = {**os.environ, "PYTHONPATH": ROOT}
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def learning_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [{k: v for k, v in r.items() if "per_s" not in k} for r in rows]


def test_end_to_end_writes_everything(tmp_path):
  wd = tmp_path / "run"
  r = launch(wd, "--config.num_steps=6", "--config.optimizer.learning_rate=0.003")
  assert r.returncode == 0, r.stderr[-3000:]
  config = json.load(open(wd / "config.json"))
  assert config["num_steps"] == 6 and config["optimizer"]["learning_rate"] == 0.003  # overrides
  for name in ("report.md", "learning_curve.png", "results.json", "metrics.jsonl"):
    assert (wd / name).exists(), name
  assert os.listdir(wd / "tensorboard") and os.listdir(wd / "checkpoints")
  report = (wd / "report.md").read_text()
  assert "95% CI" in report and "tiny_images/test 5-way 1-shot" in report
  steps = [r["step"] for r in learning_rows(wd) if "train/loss" in r]
  assert steps == [2, 4, 6]


@pytest.mark.parametrize("flag, key, valid", [
    ("--config.algorithm=reptile", "algorithm", "protonet"),
    ("--config.dataset=imagenet", "dataset", "glyphs"),
    ("--config.model=resnet", "model", "conv4"),
    ("--config.ways=13", "ways", "1..12"),  # tiny_images train has 12 classes... x4 rotations
    ("--config.shots=5", "shots", "shots + queries <= 6"),
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate", "> 0"),
    ("--config.num_steps=0", "num_steps", "> 0"),
    ("--config.eval.ways=(9,)", "eval.ways", "ways <= 8"),
])
def test_bad_config_fails_clearly_and_writes_nothing(tmp_path, flag, key, valid):
  extra = ["--config.rotations=False"] if key == "ways" else []
  wd = tmp_path / "run"
  r = launch(wd, flag, *extra)
  assert r.returncode == 2, r.stderr[-2000:]
  msg = r.stderr
  assert f"config.{key}=" in msg and valid in msg, msg[-2000:]
  assert not wd.exists(), "a failed start must not write to the workdir"


def test_failed_start_leaves_an_existing_run_intact(tmp_path):
  wd = tmp_path / "run"
  assert launch(wd, "--config.num_steps=2").returncode == 0
  before = {p: (wd / p).read_bytes() for p in ("config.json", "metrics.jsonl", "report.md")}
  r = launch(wd, "--config.num_steps=2", "--config.seed=1")  # another config, same workdir
  assert r.returncode == 2 and "different config" in r.stderr
  r = launch(wd, "--config.algorithm=nope")
  assert r.returncode == 2
  assert before == {p: (wd / p).read_bytes() for p in before}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  flags = ["--config.num_steps=60", "--config.log_every=4", "--config.checkpoint_every=8"]
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  proc = launch(killed, *flags, wait=False)
  deadline = time.time() + 240
  ckpts = killed / "checkpoints"
  while time.time() < deadline:
    done = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if any(8 <= s < 60 for s in done) or proc.poll() is not None:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed; make it longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "results.json").exists()
  assert launch(ref, *flags).returncode == 0
  r = launch(killed, *flags)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step" in r.stdout
  a, b = json.load(open(ref / "results.json")), json.load(open(killed / "results.json"))
  strip = lambda res: {s: {k: v for k, v in m.items() if k != "eval_seconds"} for s, m in res.items()}
  assert strip(a["results"]) == strip(b["results"])
  assert learning_rows(ref) == learning_rows(killed)

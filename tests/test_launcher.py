"""The launcher end to end: flags, outputs, bad input, SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/protonet_glyphs.py:tiny", "--config.data.name=tiny_images",
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
  r = launch(wd, "--config.train.steps=6", "--config.optimizer.learning_rate=0.003")
  assert r.returncode == 0, r.stderr[-3000:]
  config = json.load(open(wd / "config.json"))
  assert config["train"]["steps"] == 6  # overrides
  assert config["optimizer"]["learning_rate"] == 0.003
  for name in ("report.md", "learning_curve.png", "results.json", "metrics.jsonl", "model.json"):
    assert (wd / name).exists(), name
  assert os.listdir(wd / "tensorboard") and os.listdir(wd / "checkpoints")
  report = (wd / "report.md").read_text()
  assert "95% CI" in report and "tiny_images/test 5-way 1-shot" in report
  steps = [r["step"] for r in learning_rows(wd) if "train/loss" in r]
  assert steps == [2, 4, 6]


@pytest.mark.parametrize("flag, key, valid", [
    ("--config.learner.name=reptile", "learner.name", "protonet"),
    ("--config.data.name=imagenet", "data.name", "glyphs"),
    ("--config.model.name=resnet", "model.name", "conv4"),
    ("--config.episodes.ways=13", "episodes.ways", "1..12"),  # 12 train classes (x4 rotations)
    ("--config.episodes.shots=5", "episodes.shots", "shots + queries <= 6"),
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate", "> 0"),
    ("--config.optimizer.schedule=linear", "optimizer.schedule", "'cosine'"),
    ("--config.train.steps=0", "train.steps", "> 0"),
    ("--config.eval.ways=(9,)", "eval.ways", "ways <= 8"),
])
def test_bad_config_fails_clearly_and_writes_nothing(tmp_path, flag, key, valid):
  extra = ["--config.episodes.rotations=False"] if key == "episodes.ways" else []
  wd = tmp_path / "run"
  r = launch(wd, flag, *extra)
  assert r.returncode == 2, r.stderr[-2000:]
  msg = r.stderr
  assert f"config.{key}=" in msg and valid in msg, msg[-2000:]
  assert not wd.exists(), "a failed start must not write to the workdir"


def test_failed_start_leaves_an_existing_run_intact(tmp_path):
  wd = tmp_path / "run"
  assert launch(wd, "--config.train.steps=2").returncode == 0
  before = {p: (wd / p).read_bytes() for p in ("config.json", "metrics.jsonl", "report.md")}
  r = launch(wd, "--config.train.steps=2", "--config.seed=1")  # another config, same workdir
  assert r.returncode == 2 and "different config" in r.stderr and "seed: 0 -> 1" in r.stderr
  r = launch(wd, "--config.train.steps=1")  # fewer steps than the run on disk
  assert r.returncode == 2 and "train.steps: 2 -> 1" in r.stderr
  r = launch(wd, "--config.learner.name=nope")
  assert r.returncode == 2
  assert before == {p: (wd / p).read_bytes() for p in before}


def test_workdir_that_is_a_file_is_one_line_and_exit_2(tmp_path):
  wd = tmp_path / "run"
  wd.write_text("not a directory")
  r = launch(wd)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.startswith("metajax:")]
  assert len(lines) == 1 and "config.workdir=" in lines[0] and "is a file" in lines[0]
  assert "Traceback" not in r.stderr and wd.read_text() == "not a directory"


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  flags = ["--config.train.steps=60", "--config.train.log_every=4",
           "--config.train.checkpoint_every=8"]
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

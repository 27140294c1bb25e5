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


CACHE = ""  # set per module run by the `compile_cache` fixture


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """One persistent compilation cache for the module's launches: they run one tiny config,
  so only the first compiles its programs."""
  global CACHE
  CACHE = str(tmp_path_factory.mktemp("jax_cache"))


def launch(workdir, *flags, wait=True):
  cmd = [sys.executable, "tests/launch_tiny.py", f"--workdir={workdir}", *TINY, *flags]
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_COMPILATION_CACHE_DIR": CACHE,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def strict_json(path):
  """Parses a JSON (or JSON lines) file, failing on NaN / Infinity (not JSON)."""
  def refuse(constant):
    raise AssertionError(f"{constant} in {path}")
  text = open(path).read()
  if str(path).endswith(".jsonl"):
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
  return json.loads(text, parse_constant=refuse)


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
  # Strict JSON everywhere (results.json once held NaN confidence intervals).
  for name in os.listdir(wd):
    if name.endswith((".json", ".jsonl")):
      strict_json(wd / name)
  assert "batch norm" in report  # conv4 has it (an MLP report must not say so)


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


def test_failed_start_leaves_a_run_intact_and_resume_keeps_or_extends_it(tmp_path):
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
  # The same config again: nothing to train, and the meta-test is kept, not rerun.
  events = sorted(os.listdir(wd / "tensorboard"))
  results = (wd / "results.json").read_bytes()
  r = launch(wd, "--config.train.steps=2")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "meta-test results kept" in r.stdout and "meta-test tiny_images" not in r.stdout
  assert (wd / "results.json").read_bytes() == results  # eval_seconds too: not rerun
  assert (wd / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]
  assert sorted(os.listdir(wd / "tensorboard")) == events, "no new TensorBoard file"
  # More train.steps extend a finished run, and the meta-test then reruns.
  r = launch(wd, "--config.train.steps=4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 2" in r.stdout and "meta-test tiny_images" in r.stdout
  assert strict_json(wd / "results.json")["steps"] == 4
  assert [r["step"] for r in learning_rows(wd) if "train/loss" in r] == [2, 4]


def test_workdir_that_is_a_file_is_one_line_and_exit_2(tmp_path):
  wd = tmp_path / "run"
  wd.write_text("not a directory")
  r = launch(wd)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.startswith("metajax:")]
  assert len(lines) == 1 and "config.workdir=" in lines[0] and "is a file" in lines[0]
  assert "Traceback" not in r.stderr and wd.read_text() == "not a directory"


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  flags = ["--config.train.steps=32", "--config.train.log_every=4",
           "--config.train.checkpoint_every=8"]
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  proc = launch(killed, *flags, wait=False)
  deadline = time.time() + 240
  ckpts = killed / "checkpoints"
  while time.time() < deadline:
    done = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if any(8 <= s < 32 for s in done) or proc.poll() is not None:
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


# Every command-line mistake: (arguments, what the one metajax: line must name).
CLI_MISTAKES = {
    "misspelled key": (["--config.train.step=3"], ["config.train.step=", "train.steps"]),
    "misspelled group": (["--config.trian.steps=3"], ["config.trian.steps=", "did you mean train"]),
    "missing config file": (["--config=configs/nope.py"],
                            ["configs/nope.py", "configs/protonet_glyphs.py", "configs/automl.py"]),
    "bad mode": (["--config=configs/protonet_glyphs.py:bogus"], ["'bogus'", "'tiny'"]),
    "two algorithms": (["--config=configs/maml_glyphs.py:anil,lslr"], ["anil,lslr", "metasgd"]),
    "unparsable value": (["--config.train.steps=abc"], ["config.train.steps='abc'"]),
    "unknown flag": (["--workdri=x"], ["--workdri=x", "--workdir"]),
    "unknown dataset": (["--config.data.name=imagenet"], ["'imagenet'", "glyphs", "tfds:NAME"]),
    "workdir is a file": (["WORKDIR_IS_FILE"], ["config.workdir=", "is a file"]),
    "no config": (["NO_CONFIG"], ["--config", "configs/protonet_glyphs.py"]),
}


@pytest.mark.parametrize("mistake", sorted(CLI_MISTAKES))
def test_cli_mistake_is_one_metajax_line_and_exit_2(tmp_path, mistake):
  flags, named = CLI_MISTAKES[mistake]
  wd = tmp_path / "run"
  cmd = [sys.executable, "tests/launch_tiny.py", f"--workdir={wd}"]
  if flags == ["WORKDIR_IS_FILE"]:
    wd.write_text("not a directory")
    flags = []
  if flags == ["NO_CONFIG"]:
    flags = []
  elif not (flags and flags[0].startswith("--config=")):
    cmd += TINY
  cmd += flags
  r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                     text=True, timeout=120)
  out = r.stdout + r.stderr
  assert r.returncode == 2, out[-2000:]
  lines = [l for l in out.splitlines() if "metajax:" in l]
  assert len(lines) == 1 and lines[0].startswith("metajax: "), out[-2000:]  # printed once
  assert all(n in lines[0] for n in named), lines[0]
  assert "Traceback" not in out and not any(l[:1] in "EF" and l[1:5].isdigit()
                                            for l in out.splitlines()), out[-2000:]  # no absl E/F
  assert wd.is_file() or not wd.exists(), "a failed start must not write to the workdir"


def test_unwritable_workdir_is_a_config_error(tmp_path, monkeypatch):
  from metajax import runlog
  from metajax.errors import ConfigError
  monkeypatch.setattr(os, "access", lambda *a, **k: False)  # also meaningful when run as root
  with pytest.raises(ConfigError, match="is not writable"):
    runlog.check_workdir(str(tmp_path / "new" / "run"))


def test_sourcing_env_sh_leaves_the_callers_shell_alone(tmp_path):
  """`source launch/env.sh` (as the README says) sets no shell options and does not cd, so a
  failing command afterwards (a metajax config error exits 2) does not close the terminal."""
  script = (f"set +euo pipefail; cd {tmp_path}; source {ROOT}/launch/env.sh; "
            "echo \"flags=$- pwd=$PWD\"; false; echo alive; command -v python")
  r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
  flags_line = next(l for l in r.stdout.splitlines() if l.startswith("flags="))
  shell_flags = flags_line.split()[0][len("flags="):]
  assert "e" not in shell_flags and "u" not in shell_flags, r.stdout
  assert f"pwd={tmp_path}" in flags_line and "alive" in r.stdout, r.stdout + r.stderr
  assert r.stdout.strip().endswith(os.path.join(ROOT, ".venv", "bin", "python"))

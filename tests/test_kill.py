"""kill -9: training resumes from its last checkpoint; an interrupted build leaves the previous output whole."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow


def _config(tmp: Path, steps: int, every: int) -> Path:
    text = (FIXTURES / "micro.toml").read_text()
    text = re.sub(r"\[train\][^\[]*", f"[train]\nsteps = {steps}\nbatch_size = 8\ncheckpoint_every = {every}\n\n", text)
    p = tmp / "killme.toml"
    p.write_text(text)
    return p


def _start(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(pred, proc, timeout=300):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = pred()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"process ended before the kill point: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise AssertionError("kill point not reached in time")


def _latest_checkpoint(work: Path) -> int:
    best = 0
    for index in work.glob("cache/train/*.work/ckpt/checkpoint"):
        m = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index.read_text())
        best = max(best, int(m.group(1))) if m else best
    return best


def test_training_survives_sigkill_and_resumes_from_the_last_checkpoint(tmp_path):
    cfg = _config(tmp_path, steps=400, every=20)
    args = [
        "train",
        "--model",
        str(cfg),
        "--data",
        "synth",
        "--out",
        str(tmp_path / "ck"),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    proc = _start(*args, cwd=tmp_path)
    seen = _wait_for(lambda: _latest_checkpoint(tmp_path / "w") >= 60, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_checkpoint(tmp_path / "w")
    assert killed_at >= seen and not (tmp_path / "ck").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args, "--resume"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    start = int(re.search(r"resumed from \S+ at step (\d+)", resumed.stderr).group(1))
    assert start == killed_at  # at most one checkpoint interval (20 steps) of work lost
    meta = json.loads((tmp_path / "ck" / "model.json").read_text())["meta"]
    assert meta["steps"] == 400


def _dist_state(folder: Path):
    m = folder / "manifest.json"
    return json.loads(m.read_text())["build"]["training"]["steps"] if m.exists() else None


def test_build_killed_at_any_stage_leaves_the_previous_complete_output(tmp_path):
    cfg = _config(tmp_path, steps=40, every=20)
    base = [
        "build",
        "--target",
        "watch",
        "--model",
        str(cfg),
        "--data",
        "synth",
        "--out",
        str(tmp_path / "dist"),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    first = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *base], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stderr[-2000:]
    dist = tmp_path / "dist" / "watch"
    assert _dist_state(dist) == 40

    # kill while training the new model, then while verifying / writing the output
    for steps, point in (
        (400, lambda: _latest_checkpoint(tmp_path / "w") >= 20),
        (
            41,
            lambda: (
                any((tmp_path / "w" / "cache" / "verify").glob("*/stage.json"))
                and len(list((tmp_path / "w" / "cache" / "verify").glob("*/stage.json"))) >= 2
            ),
        ),
    ):
        proc = _start(*base, "--steps", str(steps), cwd=tmp_path)
        _wait_for(point, proc, timeout=900)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = _dist_state(dist)
        assert state in (40, steps), (
            state
        )  # the previous output, or (if the rename won the race) the new one, never a mix
        check = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "verify", str(dist)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert check.returncode == 0, check.stderr[-2000:]
        assert not [p for p in (tmp_path / "dist").iterdir() if p.name != "watch" and not p.name.endswith(".partial")]

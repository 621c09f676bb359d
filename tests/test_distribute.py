"""Multi-worker training on tf.distribute: two worker processes on 127.0.0.1 end with identical weights."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline._tf import keras, tf
from pipeline.cache import link_stages
from pipeline.checkpoint import ModelCheckpoint
from pipeline.features import FeatureShards
from pipeline.model import build_training_model, forward, get_params
from pipeline.rnnt_loss import rnnt_loss
from pipeline.scale import free_ports
from pipeline.train import Batcher
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow


def test_two_workers_train_to_identical_weights_and_the_loss_falls(tmp_path, prepared):
    cfg = tmp_path / "dist.toml"
    text = (FIXTURES / "micro.toml").read_text()
    cfg.write_text(re.sub(r"\[train\][^\[]*", "[train]\nsteps = 30\nbatch_size = 8\ncheckpoint_every = 10\n\n", text))
    a, b = _train_two_workers(tmp_path, cfg, prepared=prepared)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    # the loss over one whole epoch of training batches, at the seeded initialization and after training
    features = FeatureShards.load(next((tmp_path / "w0").glob("cache/features/*/index.json")).parent)
    keras.utils.set_random_seed(a.config.train.seed)
    initial = get_params(build_training_model(a.config, a.tokenizer.size), a.config)
    before, after = _epoch_loss(a.config, features, initial), _epoch_loss(a.config, features, a.params)
    assert after < before, (before, after)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A work folder whose cache holds the micro model's synthesized corpus and features (what every test here trains
    on: they change [train] and [sparsity] only)."""
    from pipeline.config import load_model_config
    from pipeline.data import DataOptions
    from pipeline.stages import begin, stage_corpus, stage_features

    work = tmp_path_factory.mktemp("prepared") / "w"
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    cache, src = begin(cfg, DataOptions("synth"), work, [])
    cfg, corpus = stage_corpus(cache, cfg, src)
    stage_features(cache, cfg, corpus)
    return work


def _start_workers(tmp_path, cfg, *args, prepared=None):
    """`pipeline train` on two worker processes on 127.0.0.1 (worker i's cache in tmp_path/w<i>, with the data and
    features of `prepared` linked in); returns them."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        if prepared is not None:
            link_stages(prepared, tmp_path / f"w{i}")
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
            "CUDA_VISIBLE_DEVICES": "",
        }
        cmd = [sys.executable, "-m", "pipeline.cli", "train", "--model", str(cfg), "--data", "synth"]
        cmd += [
            "--strategy",
            "multi-worker",
            *args,
            "--out",
            str(tmp_path / f"ck{i}"),
            "--work-dir",
            str(tmp_path / f"w{i}"),
        ]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        )
    return procs


def _finish(procs, timeout=600):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]


def _train_two_workers(tmp_path, cfg, *args, prepared=None):
    """`pipeline train` on two worker processes on 127.0.0.1; returns their checkpoints."""
    _finish(_start_workers(tmp_path, cfg, *args, prepared=prepared))
    return [ModelCheckpoint.load(tmp_path / f"ck{i}") for i in range(2)]


def test_two_workers_fine_tune_with_the_int8_kernels_emulated_alike(tmp_path, prepared):
    """Accelerator-aware fine-tuning on two workers: identical weights and identical int8 ranges."""
    cfg = tmp_path / "dist.toml"
    text = (FIXTURES / "micro.toml").read_text()
    cfg.write_text(re.sub(r"\[train\][^\[]*", "[train]\nsteps = 8\nbatch_size = 8\ncheckpoint_every = 4\n\n", text))
    a, b = _train_two_workers(tmp_path, cfg, "--aat", "--aat-steps", "4", prepared=prepared)
    assert a.meta["aat"]["steps"] == 4
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert a.ranges and set(a.ranges) == set(b.ranges)
    for t, points in a.ranges.items():
        for p, r in points.items():
            np.testing.assert_array_equal(r, b.ranges[t][p], err_msg=f"{t} {p}")


def test_kill_worker_1_then_resume_completes_on_both(tmp_path, prepared):
    """kill -9 of worker 1 in the middle of training; both restarted with --resume finish from the checkpoint they
    share, with identical weights."""
    import signal
    import time

    cfg = tmp_path / "dist.toml"
    text = (FIXTURES / "micro.toml").read_text()
    cfg.write_text(re.sub(r"\[train\][^\[]*", "[train]\nsteps = 60\nbatch_size = 8\ncheckpoint_every = 5\n\n", text))
    procs = _start_workers(tmp_path, cfg, prepared=prepared)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "w1").glob("cache/train/*.work/ckpt-worker1/ckpt-10.index")):
        assert time.monotonic() < deadline and procs[1].poll() is None, "worker 1 never reached step 10"
        time.sleep(0.05)
    os.kill(procs[1].pid, signal.SIGKILL)
    try:
        procs[0].wait(timeout=5)  # the chief fails or waits for its peer in the next all-reduce
    except subprocess.TimeoutExpired:
        procs[0].kill()
    for p in procs:
        p.communicate()
    assert procs[1].returncode == -signal.SIGKILL
    assert not (tmp_path / "ck0").exists() and not (tmp_path / "ck1").exists()

    errs = _finish(_start_workers(tmp_path, cfg, "--resume"))
    assert all("resumed from" in e for e in errs), [e[-2000:] for e in errs]
    a, b = (ModelCheckpoint.load(tmp_path / f"ck{i}") for i in range(2))
    assert a.meta["steps"] == 60
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


@pytest.mark.parametrize(("method", "tier"), [("omni", None), ("tfmot", 50), ("csp", 50)])
def test_two_workers_prune_alike_every_method(tmp_path, prepared, method, tier):
    """Each pruning method on two workers: identical weights and identical masks, each tier reached."""
    cfg = tmp_path / "dist.toml"
    text = (FIXTURES / "micro.toml").read_text()
    text = re.sub(r"\[train\][^\[]*", "[train]\nsteps = 12\nbatch_size = 8\ncheckpoint_every = 6\n\n", text)
    cfg.write_text(text + "[sparsity]\nupdate_every = 2\nblock = [1, 1]\n")  # a schedule that fits 12 steps
    a, b = _train_two_workers(
        tmp_path, cfg, "--method", method, *(["--tier", str(tier)] if tier else []), prepared=prepared
    )
    assert a.meta["method"] == method
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert set(a.masks) == set(b.masks) and a.masks
    for t, masks in a.masks.items():
        kept = sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())
        assert abs((1 - kept) - int(t.removeprefix("tier")) / 100) < 0.01, (t, kept)
        for k, m in masks.items():
            np.testing.assert_array_equal(m, b.masks[t][k], err_msg=f"{t} {k}")


def _epoch_loss(cfg, features, params):
    batcher = Batcher(features, cfg.train.batch_size, cfg.encoder.stack, cfg.train.seed)
    total = 0.0
    for step in range(len(batcher.buckets)):
        b = batcher.batch(step)
        logits = forward(
            cfg, {k: tf.constant(v)[None] for k, v in params.items()}, tf.constant(b.feats), tf.constant(b.pred_in)
        )[0]
        total += float(rnnt_loss(logits, b.labels, b.frames, b.label_lengths))
    return total / len(batcher.buckets)


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "--strategy", "multi-worker", "--out", str(tmp_path / "ck")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2 and "needs the TF_CONFIG environment variable" in r.stderr

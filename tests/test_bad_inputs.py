"""Bad input, one class per case: one sentence naming the problem, exit code 2, nothing written.

Runs the CLI in-process (`pipeline.cli.main`), so each case costs milliseconds; the
subprocess tests in test_cli.py prove the same for the installed entry point.
"""

import errno
import json
import os

import numpy as np
import pytest

from pipeline.checkpoint import ModelCheckpoint
from pipeline.cli import main
from pipeline.config import load_model_config
from pipeline.errors import ArtifactError, DataError, HostError
from pipeline.frontend import Normalizer
from pipeline.fsutil import atomic_write_bytes
from pipeline.model import param_shapes
from pipeline.tokenizer import CharTokenizer
from tests.conftest import FIXTURES

MICRO = str(FIXTURES / "micro.toml")


def _file(tmp, name, text):
    p = tmp / name
    p.write_text(text)
    return str(p)


# (case id, argv builder given tmp_path, expected words in the one error sentence)
CLI_CASES = [
    ("unknown-model", lambda t: ["build", "--target", "watch", "--model", "nosuch"], "unknown model 'nosuch'"),
    (
        "unknown-tier",
        lambda t: ["build", "--target", "watch", "--model", MICRO, "--tier", "60"],
        "unknown sparsity tier 60",
    ),
    (
        "tier-for-dense",
        lambda t: ["train", "--model", MICRO, "--tier", "50", "--out", str(t / "ck")],
        "method dense trains tier 0 only",
    ),
    (
        "per-tier-method-without-tier",
        lambda t: ["train", "--model", MICRO, "--method", "csp", "--out", str(t / "ck")],
        "pass --tier",
    ),
    ("unknown-method", lambda t: ["build", "--target", "watch", "--method", "magic"], "Invalid value for '--method'"),
    ("zero-steps", lambda t: ["build", "--target", "watch", "--steps", "0"], "Invalid value for '--steps'"),
    ("bench-tiers-not-integers", lambda t: ["bench", "sparsity", "--tiers", "5x"], "comma-separated integers"),
    ("bench-unknown-method", lambda t: ["bench", "sparsity", "--methods", "dense,magic"], "unknown method 'magic'"),
    (
        "bench-calibration-not-a-checkpoint",
        lambda t: ["bench", "calibration", "--init", str(t), "--report", str(t / "r")],
        "has no model.json",
    ),
    (
        "bench-calibration-seeds-not-integers",
        lambda t: ["bench", "calibration", "--init", str(t), "--seeds", "a"],
        "comma-separated integers",
    ),
    ("verify-folder-without-manifest", lambda t: ["verify", str(t)], "does not exist (not a device artifact folder)"),
    (
        "verify-manifest-not-json",
        lambda t: ["verify", str(t / "d")] if (t / "d").mkdir() or _file(t / "d", "manifest.json", "{oops") else [],
        "is not readable JSON",
    ),
    (
        "verify-manifest-fails-schema",
        lambda t: (
            ["verify", str(t / "d")]
            if (t / "d").mkdir() or _file(t / "d", "manifest.json", '{"schema_version": "1.0"}')
            else []
        ),
        "schema",
    ),
    (
        "fsdd-dir-is-a-file",
        lambda t: ["build", "--target", "watch", "--model", MICRO, "--data", "fsdd", "--fsdd-dir", _file(t, "f", "x")],
        "fsdd",
    ),
    (
        "train-manifest-missing",
        lambda t: [
            "build",
            "--target",
            "watch",
            "--model",
            MICRO,
            "--data",
            "manifest",
            "--train-manifest",
            str(t / "no.jsonl"),
            "--test-manifest",
            str(t / "no2.jsonl"),
        ],
        "no.jsonl",
    ),
    (
        "work-dir-not-writable",
        lambda t: [
            "build",
            "--target",
            "watch",
            "--model",
            MICRO,
            "--data",
            "synth",
            "--work-dir",
            _file(t, "blocker", "x") + "/w",
        ],
        "is a file, so the work folder cannot be written",
    ),
    (
        "model-config-unknown-field",
        lambda t: ["build", "--target", "watch", "--model", _file(t, "m.toml", "[encoder]\nlayerz = 2\n")],
        "layerz",
    ),
    (
        "model-config-wrong-type",
        lambda t: ["build", "--target", "watch", "--model", _file(t, "m.toml", "[encoder]\nunits = 'wide'\n")],
        "units",
    ),
    ("target-extends-cycle", lambda t: ["build", "--target", _file(t, "a.toml", 'extends = "a"\n')], "cycle"),
    (
        "init-without-aat",
        lambda t: ["train", "--model", MICRO, "--init", str(t), "--out", str(t / "ck")],
        "--init, --aat-steps and --aat-config belong to --aat",
    ),
    (
        "init-is-not-a-checkpoint",
        lambda t: ["train", "--aat", "--init", str(t), "--out", str(t / "ck")],
        "has no model.json",
    ),
    (
        "init-with-method",
        lambda t: ["train", "--aat", "--init", str(t), "--method", "omni", "--out", str(t / "ck")],
        "--init fine-tunes a trained checkpoint",
    ),
    (
        "aat-config-out-of-range",
        lambda t: ["build", "--target", "watch", "--model", _file(t, "m.toml", "[aat]\ndistill = 1.5\n")],
        "distill",
    ),
    (
        "sparsity-tiers-not-increasing",
        lambda t: ["build", "--target", "watch", "--model", _file(t, "m.toml", "[sparsity]\ntiers = [50, 0]\n")],
        "strictly increasing",
    ),
]


@pytest.mark.parametrize("case, argv, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(tmp_path, capsys, monkeypatch, case, argv, words):
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    args += [] if args[0] in ("verify", "bench") or "--work-dir" in args else ["--work-dir", str(tmp_path / "w")]
    if args[0] == "build":
        args += ["--out", str(tmp_path / "dist")]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    assert words.lower() in err.lower(), err
    assert not (tmp_path / "dist").exists() and not (tmp_path / "ck").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".tmp"))], (
        "half-written output left behind"
    )
    assert len(sorted(p.name for p in tmp_path.rglob("*"))) >= len(before)


def test_disk_full_during_write_is_a_host_error_and_leaves_nothing(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HostError, match="the disk is full"):
        atomic_write_bytes(tmp_path / "manifest.json", b"{}")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def _checkpoint(cfg, folder):
    tok = CharTokenizer(tuple("abc "))
    params = {k: np.zeros(s, np.float32) for k, s in param_shapes(cfg, tok.size).items()}
    ModelCheckpoint(cfg, params, tok, Normalizer((0.0,) * 40, (1.0,) * 40)).save(folder)


def test_corrupt_checkpoint_is_refused(tmp_path):
    cfg = load_model_config(MICRO)
    _checkpoint(cfg, tmp_path / "ck")
    (tmp_path / "ck" / "params.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ArtifactError, match="params.npz is corrupt"):
        ModelCheckpoint.load(tmp_path / "ck")
    (tmp_path / "ck" / "model.json").write_text("{")
    with pytest.raises(ArtifactError, match="model.json is corrupt"):
        ModelCheckpoint.load(tmp_path / "ck")


def test_checkpoint_from_another_config_is_refused(tmp_path):
    micro = load_model_config(MICRO)
    _checkpoint(micro, tmp_path / "ck")
    with pytest.raises(ArtifactError, match="different config"):
        ModelCheckpoint.load(tmp_path / "ck", expect=load_model_config("tiny"))
    info = json.loads((tmp_path / "ck" / "model.json").read_text())
    info["config"]["encoder"]["units"] = 32  # weights no longer match the config they claim
    (tmp_path / "ck" / "model.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="another model config"):
        ModelCheckpoint.load(tmp_path / "ck")


def test_utterance_longer_than_the_model_limit(tmp_path):
    from pipeline.audio import write_wav
    from pipeline.corpus import Utterance, read_manifest, write_manifest
    from pipeline.features import compute_training_features

    cfg = load_model_config(MICRO)
    write_wav(tmp_path / "long.wav", np.zeros(8000 * 13, np.float32), 8000)
    write_manifest(tmp_path / "m.jsonl", [Utterance("long", "long.wav", 13.0, "one", "s")])
    with pytest.raises(DataError, match="longer than the model's limit"):
        compute_training_features(read_manifest(tmp_path / "m.jsonl"), cfg, CharTokenizer(tuple("one ")), 0)


def test_sparse_tier_missing_from_checkpoint(tmp_path):
    from pipeline.errors import ConfigError

    cfg = load_model_config(MICRO)
    _checkpoint(cfg, tmp_path / "ck")
    with pytest.raises(ConfigError, match="holds tier\\(s\\) 0, not tier 80"):
        ModelCheckpoint.load(tmp_path / "ck").tier_params(80)

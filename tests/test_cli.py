"""User mistakes: one sentence, exit code 2, nothing half-written."""

import json

from tests.conftest import FIXTURES
from tests.helpers import run_cli as run


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_unknown_target(tmp_path):
    r = run("build", "--target", "toaster", "--out", str(tmp_path / "dist"), "--work-dir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert "unknown target 'toaster'" in one_sentence(r.stderr)
    assert not (tmp_path / "dist").exists()


def test_malformed_target_toml(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[device\n")
    r = run("build", "--target", str(bad), "--out", str(tmp_path / "dist"), "--work-dir", str(tmp_path / "w"))
    assert r.returncode == 2 and "not valid TOML" in one_sentence(r.stderr)
    assert not (tmp_path / "dist").exists()


def test_missing_dataset_directory(tmp_path):
    r = run(
        "build",
        "--target",
        "watch",
        "--data",
        "fsdd",
        "--fsdd-dir",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "dist"),
        "--work-dir",
        str(tmp_path / "w"),
    )
    assert r.returncode == 2 and "does not exist" in one_sentence(r.stderr)
    assert not (tmp_path / "dist").exists()


def test_corrupt_wav_in_user_corpus(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    row = json.dumps({"audio_filepath": "audio/bad.wav", "duration": 1.0, "text": "one"})
    (tmp_path / "train.jsonl").write_text(row + "\n")
    (tmp_path / "test.jsonl").write_text(row + "\n")
    r = run(
        "build",
        "--target",
        "watch",
        "--model",
        str(FIXTURES / "micro.toml"),
        "--data",
        "manifest",
        "--train-manifest",
        str(tmp_path / "train.jsonl"),
        "--test-manifest",
        str(tmp_path / "test.jsonl"),
        "--out",
        str(tmp_path / "dist"),
        "--work-dir",
        str(tmp_path / "w"),
    )
    assert r.returncode == 2 and "bad.wav is not a valid WAV file: its header is cut short" in one_sentence(r.stderr)
    assert not (tmp_path / "dist").exists()
    assert not list((tmp_path / "w" / "cache").glob("features/*/stage.json"))


def test_manifest_source_without_manifests():
    r = run("build", "--target", "watch", "--data", "manifest")
    assert r.returncode == 2 and "--train-manifest" in one_sentence(r.stderr)


def test_targets_lists_profiles():
    r = run("targets")
    assert r.returncode == 0 and "watch" in r.stdout and "tflm" in r.stdout


def test_broken_aat_recipe(tmp_path):
    (tmp_path / "recipe.toml").write_text("[aat]\nsteps = 0\n")
    r = run(
        "train",
        "--aat",
        "--aat-config",
        str(tmp_path / "recipe.toml"),
        "--init",
        str(tmp_path / "ck"),
        "--out",
        str(tmp_path / "out"),
    )
    assert r.returncode == 2 and "steps" in one_sentence(r.stderr)
    assert not (tmp_path / "out").exists()
    r = run("train", "--aat-config", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "belong to --aat" in r.stderr

"""Never destroy what is not ours, check before working, one clear sentence per problem.

One test (or more) per row of the hostile-user report: each asserts the exit code, that
the message names the problem, and that nothing the user had was touched and nothing
half-written was left. Cases that need no training run the CLI in-process (milliseconds);
those that need a real disk-full or a real permission problem run it in a child process
with a file-size limit (RLIMIT_FSIZE) or as an unprivileged user.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import wav_bytes, write_wav
from pipeline.cli import main
from pipeline.errors import DataError
from tests.conftest import FIXTURES, make_fsdd_folder

MICRO = str(FIXTURES / "micro.toml")


def _run(argv, capsys):
    """In-process CLI: (exit code, the error line)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    return exc.value.code, (lines[0] if lines else err)


def _build_argv(out: Path, work: Path, *args) -> list:
    """`pipeline build --target watch` of the micro model with `args`, writing to `out` with its cache in `work`."""
    return ["build", "--target", "watch", "--model", MICRO, *args, "--out", out, "--work-dir", work]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("three years of work")
    (path / "notes").mkdir(exist_ok=True)
    (path / "notes" / "todo.txt").write_text("back up")
    return _snapshot(path)


def _no_partials(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith((".partial", ".tmp"))], "half-written output left behind"


# ----------------------------------------------------------------------------- row 1, 2: outputs the pipeline did not
# write


def test_train_refuses_an_out_folder_holding_the_users_files_before_any_work(tmp_path, capsys):
    before = _user_folder(tmp_path / "D")
    t0 = time.monotonic()
    code, err = _run(
        ["train", "--model", MICRO, "--data", "synth", "--out", tmp_path / "D", "--work-dir", tmp_path / "w"], capsys
    )
    assert code == 2 and "already holds files the pipeline did not write" in err and str(tmp_path / "D") in err
    assert _snapshot(tmp_path / "D") == before
    assert time.monotonic() - t0 < 30 and not (tmp_path / "w" / "cache").exists()  # refused before the first stage


def test_train_refuses_an_out_folder_inside_the_dataset(tmp_path, capsys):
    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=2)
    before = _snapshot(fsdd)
    code, err = _run(
        [
            "train",
            "--model",
            MICRO,
            "--data",
            "fsdd",
            "--fsdd-dir",
            fsdd,
            "--out",
            fsdd / "recordings",
            "--work-dir",
            tmp_path / "w",
        ],
        capsys,
    )
    assert code == 2 and "never writes into a dataset" in err
    assert _snapshot(fsdd) == before


def test_build_refuses_a_device_folder_holding_a_user_file(tmp_path, capsys):
    (tmp_path / "D" / "watch").mkdir(parents=True)
    (tmp_path / "D" / "watch" / "mine.txt").write_text("keep me")
    code, err = _run(
        _build_argv(tmp_path / "D", tmp_path / "w", "--data", "synth"),
        capsys,
    )
    assert code == 2 and "did not write" in err and str(tmp_path / "D" / "watch") in err
    assert (tmp_path / "D" / "watch" / "mine.txt").read_text() == "keep me"


def test_a_work_folder_of_the_users_is_refused_and_ours_is_marked(tmp_path, capsys):
    before = _user_folder(tmp_path / "home")
    code, err = _run(
        _build_argv(tmp_path / "dist", tmp_path / "home", "--data", "synth"),
        capsys,
    )
    assert code == 2 and "work folder" in err and _snapshot(tmp_path / "home") == before
    from pipeline.cache import open_cache
    from pipeline.fsutil import MARKER

    open_cache(tmp_path / "fresh")
    assert json.loads((tmp_path / "fresh" / MARKER).read_text())["tool"] == "pipeline"
    open_cache(tmp_path / "fresh")  # ours: opened again


def test_out_and_work_folder_may_not_nest(tmp_path, capsys):
    code, err = _run(
        _build_argv(tmp_path / "w" / "dist", tmp_path / "w", "--data", "synth"),
        capsys,
    )
    assert code == 2 and "overlap" in err


def test_a_folder_the_pipeline_wrote_is_replaced_and_an_empty_one_used(tmp_path):
    from pipeline.errors import OutputError
    from pipeline.fsutil import atomic_directory

    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        with atomic_directory(folder, "test output") as d:
            (d / "a").write_text("1")
        with atomic_directory(folder, "test output") as d:  # ours now: replaced
            (d / "a").write_text("2")
        assert (folder / "a").read_text() == "2"
    (tmp_path / "new" / ".pipeline-output.json").unlink()
    with pytest.raises(OutputError, match="did not write"):
        with atomic_directory(tmp_path / "new", "test output"):
            pass


# ----------------------------------------------------------------------------- row 3: download onto a disk that fills


def _limited(max_bytes: int):
    def limit():  # the child's file-size limit: a write past it fails with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def _zip_of(src: Path, dest: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for p in (src / "recordings").iterdir():
            zf.write(p, f"fsdd-abc/recordings/{p.name}")
    return dest


def test_download_onto_a_disk_that_fills_leaves_nothing_and_says_so_in_one_sentence(tmp_path):
    src = make_fsdd_folder(tmp_path / "src", per_digit=3)
    archive = _zip_of(src, tmp_path / "fsdd.zip")
    dest = tmp_path / "out" / "fsdd"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "download-fsdd",
            str(dest),
            "--url",
            archive.as_uri(),
            "--sha256",
            "0" * 64,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited(200_000),
    )
    assert r.returncode == 3, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "cannot write" in line and len(line) < 300
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_download_into_a_file_or_a_folder_of_the_users_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = _run(["download-fsdd", tmp_path / "f", "--url", "file:///nonexistent.zip"], capsys)
    assert code == 2 and "is a file, not a folder" in err
    before = _user_folder(tmp_path / "data")
    code, err = _run(["download-fsdd", tmp_path / "data", "--url", "file:///nonexistent.zip"], capsys)
    assert code == 2 and "did not write" in err and _snapshot(tmp_path / "data") == before


# ----------------------------------------------------------------------------- row 6, 8, 10, 11: checked before any
# work


def test_absurd_corpus_size_is_refused_with_the_limit(tmp_path, capsys):
    (tmp_path / "m.toml").write_text('extends = "tiny"\n')
    text = (FIXTURES / "micro.toml").read_text().replace("train_utterances = 40", "train_utterances = 1000000000")
    (tmp_path / "big.toml").write_text(text)
    code, err = _run(
        [
            "build",
            "--target",
            "watch",
            "--model",
            tmp_path / "big.toml",
            "--out",
            tmp_path / "d",
            "--work-dir",
            tmp_path / "w",
        ],
        capsys,
    )
    assert code == 2 and "train_utterances" in err and "at most 100,000" in err


def test_empty_model_config_is_refused(tmp_path, capsys):
    (tmp_path / "empty.toml").write_text("# nothing yet\n")
    code, err = _run(
        [
            "build",
            "--target",
            "watch",
            "--model",
            tmp_path / "empty.toml",
            "--out",
            tmp_path / "d",
            "--work-dir",
            tmp_path / "w",
        ],
        capsys,
    )
    assert code == 2 and "is empty" in err


@pytest.mark.parametrize("blocker", ["file", "parent-is-file"])
def test_an_out_path_that_cannot_be_a_folder_is_refused_before_training(tmp_path, capsys, blocker):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if blocker == "file" else tmp_path / "f" / "dist"
    code, err = _run(["train", "--model", MICRO, "--data", "synth", "--out", out, "--work-dir", tmp_path / "w"], capsys)
    assert code == 2 and "is a file" in err
    assert not (tmp_path / "w" / "cache").exists()


def _user_corpus(tmp_path: Path, train_text: str, test_text: str) -> list[str]:
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "a.wav", 0.1 * np.sin(np.arange(8000) / 5), 8000)
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"audio_filepath": "audio/a.wav", "duration": 1.0, "text": train_text}) + "\n"
    )
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"audio_filepath": "audio/a.wav", "duration": 1.0, "text": test_text}) + "\n"
    )
    return [
        "--data",
        "manifest",
        "--train-manifest",
        str(tmp_path / "train.jsonl"),
        "--test-manifest",
        str(tmp_path / "test.jsonl"),
    ]


def test_a_test_transcript_the_vocabulary_cannot_spell_is_refused_before_training(tmp_path, capsys):
    data = _user_corpus(tmp_path, "one two", "café")
    code, err = _run(
        ["build", "--target", "watch", "--model", MICRO, *data, "--out", tmp_path / "d", "--work-dir", tmp_path / "w"],
        capsys,
    )
    assert code == 2 and "test.jsonl" in err and "'é'" in err
    assert not (tmp_path / "w" / "cache").exists()
    code, err = _run(
        _build_argv(tmp_path / "audio" / "d", tmp_path / "w", *data),
        capsys,
    )
    assert code == 2 and "never writes into a dataset" in err


def test_bench_latency_refuses_zero_threads(capsys):
    code, err = _run(["bench", "latency", "--threads", "0"], capsys)
    assert code == 2 and "at least 1" in err


def test_verify_refuses_a_negative_limit(tmp_path, capsys):
    code, err = _run(["verify", tmp_path, "--limit", "-1"], capsys)
    assert code == 2 and "--limit" in err


def test_an_fsdd_folder_the_user_named_must_exist_no_silent_fallback(tmp_path, capsys):
    code, err = _run(
        _build_argv(tmp_path / "d", tmp_path / "w", "--fsdd-dir", tmp_path / "nonexistent"),
        capsys,
    )
    assert code == 2 and "does not exist" in err and str(tmp_path / "nonexistent") in err
    (tmp_path / "file").write_text("x")
    code, err = _run(
        _build_argv(tmp_path / "d", tmp_path / "w", "--fsdd-dir", tmp_path / "file"),
        capsys,
    )
    assert code == 2 and "is a file, not a folder" in err


def test_half_a_dataset_is_refused(tmp_path, capsys):
    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=4)
    for p in sorted((fsdd / "recordings").iterdir())[::2]:
        p.unlink()
    code, err = _run(
        _build_argv(tmp_path / "d", tmp_path / "w", "--data", "fsdd", "--fsdd-dir", fsdd),
        capsys,
    )
    assert code == 2 and "is incomplete" in err


def test_too_little_disk_is_refused_with_the_estimate(tmp_path, capsys):
    from dataclasses import replace

    from pipeline.config import load_model_config
    from pipeline.data import DataOptions, resolve_source
    from pipeline.errors import HostError
    from pipeline.preflight import check_resources, estimate

    cfg = load_model_config("tiny")
    need = estimate(cfg, resolve_source(DataOptions("synth")))
    assert 100e6 < need.disk_bytes < 20e9  # the tiny recipe: corpus + features, about a gigabyte
    huge = replace(
        cfg,
        data=replace(cfg.data, train_utterances=100_000, synth_train_utterances=100_000),
        augment=replace(cfg.augment, copies=20),
    )
    with pytest.raises(HostError, match="free some space|memory"):
        check_resources(huge, resolve_source(DataOptions("synth")), tmp_path)


# ----------------------------------------------------------------------------- row 7: environment problems are
# HostErrors


def test_a_full_disk_while_writing_a_training_checkpoint_is_a_host_error(tmp_path):
    script = f"""
import sys
from pathlib import Path
import numpy as np
from pipeline.config import load_model_config
from pipeline.errors import HostError
from pipeline.features import FeatureSet
from pipeline.frontend import Normalizer
from pipeline.tokenizer import CharTokenizer
from pipeline.train import Trainer
rng = np.random.default_rng(0)
tok = CharTokenizer(tuple("abc "))
fs = FeatureSet([rng.normal(size=(30, 40)).astype(np.float32) for _ in range(16)],
                [rng.integers(1, 4, size=3).astype(np.int32) for _ in range(16)],
                Normalizer((0.0,) * 40, (1.0,) * 40), tok)
try:
    Trainer(load_model_config({MICRO!r}), fs, Path({str(tmp_path / "w")!r}), steps=4).run()
except HostError as exc:
    print(exc); sys.exit(3)
"""
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, preexec_fn=_limited(30_000)
    )
    assert r.returncode == 3, r.stderr[-2000:]
    assert "cannot write the training checkpoint" in r.stdout


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply: nothing for a normal user; for root, `setpriv` without the
    capabilities that let root read anything."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_an_unreadable_dataset_folder_or_file_is_a_host_error(tmp_path):
    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=1)
    build = _build_argv(tmp_path / "d", tmp_path / "w", "--data", "fsdd", "--fsdd-dir", fsdd)
    args = [*_unprivileged(), sys.executable, "-m", "pipeline.cli", *map(str, build)]
    one = sorted((fsdd / "recordings").iterdir())[0]
    one.chmod(0o000)
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 3 and "permission denied" in r.stderr and one.name in r.stderr, r.stderr[-2000:]
        one.chmod(0o644)
        (fsdd / "recordings").chmod(0o000)
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 3 and "permission denied" in r.stderr and "recordings" in r.stderr, r.stderr[-2000:]
    finally:
        (fsdd / "recordings").chmod(0o755)
        one.chmod(0o644)


# ----------------------------------------------------------------------------- row 9, 10: messages that say what is
# wrong


WAV = wav_bytes(np.zeros(800), 8000)


def _header(rate: int) -> bytes:
    b = bytearray(WAV)
    b[24:28] = rate.to_bytes(4, "little")
    return bytes(b)


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("empty", b"", "0 bytes, not a WAV file"),
        ("header-cut", WAV[:30], "header is cut short"),
        ("data-cut", WAV[:144], "truncated: its header says 1,600 bytes of samples, the file holds 100"),
        ("zero-hz", _header(0), "sample rate of 0 Hz"),
        ("one-hz", _header(1), "sampled at 1 Hz"),
        ("text", b"hello, I am not audio", "not a WAV file"),
    ],
)
def test_a_bad_audio_file_is_named_with_what_is_wrong(tmp_path, name, data, words):
    from pipeline.audio import read_wav

    p = tmp_path / f"{name}.wav"
    p.write_bytes(data)
    with pytest.raises(DataError, match=words) as exc:
        read_wav(p, 8000)
    assert str(p) in str(exc.value)


def test_float_and_24_bit_wavs_are_read(tmp_path):
    import soundfile

    from pipeline.audio import read_wav

    x = (0.5 * np.sin(np.arange(800) / 7)).astype(np.float32)
    for subtype in ("FLOAT", "PCM_24", "PCM_U8"):
        soundfile.write(tmp_path / f"{subtype}.wav", x, 8000, subtype=subtype)
        np.testing.assert_allclose(read_wav(tmp_path / f"{subtype}.wav", 8000), x, atol=1 / 100)


def test_an_absurd_duration_names_the_limit(tmp_path):
    from pipeline.corpus import read_manifest

    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1e12, "text": "one"}) + "\n")
    with pytest.raises(DataError, match="at most 3600"):
        read_manifest(tmp_path / "m.jsonl")


def test_a_read_only_out_folder_is_a_host_error_before_training(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        r = subprocess.run(
            [
                *_unprivileged(),
                sys.executable,
                "-m",
                "pipeline.cli",
                "train",
                "--model",
                MICRO,
                "--data",
                "synth",
                "--out",
                str(tmp_path / "ro" / "ck"),
                "--work-dir",
                str(tmp_path / "w"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 3 and "is not writable" in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "w" / "cache").exists()
    finally:
        (tmp_path / "ro").chmod(0o755)

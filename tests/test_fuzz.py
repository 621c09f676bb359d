"""Fuzz the loaders: whatever the bytes, only the project's own errors escape, and nothing is written.

Every loader a user's file reaches is fuzzed: the WAV reader (and its header check), the
TOML loader (models, targets, calibration recipes, with `extends`), the JSONL corpus
reader, and the device-folder manifest loader with its contract checks (random JSON, and
random edits of a real manifest beside its real graphs). The test suite runs the
`ci` profile (150 inputs each, tests/conftest.py); the fuzz command runs 2,000 each:

    .venv/bin/python -m pytest tests/test_fuzz.py -p no:randomly --hypothesis-profile fuzz --hypothesis-show-statistics
"""

import copy
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.audio import check_audio, read_wav, wav_bytes
from pipeline.calibrate import CalibrationRecipe
from pipeline.config import ModelConfig
from pipeline.corpus import read_manifest
from pipeline.errors import PipelineError
from pipeline.targets import TargetProfile
from pipeline.tomlconf import load_named
from pipeline.verify import check_folder

KEYS = [
    "device",
    "runtime",
    "threads",
    "npu",
    "budgets",
    "rtf",
    "encoder",
    "units",
    "train",
    "steps",
    "name",
    "extends",
    "split",
    "utterances",
    "sparsity",
    "tiers",
    "block",
    "method",
    "tier_batch",
    "data",
    "train_utterances",
    "augment",
    "copies",
    "frontend",
]
scalars = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(max_size=8),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=10,
)
json_values = st.recursive(
    st.one_of(scalars, st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=10,
)


def _toml(d: dict, prefix: str = "") -> str:
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((f"{prefix}{k}", v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for name, t in tables:
        lines.append(f"[{name}]")
        lines.append(_toml(t, f"{name}."))
    return "\n".join(lines)


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _only_own_errors(folder: Path, fn, *args) -> None:
    """`fn(*args)` raises nothing or a `PipelineError`, and `folder` holds what it held before."""
    before = _listing(folder)
    try:
        fn(*args)
    except PipelineError:
        pass
    assert _listing(folder) == before, "a loader wrote or deleted a file"


@given(
    st.one_of(
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(
                ["device", "budgets", "build", "name", "encoder", "train", "split", "extends", "sparsity", "data"]
            ),
            toml_values,
            max_size=4,
        ).map(_toml),
    )
)
def test_config_loaders_raise_only_config_errors(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.toml"
        p.write_text(text)
        (Path(d) / "base.toml").write_text('description = "base"\n[encoder]\nunits = 32\n')
        for cls in (TargetProfile, ModelConfig, CalibrationRecipe):
            _only_own_errors(Path(d), load_named, cls, str(p), Path(d), "config")


@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.dictionaries(
                st.sampled_from(["audio_filepath", "duration", "text", "speaker", "id"]),
                st.one_of(
                    st.text(max_size=10), st.floats(), st.integers(), st.none(), st.lists(st.integers(), max_size=2)
                ),
                max_size=5,
            ).map(json.dumps),
        ),
        max_size=5,
    )
)
def test_corpus_reader_raises_only_data_errors(lines):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.jsonl"
        p.write_text("\n".join(lines))
        _only_own_errors(Path(d), read_manifest, p)


GOOD_WAV = wav_bytes(np.sin(np.arange(800) / 3), 8000)


@st.composite
def damaged_wavs(draw):
    """A valid WAV with random bytes overwritten (header fields included), cut, or extended."""
    data = bytearray(GOOD_WAV)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, 60))
        data[pos : pos + 4] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data[: draw(st.integers(0, len(data)))])


@given(st.one_of(st.binary(max_size=300), damaged_wavs(), st.binary(max_size=200).map(lambda b: GOOD_WAV[:44] + b)))
def test_wav_reader_raises_only_data_errors(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.wav"
        p.write_bytes(data)
        for rate in (8000, 16000):
            _only_own_errors(Path(d), read_wav, p, rate)
        _only_own_errors(Path(d), check_audio, p)


@given(st.one_of(st.text(max_size=100), st.dictionaries(st.text(max_size=12), toml_values, max_size=6).map(json.dumps)))
def test_manifest_loader_raises_only_artifact_errors_on_random_text(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "manifest.json").write_text(text)
        _only_own_errors(Path(d), check_folder, Path(d))


@st.composite
def edited(draw, manifest):
    """`manifest` with one to three random edits: a value replaced by random JSON, a key deleted, or a list cut."""
    m = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        node, key = None, None
        cur = m
        for _depth in range(draw(st.integers(1, 5))):
            if isinstance(cur, dict) and cur:
                k = draw(st.sampled_from(sorted(cur)))
            elif isinstance(cur, list) and cur:
                k = draw(st.integers(0, len(cur) - 1))
            else:
                break
            node, key, cur = cur, k, cur[k]
        if node is None:
            continue
        action = draw(st.sampled_from(["replace", "delete", "cut"]))
        if action == "delete" and isinstance(node, dict):
            del node[key]
        elif action == "cut" and isinstance(node[key], list):
            node[key] = node[key][: draw(st.integers(0, max(0, len(node[key]) - 1)))]
        else:
            node[key] = draw(json_values)
    return m


@pytest.fixture(scope="module")
def device_copy(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "watch"
    shutil.copytree(built[1].parent, folder)
    return folder, json.loads((folder / "manifest.json").read_text())


@pytest.mark.slow
def test_manifest_loader_raises_only_artifact_errors_on_edited_manifests(device_copy):
    folder, manifest = device_copy

    @given(edited(manifest))  # a real manifest needs the built graphs beside it, so the strategy is made here
    def check(m):
        (folder / "manifest.json").write_text(json.dumps(m))
        _only_own_errors(folder, check_folder, folder)

    check()

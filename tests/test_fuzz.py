"""Fuzz the loaders: whatever the bytes, only the project's own errors may escape."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.audio import read_wav, wav_bytes
from pipeline.calibrate import CalibrationRecipe
from pipeline.config import ModelConfig
from pipeline.corpus import read_manifest
from pipeline.errors import PipelineError
from pipeline.targets import TargetProfile
from pipeline.tomlconf import load_named
from pipeline.verify import load_manifest

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
toml_values = st.recursive(
    st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32), st.booleans(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["device", "runtime", "threads", "npu", "budgets", "rtf", "encoder", "units", "train", "steps", "name", "extends", "split", "utterances", "sparsity", "tiers", "block", "method", "tier_batch"]), inner, max_size=4)),
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


def _expect_own_errors(fn, *args):
    try:
        fn(*args)
    except PipelineError:
        pass


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.dictionaries(st.sampled_from(["device", "budgets", "build", "name", "encoder", "train", "split", "extends", "sparsity"]), toml_values, max_size=4).map(_toml)))
def test_config_loaders_raise_only_config_errors(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.toml"
        p.write_text(text)
        for cls in (TargetProfile, ModelConfig, CalibrationRecipe):
            _expect_own_errors(load_named, cls, str(p), Path(d), "config")


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=60), st.dictionaries(st.sampled_from(["audio_filepath", "duration", "text", "speaker", "id"]),
                                                                 st.one_of(st.text(max_size=10), st.floats(), st.integers(), st.none(), st.lists(st.integers(), max_size=2)), max_size=5).map(json.dumps)), max_size=5))
def test_corpus_reader_raises_only_data_errors(lines):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.jsonl"
        p.write_text("\n".join(lines))
        _expect_own_errors(read_manifest, p)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: wav_bytes(__import__("numpy").zeros(10), 8000)[:44] + b)))
def test_wav_reader_raises_only_data_errors(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.wav"
        p.write_bytes(data)
        _expect_own_errors(read_wav, p, 8000)


@SETTINGS
@given(st.one_of(st.text(max_size=100), st.dictionaries(st.text(max_size=12), toml_values, max_size=6).map(json.dumps)))
def test_manifest_loader_raises_only_artifact_errors(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "manifest.json").write_text(text)
        _expect_own_errors(load_manifest, Path(d))

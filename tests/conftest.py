from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import pipeline  # noqa: F401  (sets the environment TensorFlow reads when it is imported)

FIXTURES = Path(__file__).parent / "fixtures"

# property-based tests: `ci` in the test suite, `fuzz` for the fuzz command (--hypothesis-profile fuzz)
settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
SHARED_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


@pytest.fixture
def tone_wav(tmp_path):
    """A 0.5 s 440 Hz tone at 8 kHz as a 16-bit WAV file."""
    from pipeline.audio import write_wav

    t = np.arange(4000) / 8000
    p = tmp_path / "tone.wav"
    write_wav(p, 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
    return p


def make_fsdd_folder(
    root: Path, speakers=("george", "jackson", "nicolas", "theo", "yweweler"), per_digit=6, sr=8000
) -> Path:
    """A tiny FSDD look-alike: tones at digit-specific pitches, named like the real files."""
    from pipeline.audio import write_wav

    rec = root / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s, spk in enumerate(speakers):
        for d in range(10):
            for i in range(per_digit):
                n = int(sr * rng.uniform(0.25, 0.4))
                t = np.arange(n) / sr
                write_wav(rec / f"{d}_{spk}_{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 60 * d + 5 * s) * t), sr)
    return root


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The micro model built for the watch on synthesized speech, once per test run: (paths, manifest path, seconds)."""
    import time

    from pipeline.build import BuildPaths, build
    from pipeline.data import DataOptions

    root = tmp_path_factory.mktemp("build")
    paths = BuildPaths(root / "dist", root / "work")
    t0 = time.monotonic()
    manifest_path = build("watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"))
    return paths, manifest_path, time.monotonic() - t0


@pytest.fixture(scope="module")
def random_features():
    """24 random utterances (20-60 frames of 40 mels) with 2-7 tokens of a 4-character vocabulary."""
    from pipeline.features import FeatureSet
    from pipeline.frontend import Normalizer
    from pipeline.tokenizer import CharTokenizer

    rng = np.random.default_rng(0)
    tok = CharTokenizer(tuple("abc "))
    feats = [rng.normal(size=(int(rng.integers(20, 60)), 40)).astype(np.float32) for _ in range(24)]
    labels = [rng.integers(1, tok.size, size=int(rng.integers(2, 8))).astype(np.int32) for _ in range(24)]
    return FeatureSet(feats, labels, Normalizer((0.0,) * 40, (1.0,) * 40), tok)

"""Training features on disk: shards written a shard at a time, read a batch at a time, resumed after an interruption,
and the same numbers as features computed in one pass in memory."""

import os

import numpy as np
import pytest

from pipeline.audio import write_wav
from pipeline.config import load_model_config
from pipeline.corpus import Utterance, read_manifest, write_manifest
from pipeline.errors import ArtifactError
from pipeline.features import FeatureShards, write_training_features
from pipeline.frontend import Normalizer, _minus_running_mean
from pipeline.tokenizer import CharTokenizer
from pipeline.train import Batcher

from .conftest import FIXTURES

WORDS = ("one", "two", "three", "four")


def _reference_normalizer(feats, prior_frames):
    """NumPy's mean and std over the concatenation of every utterance (the statistics held in memory at once)."""
    nonempty = [f.astype(np.float64) for f in feats if len(f)]
    allf = np.concatenate(nonempty)
    mean = allf.mean(0)
    if prior_frames:
        allf = np.concatenate([_minus_running_mean(f, mean, prior_frames) for f in nonempty])
    return tuple(map(float, mean)), tuple(map(float, np.maximum(allf.std(0), 1e-3)))


@pytest.mark.parametrize("prior_frames", [0, 100])
def test_normalizer_fit_streamed_equals_the_statistics_of_everything_at_once_to_the_bit(prior_frames):
    rng = np.random.default_rng(3)
    feats = [(rng.standard_normal((int(rng.integers(0, 300)), 40)) * 4 + 2).astype(np.float32) for _ in range(200)]
    reads = []

    def again():
        reads.append(1)
        return iter(feats)

    streamed = Normalizer.fit(again, prior_frames)
    assert len(reads) == 3  # read from the source three times, never held whole
    assert (streamed.mean, streamed.std) == _reference_normalizer(feats, prior_frames)
    assert Normalizer.fit(feats, prior_frames) == streamed


@pytest.fixture
def corpus(tmp_path):
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    rng = np.random.default_rng(0)
    utts = []
    for i in range(11):
        n = int(rng.integers(2400, 6400))
        write_wav(tmp_path / f"u{i}.wav", (rng.standard_normal(n) * 0.1).astype(np.float32), cfg.frontend.sample_rate)
        utts.append(Utterance(f"u{i}", f"u{i}.wav", n / cfg.frontend.sample_rate, WORDS[i % 4], "s"))
    write_manifest(tmp_path / "m.jsonl", utts)
    return cfg, read_manifest(tmp_path / "m.jsonl"), CharTokenizer.fit(WORDS)


def test_shards_resume_after_an_interruption_and_equal_one_pass(tmp_path, corpus):
    cfg, c, tok = corpus
    one = write_training_features(c, cfg, tok, 7, tmp_path / "one", 800, shard_utterances=100)
    folder = tmp_path / "sharded"
    assert write_training_features(c, cfg, tok, 7, folder, 800, shard_utterances=3, stop_after_shards=2) is None
    assert sorted(p.name for p in folder.glob("*.json")) == ["00000.json", "00001.json"]  # no index yet
    first = os.stat(folder / "00000.f32")
    sharded = write_training_features(c, cfg, tok, 7, folder, 800, shard_utterances=3)
    assert os.stat(folder / "00000.f32").st_mtime_ns == first.st_mtime_ns  # the complete shards were not redone
    assert len(list(folder.glob("*.f32"))) == 4

    loaded = FeatureShards.load(folder)
    n, copies = len(c), cfg.augment.copies
    assert len(loaded) == len(one) == n * (1 + copies)
    assert loaded.normalizer == one.normalizer and loaded.tokenizer == one.tokenizer
    a, la = loaded.rows(range(len(loaded)))
    b, lb = one.rows(range(len(one)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
    # rows 0..n-1 are the clean utterances, in corpus order, with their transcripts
    for i, u in enumerate(c.utterances):
        assert tok.decode(la[i].tolist()) == u.text
        assert all(tok.decode(la[n + i * copies + k].tolist()) == u.text for k in range(copies))
    assert sharded is not None and np.array_equal(sharded.lengths, one.lengths)


def test_batches_read_from_disk_equal_batches_from_memory(tmp_path, corpus):
    cfg, c, tok = corpus
    shards = write_training_features(c, cfg, tok, 7, tmp_path / "f", 0, shard_utterances=4)
    memory = shards.in_memory()
    on_disk, in_ram = Batcher(shards, 5, 3, seed=1), Batcher(memory, 5, 3, seed=1)
    prefetched = list(on_disk.prefetched(0, 12))
    for step in range(12):
        x, y = on_disk.batch(step), in_ram.batch(step)
        for field in ("feats", "pred_in", "labels", "frames", "label_lengths"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
            np.testing.assert_array_equal(getattr(prefetched[step], field), getattr(y, field))


def test_a_truncated_shard_is_a_clear_error(tmp_path, corpus):
    cfg, c, tok = corpus
    shards = write_training_features(c, cfg, tok, 7, tmp_path / "f", 0, shard_utterances=4)
    path = tmp_path / "f" / "00001.f32"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="00001.f32 is truncated"):
        FeatureShards.load(tmp_path / "f").rows(range(len(shards)))
    (tmp_path / "f" / "index.json").write_text("{")
    with pytest.raises(ArtifactError, match="feature cache .* is unreadable"):
        FeatureShards.load(tmp_path / "f")

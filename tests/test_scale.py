"""`pipeline bench scale` on the micro model: a corpus of a given size, features throughput, a training process's peak
memory and steps per second, in a report."""

import csv

import pytest

from pipeline.config import load_model_config
from pipeline.errors import ConfigError
from pipeline.scale import bench_scale, corpus_config

from .conftest import FIXTURES


def test_corpus_config_draws_the_hours_asked_for():
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    small, large = corpus_config(cfg, 2), corpus_config(cfg, 20)
    assert large.data.train_utterances == pytest.approx(10 * small.data.train_utterances, rel=1e-3)
    assert small.name.endswith("_2h") and corpus_config(cfg, 0.5).name.endswith("_0p5h")
    assert small.synthesized == {} and small.train == cfg.train and small.augment == cfg.augment


def test_bench_scale_reports_throughput_memory_and_speed(tmp_path):
    rows = bench_scale(str(FIXTURES / "micro.toml"), [0.01], [1], 3, tmp_path / "w", tmp_path / "report")
    (r,) = rows
    # near the hours asked for (sized again from the first draw when the estimate missed by more than 3%)
    assert 0.0094 <= r.hours <= 0.0106 and r.utterances > 5 and r.feature_rows >= r.utterances
    assert r.features_realtime > 1 and r.features_seconds > 0
    assert r.workers == 1 and r.steps == 3 and r.steps_per_second > 0
    assert 100 < r.peak_rss_mb < 8000  # a TensorFlow process, measured from the outside
    with (tmp_path / "report" / "scale.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["peak_rss_mb"]) == r.peak_rss_mb
    assert "| 0.01 |" in (tmp_path / "report" / "scale.md").read_text()
    with pytest.raises(ConfigError, match="positive"):
        bench_scale(str(FIXTURES / "micro.toml"), [0], [1], 3, tmp_path / "w", tmp_path / "r2")

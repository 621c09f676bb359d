"""Bench commands: the report writer and the latency probe (the long runs themselves are commands, not tests)."""

from dataclasses import replace

import pytest

from pipeline.bench import Row, bench_latency, width_config, write_report
from tests.conftest import FIXTURES


def _row(method, tier, wer, sparse=None, seconds=100.0, cycles=1000):
    return Row(
        method,
        tier,
        tier / 100,
        1000,
        int(1000 * (1 - tier / 100)),
        wer,
        wer,
        5000,
        sparse,
        4000,
        cycles,
        10 * cycles,
        seconds,
        100,
    )


def test_report_has_table_ratios_and_pareto_plot(tmp_path):
    rows = [
        _row("dense", 0, 0.2),
        _row("tfmot", 90, 0.4, 1500, cycles=400),
        _row("omni", 0, 0.21, seconds=150.0),
        _row("omni", 90, 0.42, 1400, seconds=150.0, cycles=380),
        _row("csp", 90, 0.38, 1450, cycles=390),
    ]
    words = [5] * 10
    errors = {("tfmot", 90): {"int8": [2] * 10, "words": words}, ("omni", 90): {"int8": [2] * 9 + [3], "words": words}}
    write_report(rows, tmp_path / "rep", "micro", 100, errors)
    md = (tmp_path / "rep" / "sparsity.md").read_text()
    assert "Omni wall time / dense wall time at equal steps: 1.50" in md
    assert (
        "tier 90: omni int8 WER 42.0% vs TFMOT 40.0% (ratio 1.05, target <= 1.10; omni - TFMOT +2.0 points, 95% CI "
        "+0.0..+6.0" in md
    )
    assert "CSP int8 WER 38.0% vs TFMOT magnitude pruning 40.0%" in md
    assert "0.38x dense" in md  # omni tier 90 NPU cycles per encoder chunk
    csv_lines = (tmp_path / "rep" / "sparsity.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("method,tier,sparsity")
    assert (tmp_path / "rep" / "sparsity_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_gives_no_wall_time_ratio_across_runs(tmp_path):
    rows = [_row("dense", 0, 0.2), _row("omni", 0, 0.21, seconds=150.0)]
    write_report(rows, tmp_path / "rep", "micro", 100, merged={("dense", 0)})
    md = (tmp_path / "rep" / "sparsity.md").read_text()
    assert "Omni wall time / dense wall time: not given" in md and "1.50" not in md


def test_latency_probe_reports_positive_real_time_factors():
    rows = bench_latency(str(FIXTURES / "micro.toml"), [1], runs=10)
    assert len(rows) == 1 and 0 < rows[0]["rtf_p50"] <= rows[0]["rtf_p90"] < 1


def test_rows_round_trip_through_the_csv_for_merging(tmp_path):
    from pipeline.bench import read_rows

    rows = [_row("dense", 0, 0.2), _row("omni", 90, 0.42, 1400, seconds=150.0)]
    write_report(rows, tmp_path / "rep", "micro", 100)
    assert read_rows(tmp_path / "rep" / "sparsity.csv") == rows


def test_an_older_report_without_the_newer_columns_still_merges(tmp_path):
    from pipeline.bench import read_rows

    write_report([_row("dense", 0, 0.2)], tmp_path / "rep", "micro", 100)
    lines = (tmp_path / "rep" / "sparsity.csv").read_text().splitlines()
    old = [",".join(c.split(",")[:-3]) for c in lines]  # without sparse_weight_bytes, sparse_nonzero, encoder_units
    (tmp_path / "old.csv").write_text("\n".join(old) + "\n")
    (row,) = read_rows(tmp_path / "old.csv")
    assert row.method == "dense" and row.sparse_weight_bytes is None


def test_utterance_errors_sum_to_the_corpus_wer():
    import jiwer

    from pipeline.verify import utterance_errors

    refs = ["one two three", "four five", "six", "seven eight nine oh"]
    hyps = ["one three", "four five five", "", "seven eight nine oh"]
    errs = utterance_errors(refs, hyps)
    assert errs == [1, 1, 1, 0]
    assert abs(sum(errs) / sum(len(r.split()) for r in refs) - jiwer.wer(refs, hyps)) < 1e-12


def test_paired_bootstrap_interval():
    import numpy as np
    import pytest

    from pipeline.verify import paired_bootstrap

    rng = np.random.default_rng(0)
    words = [4] * 200
    a = list(rng.integers(0, 2, 200))
    assert paired_bootstrap(a, a, words) == (0.0, 0.0, 0.0)  # the same decodes: no difference at all
    worse = [e + 1 for e in a]  # one more error in every utterance: +25 points, an interval far from 0
    diff, lo, hi = paired_bootstrap(a, worse, words)
    assert diff == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    noisy = list(rng.integers(0, 2, 200))  # another draw of the same error rate: the interval spans 0
    diff, lo, hi = paired_bootstrap(a, noisy, words)
    assert lo < diff < hi and lo < 0 < hi
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 2], [3])


def test_quant_report_states_the_interval_and_significant_tiers(tmp_path):
    from pipeline.bench import QuantRow, write_quant_report

    def row(tier, diff, lo, hi):
        return QuantRow(
            "omni",
            tier,
            0.15,
            0.16,
            0.15,
            0.16,
            0.16 + diff,
            0.01,
            0.01 + diff,
            None,
            100,
            100,
            True,
            400,
            60.0,
            diff,
            lo,
            hi,
        )

    write_quant_report([row(0, -0.004, -0.012, 0.004), row(90, 0.02, 0.006, 0.034)], tmp_path / "r", "micro")
    md = (tmp_path / "r" / "quant.md").read_text()
    assert "| -0.4 (-1.2..+0.4) |" in md and "| +2.0 (+0.6..+3.4) |" in md
    assert "AAT worse at 90; AAT better at no tier." in md
    assert "NO, at tier(s) 90" in md


def test_calibration_report_states_each_seed_the_spread_and_the_furthest_difference(tmp_path):
    from pipeline.bench import CalibrationRow, write_calibration_report
    from pipeline.calibrate import load_calibration_recipe

    rows = [
        CalibrationRow(70, 11, 0.18, 0.19),
        CalibrationRow(70, 12, 0.18, 0.21, 0.02, 0.004, 0.036),
        CalibrationRow(70, 13, 0.18, 0.18, -0.01, -0.02, 0.0),
        CalibrationRow(90, 11, 0.5, 0.6),
        CalibrationRow(90, 12, 0.5, 0.55, -0.05, -0.08, -0.02),
        CalibrationRow(90, 13, 0.5, 0.62, 0.02, 0.0, 0.04),
    ]
    write_calibration_report(rows, tmp_path / "r", "micro", load_calibration_recipe("default"))
    md = (tmp_path / "r" / "calibration.md").read_text()
    assert "| 70 | 18.0% | 19.0% | 21.0% | 18.0% | 3.0 | +2.0 (+0.4..+3.6) |" in md
    assert "| 90 | 50.0% | 60.0% | 55.0% | 62.0% | 7.0 | -5.0 (-8.0..-2.0) |" in md
    assert "Largest spread: 7.0 points at tier 90." in md
    assert len((tmp_path / "r" / "calibration.csv").read_text().splitlines()) == 1 + len(rows)


def test_the_dense_width_baseline_says_whether_pruning_won_at_each_size(tmp_path):
    rows = [
        _row("dense", 0, 0.08),
        replace(_row("dense-width", 0, 0.10), bytes_int8_dense=2500, encoder_units=80),
        replace(_row("dense-width", 0, 0.15), bytes_int8_dense=1200, encoder_units=48),
        _row("omni", 70, 0.17, 2400),  # 2,400 B: w48 fits (15.0%), w80 does not
        _row("omni", 90, 0.30, 1000),  # smaller than every dense model
    ]
    write_report(rows, tmp_path / "rep", "micro", 100)
    md = (tmp_path / "rep" / "sparsity.md").read_text()
    assert "| dense-width (80 units) | 0 |" in md
    assert (
        "- omni tier 70, int8 WER 17.0%: by shipped .tflite bytes (2,400 B) the best dense model no larger is "
        "dense-width w48 at 15.0% (1,200 B): pruning loses by 2.0 points" in md
    )
    assert "- omni tier 90, int8 WER 30.0%: no dense model is as small by shipped .tflite bytes (1,000 B)" in md
    from pipeline.bench import read_rows

    assert read_rows(tmp_path / "rep" / "sparsity.csv") == rows


def test_a_width_config_scales_encoder_predictor_and_joiner_alike():
    from pipeline.config import load_model_config

    cfg = load_model_config("tiny")
    w = width_config(cfg, 80)
    assert (w.encoder.units, w.predictor.units, w.joiner.dim) == (80, 40, 80)
    assert w.name == "tiny-w80" and w.train == cfg.train and w.encoder.layers == cfg.encoder.layers


@pytest.mark.slow
def test_the_sparsity_bench_runs_a_dense_model_and_a_dense_width(built, tmp_path):
    """The command end to end on the micro model, in a stage cache of its own holding `built`'s data and features (a
    second training in `built`'s cache would confuse the tests that read its one checkpoint)."""
    import shutil

    from tests.helpers import run_cli

    work = tmp_path / "work"
    for stage in ("data", "features"):
        shutil.copytree(built[0].work_dir / "cache" / stage, work / "cache" / stage)
    r = run_cli(
        "bench",
        "sparsity",
        "--model",
        FIXTURES / "micro.toml",
        "--methods",
        "dense",
        "--widths",
        "16",
        "--data",
        "synth",
        "--work-dir",
        work,
        "--report",
        tmp_path / "rep",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (dense,) = [
        line for line in (tmp_path / "rep" / "sparsity.csv").read_text().splitlines()[1:] if line.startswith("dense,")
    ]
    assert "| dense-width (16 units) | 0 |" in (tmp_path / "rep" / "sparsity.md").read_text()

"""`bench speakers`: leave-one-speaker-out and leave-one-voice-family-out folds, measured and summarized."""

import csv

import pytest

from pipeline.build import BuildPaths
from pipeline.config import load_model_config
from pipeline.data import DataOptions
from pipeline.speakers import FoldRow, make_folds, other_engines, summarize
from pipeline.synth import VOICES
from tests.conftest import FIXTURES, make_fsdd_folder


def test_every_speaker_and_every_voice_family_is_held_out_exactly_once():
    folds = make_folds()
    assert [f.speaker for f in folds] == ["george", "jackson", "nicolas", "theo", "yweweler"]
    held = [v for f in folds for v in f.voices]
    assert sorted(held) == sorted(VOICES) and all(f.voices for f in folds)


def test_summary_averages_seeds_within_a_fold_then_folds():
    rows = [
        FoldRow(s, f, "recorded", f, 10, 50, 0.0, w, None)
        for s, f, w in [(1, "a", 0.10), (2, "a", 0.20), (1, "b", 0.05), (2, "b", 0.05), (1, "c", 0.30), (2, "c", 0.30)]
    ]
    s = summarize(rows, "recorded")
    assert (
        s["mean"] == pytest.approx((0.15 + 0.05 + 0.30) / 3)
        and s["worst"] == pytest.approx(0.30)
        and s["worst_fold"] == "c"
    )
    lo, hi = s["interval95"]
    assert lo < s["mean"] < hi
    assert summarize(rows, "synthesized") == {}


@pytest.mark.slow
def test_word_confusions_pair_each_reference_word_with_what_was_decoded():
    from pipeline.verify import format_confusions, word_confusions

    c = word_confusions(["four three two", "one", "five six"], ["five eight two", "one one", "five"])
    assert c == {("four", "five"): 1, ("three", "eight"): 1, ("", "one"): 1, ("six", ""): 1}
    assert format_confusions([["four", "five", 2], ["six", "", 1], ["", "one", 1]]) == (
        "four→five 2, six→(deleted) 1, (inserted)→one 1"
    )


def test_bench_speakers_trains_one_model_per_fold_and_reports_both_held_out_sets(tmp_path):
    from pipeline.speakers import bench_speakers

    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=6)
    model = tmp_path / "micro_synth.toml"
    model.write_text(
        f'extends = "{(FIXTURES / "micro").as_posix()}"\n[data]\nsynth_train_utterances = 20\nsynth_speakers = 4\n'
        'synth_engines = ["espeak-ng"]\n'  # so SVOX Pico, always installed, is an engine it never trained on
    )
    rows = bench_speakers(
        str(model),
        DataOptions("fsdd", fsdd_dir=fsdd),
        BuildPaths(tmp_path / "dist", tmp_path / "w"),
        tmp_path / "r",
        seeds=[1],
        steps=5,
        speakers=("george", "yweweler"),
    )
    # every engine the recipe does not train on that runs here, each its own test set: SVOX Pico and the accented
    # voices always (dependencies), Flite where installed
    engines = sorted(other_engines(load_model_config(str(model))))
    assert {"accented", "pico"} <= set(engines)
    per_fold = ["recorded", "synthesized"] + [f"engine {e}" for e in engines]
    assert [(r.fold, r.test_set) for r in rows] == [(f, t) for f in ("george", "yweweler") for t in per_fold]
    # george's fold holds out the voice families it holds out in the full five-fold run
    assert rows[0].held_out == "george" and rows[1].held_out == "+".join(make_folds()[0].voices)
    assert [r.held_out for r in rows[2 : len(per_fold)]] == engines
    assert all(r.words > 0 and 0 <= r.wer_int8 for r in rows)
    with open(tmp_path / "r" / "speakers.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * len(per_fold)
    md = (tmp_path / "r" / "speakers.md").read_text()
    assert "| recorded | int8 LiteRT |" in md and "| engine pico | int8 LiteRT |" in md
    assert (tmp_path / "r" / "speakers.png").stat().st_size > 1000
    # 5 training steps decode badly: each fold lists its most frequent word errors
    assert all("→" in r.top_errors for r in rows if r.wer_int8 > 0) and "Most frequent word errors" in md
    # the held-out speaker's recordings are the fold's unseen test and nowhere in its training split
    train = (next((tmp_path / "w" / "cache" / "data").glob("*/train.jsonl"))).read_text()
    assert ("george" in train) != ("yweweler" in train)


@pytest.mark.slow
def test_a_synthesized_only_model_is_tested_on_every_recording_of_each_fsdd_speaker(tmp_path):
    from pipeline.speakers import bench_speakers

    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=2)
    rows = bench_speakers(
        str(FIXTURES / "micro.toml"),
        DataOptions("fsdd", fsdd_dir=fsdd),
        BuildPaths(tmp_path / "d", tmp_path / "w"),
        tmp_path / "r",
        seeds=[1],
        steps=5,
        speakers=("george", "theo"),
        synthesized_only=True,
    )
    assert [(r.fold, r.held_out, r.test_set) for r in rows] == [
        ("george", "george", "recorded"),
        ("theo", "theo", "recorded"),
    ]
    assert all(r.words == 20 for r in rows)  # 10 digits x 2 takes, every recording once
    # one export measured on two speakers' recordings: two measurements, not one reused
    assert len(list((tmp_path / "w" / "cache" / "speakers").glob("*/stage.json"))) == 2
    assert "synthesized speech only" in (tmp_path / "r" / "speakers.md").read_text()


def test_an_omni_tier_is_measured_as_the_speaker_stores_it_sparse_encoded(tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.speakers import bench_speakers

    fsdd = make_fsdd_folder(tmp_path / "fsdd", per_digit=6)
    args = (
        str(FIXTURES / "micro_tiles.toml"),  # its sparse-encoded graphs are the smaller: the speaker ships them
        DataOptions("fsdd", fsdd_dir=fsdd),
        BuildPaths(tmp_path / "d", tmp_path / "w"),
        tmp_path / "r",
    )
    rows = bench_speakers(*args, seeds=[1], target="speaker", steps=5, speakers=("theo",), method="omni", tier=90)
    assert rows[0].fold == "theo" and rows[0].words > 0 and rows[0].wer_int8 >= 0
    assert "omni tier 90, sparse-encoded" in (tmp_path / "r" / "speakers.md").read_text()
    # the sparse-encoded graphs were decoded, and nothing else measured this export
    (stage,) = (tmp_path / "w" / "cache" / "speakers").glob("*/stage.json")
    assert '"int8_sparse"' in stage.read_text()
    with pytest.raises(ConfigError, match="needs the omni method"):
        bench_speakers(*args, seeds=[1], target="speaker", steps=5, speakers=("theo",), tier=90)  # the speaker: dense
    with pytest.raises(ConfigError, match="not one of the model's tiers"):
        bench_speakers(*args, seeds=[1], target="speaker", steps=5, speakers=("theo",), method="omni", tier=60)

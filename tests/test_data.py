import json
import os
import shutil

import pytest

from pipeline.data import DataOptions, resolve_source
from pipeline.errors import ConfigError, DataError


def _corpus(tmp_path, tone_wav, test="dev"):
    for name in ("train", test):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"audio_filepath": tone_wav.name, "duration": 0.5, "text": "one"}) + "\n"
        )
    return DataOptions(
        "manifest", train_manifest=tmp_path / "train.jsonl", test_manifests=(tmp_path / f"{test}.jsonl",)
    )


def test_user_manifests_become_splits_named_after_the_files(tmp_path, tone_wav):
    opts = _corpus(tmp_path, tone_wav)
    (tmp_path / "test.jsonl").write_text((tmp_path / "dev.jsonl").read_text())
    both = (tmp_path / "dev.jsonl", tmp_path / "test.jsonl")
    src = resolve_source(DataOptions("manifest", train_manifest=opts.train_manifest, test_manifests=both))
    assert src.kind == "manifest" and set(src.manifests) == {"train", "dev", "test"}


def test_a_dev_manifest_alone_is_no_test_set(tmp_path, tone_wav):
    from tests.helpers import run_cli

    opts = _corpus(tmp_path, tone_wav)
    args = ["--data", "manifest", "--train-manifest", opts.train_manifest, "--test-manifest", opts.test_manifests[0]]
    r = run_cli("build", "--target", "watch", *args, "--work-dir", tmp_path / "w", "--out", tmp_path / "dist")
    assert r.returncode == 2 and "dev.jsonl is the dev split" in r.stderr and "another name" in r.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "dist").exists()


def test_changing_an_audio_file_changes_the_data_digest(tmp_path, tone_wav):
    opts = _corpus(tmp_path, tone_wav, "test")
    before = resolve_source(opts).digest
    os.utime(tone_wav, ns=(1, 1))
    assert resolve_source(opts).digest != before


def test_missing_audio_in_user_manifest_is_named(tmp_path, tone_wav):
    opts = _corpus(tmp_path, tone_wav, "test")
    tone_wav.unlink()
    with pytest.raises(DataError, match="tone.wav"):
        resolve_source(opts)


def test_unknown_source_and_fsdd_dir_missing(tmp_path):
    with pytest.raises(ConfigError, match="unknown data source 'web'"):
        DataOptions("web")
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(DataOptions("fsdd", fsdd_dir=tmp_path / "none"))


def test_synthesized_training_speech_is_spoken_by_the_configured_number_of_voices(tmp_path):
    from dataclasses import replace

    from pipeline.config import load_model_config
    from pipeline.corpus import read_manifest
    from pipeline.data import prepare

    cfg = load_model_config("tiny")
    cfg = replace(cfg, data=replace(cfg.data, train_utterances=60, synth_speakers=3))
    splits = prepare(resolve_source(DataOptions("synth")), cfg, tmp_path)
    train = {u.speaker for u in read_manifest(splits["train"]).utterances}
    unseen = {u.speaker for u in read_manifest(splits["test_unseen"]).utterances}
    assert len(train) == 3 * len(cfg.data.synth_engines) and not train & unseen  # 3 speakers of each engine


def test_every_configured_engine_says_its_share_of_the_synthesized_speech(tmp_path):
    from dataclasses import replace

    import numpy as np

    from pipeline.audio import read_wav
    from pipeline.config import load_model_config
    from pipeline.corpus import read_manifest
    from pipeline.data import prepare

    cfg = load_model_config("tiny")
    cfg = replace(
        cfg, data=replace(cfg.data, train_utterances=41, synth_speakers=2, synth_engines=("espeak-ng", "pico"))
    )
    splits = prepare(resolve_source(DataOptions("synth")), cfg, tmp_path)
    train = read_manifest(splits["train"])
    by_engine = {}
    for u in train.utterances:
        by_engine.setdefault("pico" if u.speaker.startswith("pico") else "espeak-ng", []).append(u)
    assert sorted(len(v) for v in by_engine.values()) == [20, 21]
    for utts in by_engine.values():  # each engine's audio is there, readable and not silent
        x = read_wav(train.audio_path(utts[0]), 8000)
        assert np.abs(x).max() > 0.01
    unseen = {u.speaker for u in read_manifest(splits["test_unseen"]).utterances}
    assert {s.split("-")[0] for s in unseen} == {"synth", "pico"} and not unseen & {u.speaker for u in train.utterances}


def test_an_engine_that_is_not_installed_is_named_with_what_to_install(monkeypatch):
    from pipeline.synth import check_engine

    monkeypatch.setenv("PATH", "")
    with pytest.raises(DataError, match="apt install flite"):
        check_engine("flite")
    with pytest.raises(DataError, match="apt install festival festvox-kdlpc16k"):
        check_engine("festival")


@pytest.mark.skipif(shutil.which("festival") is None, reason="Festival is an optional extra (apt install festival)")
def test_festival_says_every_word_of_a_batch_at_each_speakers_pitch_and_rate():
    import numpy as np

    from pipeline.synth import SynthSpeaker, _say_all_in_child

    low, high = (SynthSpeaker(f"f{p}", "ked_diphone", p, 0, r, "festival", 1.0) for p, r in ((85, 120), (150, 80)))
    out = _say_all_in_child("festival", [("seven", low, 120, 85), ("seven", high, 80, 150), ("two", low, 120, 85)])
    assert [r for r, _ in out] == [16000] * 3 and all(np.abs(x).max() > 0.05 for _, x in out)
    assert len(out[0][1]) > 1.3 * len(out[1][1])  # a duration stretch of 1.2 against 0.8
    assert not np.array_equal(out[0][1][:4000], out[2][1][:4000])  # each word its own audio


def test_a_held_out_engine_says_a_test_split_and_no_training_speech(tmp_path):
    from dataclasses import replace

    from pipeline.config import load_model_config
    from pipeline.corpus import read_manifest
    from pipeline.data import prepare

    cfg = load_model_config("tiny")
    data = replace(cfg.data, train_utterances=20, synth_speakers=2, synth_engines=("espeak-ng",))
    cfg = replace(cfg, data=replace(data, synth_test_engines=("pico",)))
    splits = prepare(resolve_source(DataOptions("synth")), cfg, tmp_path)
    held = {u.speaker for u in read_manifest(splits["test_engines"]).utterances}
    assert held and all(s.startswith("pico-held") for s in held)
    assert not any(u.speaker.startswith("pico") for u in read_manifest(splits["train"]).utterances)
    with pytest.raises(ConfigError, match="synth_test_engines"):
        replace(cfg.data, synth_engines=("espeak-ng", "pico"), synth_test_engines=("pico",))


def test_a_synthesizer_that_dies_in_its_worker_is_an_error_not_a_hang():
    from pipeline.synth import SynthSpeaker, _say_all_in_child

    with pytest.raises(DataError, match="the no-such-engine synthesizer failed in its worker process: KeyError"):
        _say_all_in_child("no-such-engine", [("one", SynthSpeaker("s", "v", 50, 50, 150), 150, 50)])


def test_an_accented_speaker_says_each_digit_as_its_language_spells_the_english_sound():
    from dataclasses import replace

    import numpy as np

    from pipeline.synth import ACCENTS, engine_speakers, spoken_word, synthesize_recordings

    rng = np.random.default_rng(0)
    speakers = engine_speakers(12, rng, "accented")
    assert all(s.engine == "accented" and s.name.startswith("accented") for s in speakers)
    assert len({s.voice.split("+")[0] for s in speakers}) > 1 and {s.voice.split("+")[0] for s in speakers} <= set(
        ACCENTS
    )
    german = replace(speakers[0], voice="de+m3")
    assert [spoken_word(german, d) for d in (1, 3, 9)] == ["wann", "sri", "nein"]
    assert spoken_word(replace(german, engine="espeak-ng", voice="en-us"), 1) == "one"
    recs = synthesize_recordings([german], 1, 8000, rng)
    assert sorted(r.digit for r, _ in recs) == list(range(10))
    assert all(len(r.samples) > 800 and np.abs(r.samples).max() > 0 for r, _ in recs)  # > 0.1 s of sound each

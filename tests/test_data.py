import json
import os

import pytest

from pipeline.data import DataOptions, resolve_source
from pipeline.errors import ConfigError, DataError


def _corpus(tmp_path, tone_wav):
    for name in ("train", "dev"):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"audio_filepath": tone_wav.name, "duration": 0.5, "text": "one"}) + "\n"
        )
    return DataOptions("manifest", train_manifest=tmp_path / "train.jsonl", test_manifests=(tmp_path / "dev.jsonl",))


def test_user_manifests_become_splits_named_after_the_files(tmp_path, tone_wav):
    src = resolve_source(_corpus(tmp_path, tone_wav))
    assert src.kind == "manifest" and set(src.manifests) == {"train", "dev"}


def test_changing_an_audio_file_changes_the_data_digest(tmp_path, tone_wav):
    opts = _corpus(tmp_path, tone_wav)
    before = resolve_source(opts).digest
    os.utime(tone_wav, ns=(1, 1))
    assert resolve_source(opts).digest != before


def test_missing_audio_in_user_manifest_is_named(tmp_path, tone_wav):
    opts = _corpus(tmp_path, tone_wav)
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
    assert len(train) == 3 and not train & unseen

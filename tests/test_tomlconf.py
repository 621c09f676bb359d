import pytest

from pipeline.calibrate import load_calibration_recipe
from pipeline.config import ModelConfig, load_model_config, model_names
from pipeline.errors import ConfigError
from pipeline.targets import TargetProfile, load_target, target_names
from pipeline.tomlconf import read_toml_with_extends, to_dict


@pytest.mark.parametrize("name", model_names())
def test_every_shipped_model_config_loads_and_round_trips(name):
    cfg = load_model_config(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", target_names())
def test_every_shipped_target_loads_and_round_trips(name):
    from pipeline.tomlconf import load_dataclass

    t = load_target(name)
    assert load_dataclass(TargetProfile, to_dict(t), "round trip") == t


def test_default_calibration_recipe_loads():
    assert load_calibration_recipe("default").utterances > 0


def test_unknown_field_names_file_field_and_allowed(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[encoder]\nlayerz = 2\n")
    with pytest.raises(ConfigError, match=r"m\.toml.*unknown field `layerz`.*allowed fields are .*layers"):
        load_model_config(str(p))


def test_wrong_type_names_field_and_value(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[train]\nsteps = "many"\n')
    with pytest.raises(ConfigError, match=r"field `steps` must be an integer, got 'many'"):
        load_model_config(str(p))


def test_out_of_range_value_is_refused(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[encoder]\nunits = 0\n")
    with pytest.raises(ConfigError, match="units"):
        load_model_config(str(p))


def test_malformed_toml_is_a_config_error(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text("[device\nruntime = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(str(p))


def test_extends_merges_tables_and_detects_cycles(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b"\n[device]\nthreads = 4\n')
    (tmp_path / "b.toml").write_text('[device]\nruntime = "litert"\nthreads = 1\n[budgets]\nrtf = 0.1\n')
    merged = read_toml_with_extends(tmp_path / "a.toml")
    assert merged["device"] == {"runtime": "litert", "threads": 4} and merged["budgets"]["rtf"] == 0.1
    (tmp_path / "b.toml").write_text('extends = "a"\n')
    with pytest.raises(ConfigError, match=r"cycle \(a -> b -> a\)"):
        read_toml_with_extends(tmp_path / "a.toml")


def test_unknown_target_and_model_list_the_known_ones():
    with pytest.raises(ConfigError, match="unknown target .toaster.; known targets: .*watch"):
        load_target("toaster")
    with pytest.raises(ConfigError, match="unknown model .huge.; known models: .*tiny"):
        load_model_config("huge")


def test_large_model_extends_tiny():
    large, tiny = load_model_config("large"), load_model_config("tiny")
    assert large.encoder.units > tiny.encoder.units and large.frontend == tiny.frontend and large.name == "large"


def test_more_synthesized_speakers_than_espeak_voices_is_refused(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[data]\nsynth_speakers = 500\n")
    with pytest.raises(ConfigError, match=r"m\.toml.*field `synth_speakers` must be in 1\.\.106 .*got 500"):
        load_model_config(str(p))


def test_synthesized_fields_replace_augment_and_train_only_for_a_synthesized_corpus(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text(
        "[augment]\ncopies = 2\n[train]\nsteps = 50\n[synthesized.augment]\nreverb_prob = "
        "0.5\n[synthesized.train]\nsteps = 70\n"
    )
    cfg = load_model_config(str(p))
    synth = cfg.for_source("synth")
    assert (synth.augment.reverb_prob, synth.augment.copies, synth.train.steps, synth.synthesized) == (0.5, 2, 70, {})
    assert cfg.for_source("fsdd") is cfg and cfg.for_source("manifest") is cfg and cfg.augment.reverb_prob == 0.0
    assert synth.for_source("synth") == synth and ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "[synthesized.augment]\nreverb = 0.5\n",
            r"with its \[synthesized\] fields: field `augment`: unknown field `reverb`; allowed fields are "
            r".*reverb_prob",
        ),
        (
            "[synthesized.augment]\nreverb_prob = 2.0\n",
            r"with its \[synthesized\] fields: .*reverb_prob` must be in 0..1",
        ),
        (
            "[synthesized.encoder]\nunits = 8\n",
            r"\[synthesized\] may set \[synthesized.augment\] and \[synthesized.train\] only, got `encoder`",
        ),
        ("[synthesized]\naugment = 3\n", r"\[synthesized\] field `augment` must be a table"),
    ],
)
def test_a_bad_synthesized_field_is_refused_when_the_file_is_read(tmp_path, body, message):
    p = tmp_path / "m.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_model_config(str(p))


def test_the_default_trains_synthesized_only_corpora_with_reverberation_and_recorded_ones_without():
    tiny = load_model_config("tiny")
    assert tiny.for_source("synth").augment.reverb_prob > 0 and tiny.for_source("fsdd").augment.reverb_prob == 0

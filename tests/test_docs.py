"""The documents a user reads stay true to the code: the manifest contract names every field the schema requires,
and the README and docs carry no history notes."""

import json
import re
from pathlib import Path

from pipeline.manifest import SCHEMA_PATH, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]


def test_the_manifest_contract_names_every_section_and_required_field_of_the_schema():
    doc = (ROOT / "docs" / "manifest.md").read_text()
    schema = json.loads(SCHEMA_PATH.read_text())
    missing = [k for k in schema["properties"] if f"`{k}`" not in doc]
    for section, spec in schema["properties"].items():
        missing += [f"{section}.{f}" for f in spec.get("required", []) if f"`{f}`" not in doc]
    assert not missing, f"docs/manifest.md does not name {missing}"
    assert f"`{SCHEMA_VERSION}`" in doc


def test_readme_is_a_short_user_guide_and_product_files_carry_no_history():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for path in [
        ROOT / "README.md",
        ROOT / "RESULTS.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("models/*.toml"),
        *ROOT.glob("targets/*.toml"),
        *ROOT.glob("calibration/*.toml"),
    ]:
        assert not re.search(r"\bsession\b", path.read_text(), re.IGNORECASE), path
    for path in (ROOT / "pipeline").rglob("*.py"):
        text = re.sub(r"clear_session", "", path.read_text())  # a Keras function name, not a history note
        assert not re.search(r"\bsession\b", text, re.IGNORECASE), path
        assert "reports/" not in text and "experiments/" not in text, path


def test_no_experiment_config_extends_a_live_model():
    for path in (ROOT / "experiments").rglob("*.toml"):
        assert not re.search(r"^\s*extends\s*=", path.read_text(), re.MULTILINE), path


# objects keyed by names the build chooses (sets, speakers, tools, operators, digests): open maps, their values typed
OPEN_MAPS = (
    "evaluation.sets",
    "evaluation.sets.*.wer_by_speaker",
    "switching.tiers[].wer",
    "model.sparsity.search.tier_per_kernel",
    "model.sparsity.search.uniform_tiers_dev_wer_float32",
    "build.tool_versions",
    "$defs.graph.operators",
    "integrity.fields.frontend",
    "integrity.fields.tokenizer",
    "integrity.fields.streaming",
    "integrity.fields.decode",
)


def _schema_nodes(node, where):
    yield where, node
    for k, v in node.get("properties", {}).items():
        yield from _schema_nodes(v, f"{where}.{k}" if where else k)
    for k, v in node.get("$defs", {}).items():
        yield from _schema_nodes(v, f"$defs.{k}")
    for option in node.get("oneOf", []):
        if option != {"type": "null"}:  # "or null": the other option says what the field is
            yield from _schema_nodes(option, where)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{where}.*")
    if isinstance(node.get("items"), dict):
        yield from _schema_nodes(node["items"], f"{where}[]")


def test_the_schema_is_strict_and_describes_every_field():
    """Schema 2.0: every object the pipeline owns is closed (additionalProperties false, so an unknown field fails)
    and every field has a description or a constant."""
    schema = json.loads(SCHEMA_PATH.read_text())
    nodes = list(_schema_nodes(schema, ""))
    open_objects = [
        w
        for w, n in nodes
        if (n.get("type") == "object" or "properties" in n)
        and n.get("additionalProperties") is not False
        and w not in OPEN_MAPS
        and w  # the root is closed too: checked below
    ]
    assert schema["additionalProperties"] is False and not open_objects, open_objects
    undescribed = [
        w
        for w, n in nodes
        if w
        and not w.endswith(("[]", ".*"))  # array items and map values: described by their container
        and w != "$defs.sha256"  # a type, described where it is used
        and not (
            {"properties", "$ref", "const", "description"} & set(n)
            and (n.get("description") or "properties" in n or "$ref" in n or "const" in n)
        )
    ]
    assert not undescribed, undescribed


def test_the_schema_of_model_config_has_exactly_the_config_fields():
    """`model.config` is closed like every other object: a config field added to pipeline/config.py must be described
    in the schema too (else every build's manifest would fail validation)."""
    import dataclasses
    import typing

    from pipeline.config import AugmentConfig, ModelConfig, TrainConfig

    schema = json.loads(SCHEMA_PATH.read_text())["properties"]["model"]["properties"]["config"]

    def fields(cls, node, where):
        assert set(node["properties"]) == {f.name for f in dataclasses.fields(cls)}, where
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                fields(hint, node["properties"][name], f"{where}.{name}")

    fields(ModelConfig, schema, "model.config")
    synthesized = schema["properties"]["synthesized"]["properties"]  # [synthesized.*] replaces these sections' fields
    fields(AugmentConfig, synthesized["augment"], "model.config.synthesized.augment")
    fields(TrainConfig, synthesized["train"], "model.config.synthesized.train")

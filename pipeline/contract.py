"""A device folder checked as an app would rely on it: the manifest against its own graphs and its digests.

The schema says a manifest is well formed; these checks say it tells the truth: every
graph file stays inside the folder and matches its sha256, every tensor the manifest
describes (name, index, shape, dtype, scale, zero point) is the graph's own, the state
and decode contract names tensors that exist with matching shapes, the vocabulary fits
the joiner's logits, and the decode-relevant sections still hash to the digests the
build recorded (`integrity`). Each failure is an `ArtifactError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .fsutil import sha256_file

# the sections an app decodes with; a change to any of their fields changes the words it gets
DECODE_SECTIONS = ("frontend", "tokenizer", "streaming", "decode")


def field_digest(value: Any) -> str:
    """First 16 hex digits of the sha256 of a value's canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def integrity_section(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `integrity` section: a digest of every field of each decode section, so `verify` can name the
    field edited after the build."""
    return {
        "algorithm": "sha256 of the field's JSON with sorted keys and no spaces, first 16 hex digits",
        "fields": {s: {k: field_digest(v) for k, v in manifest[s].items()} for s in DECODE_SECTIONS},
    }


def check_integrity(manifest: dict[str, Any], where: str) -> None:
    """`ArtifactError` naming the first decode field whose digest differs from the one the build recorded."""
    recorded = manifest["integrity"]["fields"]
    for section in DECODE_SECTIONS:
        now, then = manifest[section], recorded.get(section, {})
        for key in sorted(set(now) | set(then)):
            if key not in then:
                raise ArtifactError(
                    f"{where}: field {section}.{key} was added after the build (no digest was recorded for it)."
                )
            if key not in now:
                raise ArtifactError(f"{where}: field {section}.{key} was removed after the build.")
            if field_digest(now[key]) != then[key]:
                raise ArtifactError(
                    f"{where}: field {section}.{key} was edited after the build (its digest differs from "
                    "integrity.fields)."
                )


def graph_file(folder: Path, entry: dict[str, Any], field: str, where: str) -> Path:
    """The file a graph entry names, refused if it leaves the folder."""
    rel = Path(entry["file"])
    path = (Path(folder) / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(Path(folder).resolve()):
        raise ArtifactError(f"{where}: {field}.file {entry['file']!r} points outside the device folder.")
    return path


def check_files(folder: Path, manifest: dict[str, Any], where: str) -> None:
    """Every graph (and NPU-compiled graph) file lies inside the folder and has the manifest's size and sha256."""
    entries = [(f"graphs.{n}", g) for n, g in manifest["graphs"].items()]
    entries += [(f"graphs.{n}.npu", g["npu"]) for n, g in manifest["graphs"].items() if "npu" in g]
    for field, g in entries:
        f = graph_file(folder, g, field, where)
        if not f.is_file():
            raise ArtifactError(f"{where}: {field}.file {g['file']} is missing from {folder}.")
        size, digest = f.stat().st_size, sha256_file(f)
        if size != g["bytes"] or digest != g["sha256"]:
            raise ArtifactError(
                f"{f} does not match {field} of the manifest: {size} bytes, sha256 {digest}; "
                f"expected {g['bytes']} bytes, sha256 {g['sha256']}."
            )


def check_tensors(folder: Path, manifest: dict[str, Any], where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Each graph's inputs and outputs as the manifest lists them equal the graph file's own; returns
    {graph: {"inputs" | "outputs": {signature name: tensor}}}."""
    from .runtimes import describe

    found: dict[str, dict[str, dict[str, Any]]] = {}
    for name, g in manifest["graphs"].items():
        path = graph_file(folder, g, f"graphs.{name}", where)
        try:
            inputs, outputs = describe(path.read_bytes())
        except ArtifactError as exc:
            raise ArtifactError(f"{path} (graphs.{name}) is not a graph LiteRT can load: {exc}") from None
        found[name] = {}
        for kind, actual in (("inputs", inputs), ("outputs", outputs)):
            listed = g[kind]
            if len(listed) != len(actual):
                raise ArtifactError(
                    f"{where}: graphs.{name}.{kind} lists {len(listed)} tensors, {path.name} has {len(actual)}."
                )
            for i, (want, have) in enumerate(zip(listed, (s.to_dict() for s in actual))):
                for key in ("name", "tensor_name", "index", "shape", "dtype", "scale", "zero_point"):
                    if want[key] != have[key]:
                        raise ArtifactError(
                            f"{where}: graphs.{name}.{kind}[{i}].{key} is {want[key]!r}, but {path.name} has "
                            f"{have[key]!r}."
                        )
            found[name][kind] = {t["name"]: t for t in listed}
    return found


def check_roles(manifest: dict[str, Any], tensors: dict[str, dict[str, dict[str, Any]]], where: str) -> None:
    """The streaming states and the decode contract name tensors that exist, with matching shapes, and the vocabulary
    fits the joiner's logits."""
    for i, s in enumerate(manifest["streaming"]["states"]):
        graph = tensors.get(s["graph"], {})
        tin, tout = graph.get("inputs", {}).get(s["input"]), graph.get("outputs", {}).get(s["output"])
        if tin is None or tout is None:
            missing = s["input"] if tin is None else s["output"]
            raise ArtifactError(
                f"{where}: streaming.states[{i}] names {missing!r}, which graph {s['graph']} does not have."
            )
        if tin["shape"] != tout["shape"]:
            raise ArtifactError(
                f"{where}: streaming.states[{i}]: {s['input']} has shape {tin['shape']} but {s['output']} has "
                f"{tout['shape']}."
            )
    dec, st, fe = manifest["decode"], manifest["streaming"], manifest["frontend"]
    roles = (  # (field, graph, kind, expected shape or None)
        ("encoder.features", "encoder", "inputs", [1, st["chunk_feature_frames"], fe["n_mels"]]),
        ("encoder.output", "encoder", "outputs", None),
        ("predictor.token", "predictor", "inputs", [1, len(manifest["tokenizer"]["vocab"])]),
        ("predictor.output", "predictor", "outputs", None),
        ("joiner.encoder_frame", "joiner", "inputs", None),
        ("joiner.predictor_output", "joiner", "inputs", None),
        ("joiner.logits", "joiner", "outputs", None),
    )
    found: dict[str, dict[str, Any]] = {}
    for field, graph, kind, shape in roles:
        role, key = field.split(".")
        name = dec[role][key]
        tensor = tensors[graph][kind].get(name)
        if tensor is None:
            raise ArtifactError(
                f"{where}: decode.{field} {name!r} is not an {kind[:-1]} of the {graph} graph (a renamed tensor?)."
            )
        if shape is not None and tensor["shape"] != shape:
            raise ArtifactError(f"{where}: decode.{field} {name!r} has shape {tensor['shape']}, the contract {shape}.")
        found[field] = tensor
    if st["chunk_feature_frames"] != st["stack"] * st["encoder_frames_per_chunk"]:
        raise ArtifactError(
            f"{where}: streaming.chunk_feature_frames {st['chunk_feature_frames']} is not stack {st['stack']} x "
            f"encoder_frames_per_chunk {st['encoder_frames_per_chunk']}."
        )
    enc = found["encoder.output"]["shape"]
    if enc[:2] != [1, st["encoder_frames_per_chunk"]] or found["joiner.encoder_frame"]["shape"] != [1, enc[-1]]:
        raise ArtifactError(
            f"{where}: decode.encoder.output has shape {enc}, which does not give encoder_frames_per_chunk rows of "
            f"the joiner's encoder_frame {found['joiner.encoder_frame']['shape']}."
        )
    if found["predictor.output"]["shape"] != found["joiner.predictor_output"]["shape"]:
        raise ArtifactError(
            f"{where}: decode.predictor.output has shape {found['predictor.output']['shape']}, the joiner's "
            f"predictor_output {found['joiner.predictor_output']['shape']}."
        )
    fed = {(g, t["name"]) for (field, g, kind, _) in roles if kind == "inputs" for t in [found[field]]}
    fed |= {(s["graph"], s["input"]) for s in st["states"]}
    for graph, kinds in tensors.items():
        for name in kinds["inputs"]:
            if (graph, name) not in fed:
                raise ArtifactError(
                    f"{where}: input {name!r} of the {graph} graph is neither a decode role nor a streaming state, so "
                    "no decoder following the manifest would feed it."
                )
    tok = manifest["tokenizer"]
    vocab = tok["vocab"]
    logits = found["joiner.logits"]["shape"][-1]
    if len(vocab) != logits:
        raise ArtifactError(
            f"{where}: tokenizer.vocab has {len(vocab)} symbols, but the joiner's {dec['joiner']['logits']} has "
            f"{logits}."
        )
    if len(set(vocab)) != len(vocab):
        raise ArtifactError(f"{where}: tokenizer.vocab lists a symbol twice.")
    for field in ("blank_id",):
        if not 0 <= tok[field] < len(vocab):
            raise ArtifactError(
                f"{where}: tokenizer.{field} {tok[field]} is outside the vocabulary (0..{len(vocab) - 1})."
            )
    if not 0 <= dec["start_token"] < len(vocab):
        raise ArtifactError(
            f"{where}: decode.start_token {dec['start_token']} is outside the vocabulary (0..{len(vocab) - 1})."
        )
    for field in ("mean", "std"):
        if len(fe[field]) != fe["n_mels"]:
            raise ArtifactError(f"{where}: frontend.{field} has {len(fe[field])} values for {fe['n_mels']} mel bins.")
    if min(fe["std"]) <= 0:
        raise ArtifactError(f"{where}: frontend.std holds a value <= 0.")


def check_tokens_file(folder: Path, manifest: dict[str, Any], where: str) -> None:
    """`tokens.txt` lists the manifest's vocabulary, id by id."""
    from .manifest import tokens_text

    name = manifest["tokenizer"]["tokens_file"]
    path = graph_file(folder, {"file": name}, "tokenizer.tokens_file", where)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: tokenizer.tokens_file {name} cannot be read ({exc}).") from None
    if text != tokens_text(manifest["tokenizer"]):
        want, have = tokens_text(manifest["tokenizer"]).splitlines(), text.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
        found = repr(have[line]) if line < len(have) else "the end of the file"
        expected = repr(want[line]) if line < len(want) else "the end of the file"
        raise ArtifactError(
            f"{path} disagrees with tokenizer.vocab of the manifest from line {line + 1} ({found}, expected "
            f"{expected})."
        )


def check_graph_metadata(folder: Path, manifest: dict[str, Any], where: str) -> None:
    """Every graph file and its NPU copy carries the decode contract (graphs.*.metadata) equal to the
    manifest's: its role, its tensors' names and the frontend, tokenizer, streaming and decode sections."""
    from .manifest import DECODE_SECTIONS
    from .tflite_meta import read_contract

    for name, g in manifest["graphs"].items():
        entry = g["metadata"]
        files = [(f"graphs.{name}", g)] + ([(f"graphs.{name}.npu", g["npu"])] if "npu" in g else [])
        for field, e in files:
            path = graph_file(folder, e, field, where)
            meta = read_contract(path.read_bytes(), str(path), entry)
            if meta is None:
                raise ArtifactError(f"{path} ({field}) has no `{entry}` metadata, which graphs.{name}.metadata names.")
            if meta.get("graph") != name:
                raise ArtifactError(
                    f"{path} ({field}) says in its metadata that it is the {meta.get('graph')!r} graph."
                )
            resolver = manifest["model"]["sparsity"]["litert_op_resolver"]
            if field == f"graphs.{name}" and meta.get("litert_op_resolver") != resolver:
                raise ArtifactError(
                    f"{path} ({field}): its metadata names op resolver {meta.get('litert_op_resolver')!r}, the "
                    f"manifest's model.sparsity.litert_op_resolver {resolver!r}."
                )
            for kind in ("inputs", "outputs"):
                listed = [{"name": t["name"], "tensor_name": t["tensor_name"]} for t in g[kind]]
                if meta.get(kind) != listed:
                    raise ArtifactError(
                        f"{path} ({field}): the {kind} its metadata names differ from graphs.{name}.{kind} of the "
                        "manifest."
                    )
            for section in DECODE_SECTIONS:
                mine, theirs = meta.get(section, {}), manifest[section]
                for key in sorted(set(mine) | set(theirs)):
                    if mine.get(key) != theirs.get(key):
                        raise ArtifactError(
                            f"{path} ({field}): its metadata's {section}.{key} differs from the manifest's."
                        )


def _listed_file(folder: Path, entry: dict[str, Any], field: str, where: str) -> tuple[Path, bytes]:
    """The file a {file, bytes, sha256} entry names, and its bytes; `ArtifactError` if it leaves the folder, is
    missing or differs in size or sha256."""
    path = graph_file(folder, entry, field, where)
    if not path.is_file():
        raise ArtifactError(f"{where}: {field}.file {entry['file']} is missing from {folder}.")
    data = path.read_bytes()
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path} does not match {field} of the manifest (size or sha256).")
    return path, data


def check_switching(folder: Path, manifest: dict[str, Any], where: str) -> None:
    """A switchable package's tiers: the base tier's graphs are the shipped ones; every patch (and NPU-compiled graph)
    lies inside the folder and matches its size and sha256; every patch turns the base graph into the graph its
    `graph_sha256` names; the package's byte counts are the sums of the files it lists."""
    from .switching import apply_patch

    sw = manifest.get("switching")
    if sw is None:
        return
    base = {g: graph_file(folder, e, f"graphs.{g}", where).read_bytes() for g, e in manifest["graphs"].items()}
    for i, tier in enumerate(sw["tiers"]):
        field = f"switching.tiers[{i}]"
        if ("npu" in tier) != (sw["device_storage"] == "compiled_graphs_per_tier"):
            raise ArtifactError(
                f"{where}: {field} must list its Vela-compiled graphs exactly when the package is "
                "stored as compiled graphs per tier (switching.device_storage)."
            )
        for g, npu in tier.get("npu", {}).items():
            _listed_file(folder, npu, f"{field}.npu.{g}", where)
            if tier["patches"] is None and npu["sha256"] != manifest["graphs"][g].get("npu", {}).get("sha256"):
                raise ArtifactError(f"{where}: {field}.npu.{g} of the base tier is not graphs.{g}.npu.")
        if tier["patches"] is None:
            if tier["tier"] != sw["base_tier"]:
                raise ArtifactError(f"{where}: {field} (tier {tier['tier']}) has no patches but is not the base tier.")
            for g, sha in tier["graph_sha256"].items():
                if sha != manifest["graphs"][g]["sha256"]:
                    raise ArtifactError(f"{where}: {field}.graph_sha256.{g} is not graphs.{g}.sha256.")
            continue
        for g, patch in tier["patches"].items():
            path, data = _listed_file(folder, patch, f"{field}.patches.{g}", where)
            graph = apply_patch(base[g], data, str(path))
            if hashlib.sha256(graph).hexdigest() != tier["graph_sha256"][g]:
                raise ArtifactError(
                    f"{path}: the base {g} graph patched with it does not give {field}.graph_sha256.{g}."
                )
    compiled = sw["device_storage"] == "compiled_graphs_per_tier"
    stored = [
        sum(e["bytes"] for e in t["npu"].values())
        if compiled
        else sum(e["bytes"] for e in (manifest["graphs"] if t["patches"] is None else t["patches"]).values())
        for t in sw["tiers"]
    ]
    if stored[0] != sw["densest_graph_bytes"] or sum(stored) != sw["package_bytes"]:
        raise ArtifactError(
            f"{where}: switching.package_bytes or densest_graph_bytes is not the sum of the files the package lists."
        )


def check_device_folder(folder: Path, manifest: dict[str, Any]) -> None:
    """Every check above, cheapest first."""
    where = str(Path(folder) / "manifest.json")
    check_integrity(manifest, where)
    check_files(folder, manifest, where)
    check_roles(manifest, check_tensors(folder, manifest, where), where)
    check_tokens_file(folder, manifest, where)
    check_graph_metadata(folder, manifest, where)
    check_switching(folder, manifest, where)

"""End to end: `build()` on synthesized speech with a micro model, then check what app teams get."""

import json
import re
import shutil

import pytest

from examples.streaming_decoder import StreamingDecoder, read_wav
from pipeline.build import BuildPaths, build
from pipeline.data import DataOptions
from pipeline.errors import ArtifactError
from pipeline.fsutil import sha256_file
from pipeline.gate import ships_aat, sparsest_tier
from pipeline.manifest import validate_manifest
from pipeline.verify import verify_dist
from tests.conftest import FIXTURES
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def _dense_checkpoint(paths: BuildPaths):
    """The watch build's (dense) checkpoint. Later fixtures (omni, AAT) train into the same cache, and the order of a
    directory listing is the file system's, so pick by method rather than take the first entry."""
    from pipeline.checkpoint import ModelCheckpoint

    found = [
        p / "checkpoint"
        for p in sorted((paths.work_dir / "cache" / "train").iterdir())
        if not p.name.endswith(".work")
        and ModelCheckpoint.load(p / "checkpoint").meta.get("method", "dense") == "dense"
    ]
    assert len(found) == 1, found
    return found[0]


def test_manifest_validates_and_hashes_match(built):
    paths, manifest_path, _ = built
    m = json.loads(manifest_path.read_text())
    validate_manifest(m)
    for g in ("encoder", "predictor", "joiner"):
        entry = m["graphs"][g]
        f = manifest_path.parent / entry["file"]
        assert f.stat().st_size == entry["bytes"] and sha256_file(f) == entry["sha256"]
        assert all(t["dtype"] == "int8" for t in entry["inputs"] + entry["outputs"])
        assert entry["tflm_arena_bytes"] > 0
    assert sorted(p.name for p in manifest_path.parent.iterdir()) == [
        ".pipeline-output.json",
        "encoder.tflite",
        "joiner.tflite",
        "manifest.json",
        "npu",
        "predictor.tflite",
        "tokens.txt",
    ]


def test_a_manifest_of_schema_1_is_refused_with_a_message_to_rebuild(built, tmp_path):
    """2.0 turned 1.x's prose into fields a decoder needs: a 1.x manifest is refused whole, by the schema check and by
    every command that reads a device folder, with one sentence saying to rebuild."""
    from pipeline.corpus import read_manifest

    paths, manifest_path, _ = built
    m = json.loads(manifest_path.read_text())
    assert m["schema_version"] == "2.0"
    old = tmp_path / "old"
    shutil.copytree(manifest_path.parent, old)
    for version in ("1.4", "1.0"):
        m["schema_version"] = version
        with pytest.raises(ArtifactError, match=f"is schema {version}, written by an older pipeline.*rebuild"):
            validate_manifest(m)
        (old / "manifest.json").write_text(json.dumps(m))
        corpus = read_manifest(next((paths.work_dir / "cache" / "data").glob("*/test_unseen.jsonl")))
        for args in (("transcribe", old, corpus.audio_path(corpus.utterances[0])), ("verify", old)):
            r = run_cli(*args)
            assert r.returncode == 2 and r.stdout == "", r.stderr
            (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
            assert f"is schema {version}" in line and "pipeline build" in line, line


@pytest.mark.parametrize(
    "where", [(), ("decode",), ("decode", "joiner"), ("frontend", "audio"), ("latency", "host"), ("graphs", "joiner")]
)
def test_a_field_the_schema_does_not_know_fails_validation(built, where):
    """Every object the pipeline writes is closed: a field outside the schema anywhere is an error naming it."""
    m = json.loads(built[1].read_text())
    node = m
    for key in where:
        node = node[key]
    node["surprise"] = 1
    with pytest.raises(ArtifactError, match="surprise"):
        validate_manifest(m)


def test_watch_graphs_are_compiled_for_the_npu_with_labelled_estimates(built):
    m = json.loads(built[1].read_text())
    for g in m["graphs"].values():
        npu = g["npu"]
        assert npu["estimated"] is True and npu["npu_operator_fraction"] == 1.0 and npu["cpu_operators"] == 0
        f = built[1].parent / npu["file"]
        assert f.stat().st_size == npu["bytes"] and sha256_file(f) == npu["sha256"]
    device = m["latency"]["device"]
    assert device["tool"] == "ethos-u-vela" and device["estimated"] is True
    assert 0 < device["encoder_rtf"] <= device["rtf"]


def test_manifest_reports_float_int8_and_tflm_wer_on_held_out_sets(built):
    m = json.loads(built[1].read_text())
    sets = m["evaluation"]["sets"]
    assert set(sets) == {"test_seen", "test_unseen"}
    for s in sets.values():
        assert set(s["wer"]) == {"float32_litert", "int8_litert", "int8_tflm"}
    # trained on synthesized voices only: the manifest says its figures do not predict recorded speech
    assert (
        m["evaluation"]["data_source"] == "synth" and "say nothing about recorded speech" in m["evaluation"]["caveat"]
    )
    assert m["latency"]["host"]["encoder_rtf"]["p50"] > 0
    assert m["build"]["tool_versions"]["tensorflow"].startswith("2.21")


def test_every_shipped_graph_and_its_npu_copy_carries_the_decode_contract_of_the_manifest(built):
    """The metadata is written before Vela compiles the graphs and survives it; tokens.txt lists the vocabulary."""
    from pipeline.manifest import DECODE_SECTIONS
    from pipeline.tflite_meta import read_contract

    folder = built[1].parent
    m = json.loads(built[1].read_text())
    for name, g in m["graphs"].items():
        for f in (folder / g["file"], folder / g["npu"]["file"]):
            contract = read_contract(f.read_bytes(), str(f), g["metadata"])
            assert contract["graph"] == name and contract["schema_version"] == m["schema_version"]
            assert all(contract[s] == m[s] for s in DECODE_SECTIONS)
            assert contract["inputs"] == [{"name": t["name"], "tensor_name": t["tensor_name"]} for t in g["inputs"]]
    tokens = (folder / m["tokenizer"]["tokens_file"]).read_text().splitlines()
    assert len(tokens) == len(m["tokenizer"]["vocab"]) and tokens[m["tokenizer"]["blank_id"]].startswith("<blk> ")


def test_the_example_decoder_from_the_graphs_alone_gets_the_pipelines_words(built, tmp_path):
    """No manifest.json: the example decoder reads the contract inside the .tflite files and the tensors' own
    quantization, and gets the pipeline's words."""
    from pipeline.corpus import read_manifest

    paths, manifest_path, _ = built
    for g in ("encoder", "predictor", "joiner"):
        shutil.copyfile(manifest_path.parent / f"{g}.tflite", tmp_path / f"{g}.tflite")
    decoder = StreamingDecoder.from_graphs(tmp_path)
    corpus = read_manifest(next((paths.work_dir / "cache" / "data").iterdir()) / "test_unseen.jsonl")
    theirs = []
    for u in corpus.utterances[:5]:
        decoder.reset()
        decoder.accept(read_wav(corpus.audio_path(u), decoder.m["frontend"]["sample_rate"]))
        theirs.append(decoder.finish())
    assert theirs == _pipeline_hypotheses(paths, manifest_path, corpus, 5)


@pytest.mark.parametrize("block", [1, 37, 240, 1600, 10**6])
def test_the_example_decoder_streaming_from_the_manifest_alone_gets_the_pipelines_words(built, block):
    """examples/streaming_decoder.py (no `pipeline` import: the manifest and the graphs only), fed the audio in blocks
    of `block` samples, gets the same words as our int8 LiteRT decode of the whole utterance."""
    from pipeline.corpus import read_manifest

    paths, manifest_path, _ = built
    decoder = StreamingDecoder(manifest_path.parent)
    data_root = next((paths.work_dir / "cache" / "data").iterdir())
    corpus = read_manifest(data_root / "test_unseen.jsonl")
    ours = _pipeline_hypotheses(paths, manifest_path, corpus, 5)
    theirs = []
    for u in corpus.utterances[:5]:
        decoder.reset()
        audio = read_wav(corpus.audio_path(u), decoder.m["frontend"]["sample_rate"])
        for start in range(0, len(audio), block):
            decoder.accept(audio[start : start + block])
        theirs.append(decoder.finish())
    assert theirs == ours


def _pipeline_hypotheses(paths, manifest_path, corpus, n, edge=None):
    """The pipeline's int8 LiteRT words (`edge`: zeros at each end of the audio; default: the manifest's)."""
    from pipeline.checkpoint import ModelCheckpoint
    from pipeline.decode import greedy_decode
    from pipeline.features import utterance_features
    from pipeline.runtimes import LiteRTGraph
    from pipeline.stages import transducer

    ck_dir = _dense_checkpoint(paths)
    ck = ModelCheckpoint.load(ck_dir)
    t = transducer(
        ck.config,
        ck.tokenizer,
        {
            g: LiteRTGraph((manifest_path.parent / f"{g}.tflite").read_bytes())
            for g in ("encoder", "predictor", "joiner")
        },
    )
    sub = type(corpus)(corpus.utterances[:n], corpus.root)
    edge = json.loads(manifest_path.read_text())["frontend"]["edge_padding_samples"] if edge is None else edge
    return [
        ck.tokenizer.decode(greedy_decode(t, ck.normalizer(f)).tokens)
        for f in utterance_features(sub, ck.config.frontend, edge_padding_samples=edge)
    ]


def test_second_build_reuses_every_stage(built, caplog):
    paths, manifest_path, _ = built
    before = json.loads(manifest_path.read_text())
    caplog.set_level("INFO")
    build("watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"))
    ran = [r.getMessage() for r in caplog.records if r.getMessage().endswith(": running")]
    assert ran == []
    after = json.loads(manifest_path.read_text())
    assert after["graphs"] == before["graphs"] and after["evaluation"] == before["evaluation"]


def test_verify_accepts_the_build_and_decodes_with_the_manifest_alone(built):
    from pipeline.verify import verify_dist

    paths, manifest_path, _ = built
    data_root = next((paths.work_dir / "cache" / "data").iterdir())
    m = json.loads(manifest_path.read_text())
    result = verify_dist(manifest_path.parent, data_root / "test_unseen.jsonl", limit=len(_all(data_root)))
    assert result["litert"] == pytest.approx(m["evaluation"]["sets"]["test_unseen"]["wer"]["int8_litert"], abs=1e-4)
    assert result["tflm"] == pytest.approx(m["evaluation"]["sets"]["test_unseen"]["wer"]["int8_tflm"], abs=1e-4)


def _all(data_root):
    from pipeline.corpus import read_manifest

    return read_manifest(data_root / "test_unseen.jsonl").utterances


def test_verify_detects_one_flipped_byte(built, tmp_path):
    import shutil

    from pipeline.errors import ArtifactError
    from pipeline.verify import verify_dist

    copy = tmp_path / "watch"
    shutil.copytree(built[1].parent, copy)
    data = bytearray((copy / "encoder.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "encoder.tflite").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="encoder.tflite does not match graphs.encoder of the manifest"):
        verify_dist(copy)


def _swap_graphs(m, folder):
    """Encoder and predictor files swapped, their sizes and sha256 recomputed: only the tensors tell."""
    (folder / "encoder.tflite").rename(folder / "tmp")
    (folder / "predictor.tflite").rename(folder / "encoder.tflite")
    (folder / "tmp").rename(folder / "predictor.tflite")
    for g in ("encoder", "predictor"):
        f = folder / m["graphs"][g]["file"]
        m["graphs"][g].update(bytes=f.stat().st_size, sha256=sha256_file(f))


def _garbage_encoder(m, folder):
    """A file that is no flatbuffer, with a matching size and sha256."""
    (folder / "encoder.tflite").write_bytes(b"not a flatbuffer at all" * 40)
    m["graphs"]["encoder"].update(bytes=920, sha256=sha256_file(folder / "encoder.tflite"))


def _resigned(edit):
    """The same edit with the integrity digests recomputed after it: only the checks against the graphs can catch it."""

    def run(m, folder):
        from pipeline.contract import integrity_section

        edit(m, folder)
        m["integrity"] = integrity_section(m)

    return run


def _restamped(graph, npu=False, **edits):
    """Graph `graph` (or its NPU copy) carrying a decode contract with `edits` applied to its sections, the manifest's
    size and sha256 recomputed: only the metadata tells."""

    def run(m, folder):
        from pipeline.tflite_meta import read_contract, stamp

        entry = m["graphs"][graph]["npu"] if npu else m["graphs"][graph]
        f = folder / entry["file"]
        contract = read_contract(f.read_bytes(), str(f))
        for section, fields in edits.items():
            contract[section].update(fields)
        f.write_bytes(stamp(f.read_bytes(), contract))
        entry.update(bytes=f.stat().st_size, sha256=sha256_file(f))

    return run


def _edit_tokens_file(m, folder):
    lines = (folder / "tokens.txt").read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    (folder / "tokens.txt").write_text("\n".join(lines) + "\n")


TAMPERS = {
    "tokens-file-edited": (
        _edit_tokens_file,
        r"tokens\.txt disagrees with tokenizer\.vocab of the manifest from line 2",
    ),
    "graph-metadata-disagrees": (
        _restamped("encoder", frontend={"mean": [0.0] * 40}),
        r"encoder\.tflite \(graphs\.encoder\): its metadata's frontend\.mean differs",
    ),
    "npu-graph-metadata-disagrees": (
        _restamped("joiner", npu=True, decode={"max_symbols_per_frame": 9}),
        r"joiner_vela\.tflite \(graphs\.joiner\.npu\): its metadata's decode\.max_symbols_per_frame differs",
    ),
    "tensor-renamed": (
        lambda m, f: m["graphs"]["joiner"]["inputs"][0].update(tensor_name="serving_default_renamed:0"),
        r"graphs\.joiner\.inputs\[0\]\.tensor_name",
    ),
    "tensor-scale": (
        lambda m, f: m["graphs"]["encoder"]["inputs"][0].update(scale=m["graphs"]["encoder"]["inputs"][0]["scale"] * 2),
        r"graphs\.encoder\.inputs\[0\]\.scale",
    ),
    "tensor-shape": (
        lambda m, f: m["graphs"]["joiner"]["outputs"][0].update(shape=[1, 7]),
        r"graphs\.joiner\.outputs\[0\]\.shape",
    ),
    "vocabulary-order": (lambda m, f: m["tokenizer"]["vocab"].reverse(), r"tokenizer\.vocab was edited"),
    "normalization-mean-zeroed": (
        lambda m, f: m["frontend"].update(mean=[0.0] * len(m["frontend"]["mean"])),
        r"frontend\.mean was edited",
    ),
    "file-outside-the-folder": (
        lambda m, f: m["graphs"]["joiner"].update(file="../../joiner.tflite"),
        r"graphs\.joiner\.file .* points outside",
    ),
    "vocabulary-truncated": (
        lambda m, f: m["tokenizer"].update(vocab=m["tokenizer"]["vocab"][:-2]),
        r"tokenizer\.vocab was edited",
    ),
    "vocabulary-truncated-resigned": (
        _resigned(lambda m, f: m["tokenizer"].update(vocab=m["tokenizer"]["vocab"][:-2])),
        r"decode\.predictor\.token 'token' has shape \[1, \d+\], the contract \[1, \d+\]",
    ),
    "blank-out-of-range": (lambda m, f: m["tokenizer"].update(blank_id=99), r"tokenizer\.blank_id was edited"),
    "blank-out-of-range-resigned": (
        _resigned(lambda m, f: m["tokenizer"].update(blank_id=99)),
        r"tokenizer\.blank_id 99 is outside",
    ),
    "state-renamed-resigned": (
        _resigned(lambda m, f: m["streaming"]["states"][0].update(input="h9")),
        r"streaming\.states\[0\] names 'h9'",
    ),
    "role-tensor-renamed-resigned": (
        _resigned(lambda m, f: m["decode"]["joiner"].update(encoder_frame="enc_frame")),
        r"decode\.joiner\.encoder_frame 'enc_frame' is not an input of the joiner graph",
    ),
    "stack-arithmetic-resigned": (
        _resigned(lambda m, f: m["streaming"].update(stack=m["streaming"]["stack"] + 1)),
        r"streaming\.chunk_feature_frames \d+ is not stack",
    ),
    "unknown-field": (lambda m, f: m["decode"].update(beam=4), r"decode.*'beam' was unexpected"),
    "schema-1.4": (lambda m, f: m.update(schema_version="1.4"), r"is schema 1\.4, written by an older pipeline"),
    "encoder-and-predictor-swapped": (_swap_graphs, r"graphs\.encoder\.inputs"),
    "garbage-graph-with-matching-sha256": (
        _garbage_encoder,
        r"encoder\.tflite \(graphs\.encoder\) is not a graph LiteRT can load",
    ),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_verify_names_the_field_of_a_manifest_edited_after_the_build(built, tmp_path, tamper):
    """`verify` trusts nothing: each edit is refused with a message naming the field, through the CLI (exit 2)."""
    edit, words = TAMPERS[tamper]
    copy = tmp_path / "watch"
    shutil.copytree(built[1].parent, copy)
    m = json.loads((copy / "manifest.json").read_text())
    edit(m, copy)
    (copy / "manifest.json").write_text(json.dumps(m))
    r = run_cli("verify", copy)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert re.search(words, line), line


def test_a_synthesized_only_build_trains_with_the_synthesized_fields_and_records_them(built, tmp_path):
    paths = built[0]
    model = tmp_path / "micro_synth.toml"
    model.write_text(f'extends = "{(FIXTURES / "micro").as_posix()}"\n[synthesized.train]\nsteps = 30\n')
    work = (
        tmp_path / "work"
    )  # its own cache (the data stage copied in): other tests find the one dense checkpoint in `built`'s
    shutil.copytree(paths.work_dir / "cache" / "data", work / "cache" / "data")
    manifest_path = build("watch", DataOptions("synth"), BuildPaths(tmp_path / "dist", work), model=str(model))
    m = json.loads(manifest_path.read_text())
    assert m["build"]["training"]["steps"] == 30 and m["model"]["config"]["train"]["steps"] == 30
    assert m["model"]["config"]["synthesized"] == {}  # the recipe that ran, with nothing left to apply


def test_transcribe_gives_each_file_the_pipelines_words_in_both_runtimes(built):
    from pipeline.corpus import read_manifest

    paths, manifest_path, _ = built
    corpus = read_manifest(next((paths.work_dir / "cache" / "data").iterdir()) / "test_unseen.jsonl")
    wavs = [corpus.audio_path(u) for u in corpus.utterances[:3]]
    assert json.loads(manifest_path.read_text())["frontend"]["edge_padding_samples"] == 800  # 100 ms at 8 kHz
    for flags, edge in (([], None), (["--no-edge-padding"], 0)):
        r = run_cli("transcribe", *flags, manifest_path.parent, *wavs)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [
            f"{w}\t{h}" for w, h in zip(wavs, _pipeline_hypotheses(paths, manifest_path, corpus, 3, edge))
        ]
    r = run_cli("transcribe", "--runtime", "tflm", "--json", manifest_path.parent, wavs[0])
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0 and len(rows) == 1, r.stderr
    assert rows[0]["runtime"] == "tflm" and rows[0]["file"] == str(wavs[0]) and rows[0]["audio_seconds"] > 0
    assert isinstance(rows[0]["text"], str)


def test_transcribe_resamples_other_rates_and_refuses_a_bad_file_before_printing_anything(built, tmp_path):
    from pipeline.audio import read_wav, resample, write_wav
    from pipeline.corpus import read_manifest

    paths, manifest_path, _ = built
    corpus = read_manifest(next((paths.work_dir / "cache" / "data").iterdir()) / "test_unseen.jsonl")
    good = corpus.audio_path(corpus.utterances[0])
    hi = tmp_path / "16k.wav"
    write_wav(hi, resample(read_wav(good, 8000), 8000, 16000), 16000)
    r = run_cli("transcribe", manifest_path.parent, hi)
    assert r.returncode == 0 and r.stdout.startswith(f"{hi}\t"), r.stderr
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = run_cli("transcribe", manifest_path.parent, good, bad)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and r.stdout == "" and len(errors) == 1 and "bad.wav is not a valid WAV file" in errors[0]
    r = run_cli("transcribe", tmp_path, good)
    assert r.returncode == 2 and "not a device artifact folder" in r.stderr


@pytest.fixture(scope="module")
def built_omni(built, tmp_path_factory):
    """Omni tiers of the same micro model, tier 90 shipped for the watch; shares the data cache."""
    paths = BuildPaths(tmp_path_factory.mktemp("omni") / "dist", built[0].work_dir)
    return paths, build(
        "watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"), method="omni", tier=90
    )


def test_speaker_ships_sparse_encoded_weights_that_decode_like_the_dense_ones(built_omni, tmp_path):
    paths, _ = built_omni
    model = str(FIXTURES / "micro_tiles.toml")  # every weight's blocks tile it: nothing stored dense
    manifest = build("speaker", DataOptions("synth"), paths, model=model, method="omni", tier=90)
    dense_target = tmp_path / "dense_phone.toml"  # the same export, its weights stored dense
    dense_target.write_text('name = "dense_phone"\n[device]\nruntime = "litert"\nthreads = 2\n[budgets]\nrtf = 0.5\n')
    dense = build(
        str(dense_target),
        DataOptions("synth"),
        BuildPaths(tmp_path / "d", paths.work_dir),
        model=model,
        method="omni",
        tier=90,
    )
    m, w = json.loads(manifest.read_text()), json.loads(dense.read_text())
    validate_manifest(m)
    assert w["model"]["sparsity"]["shipped_encoding"] == "dense"
    assert m["model"]["sparsity"]["sparse_encoded_weights"]["weights_stored_dense"] == 0
    assert m["model"]["sparsity"]["shipped_encoding"] == "sparse"
    assert sum(g["bytes"] for g in m["graphs"].values()) == m["model"]["sparsity"]["int8_bytes"]["sparse_encoded"]
    assert "built-in" in m["latency"]["host"]["runtime"]
    # the same int8 weights: the sparse kernel rounds like the dense ones within a LSB (LiteRT built-in against
    # XNNPACK here), which moves a word now and then (experiments/2026-12-06-sparse-encoding)
    assert (
        abs(
            m["evaluation"]["sets"]["test_unseen"]["wer"]["int8_litert"]
            - w["evaluation"]["sets"]["test_unseen"]["wer"]["int8_litert"]
        )
        <= 0.01
    )
    assert all(c["ok"] for c in m["target"]["budget_check"].values())
    assert m["model"]["sparsity"]["litert_op_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    from pipeline.export import sparse_weight_bytes

    encoded = [
        sparse_weight_bytes((manifest.parent / f"{g}.tflite").read_bytes()) for g in ("encoder", "predictor", "joiner")
    ]
    nonzero = sum(e["nonzero"] for e in encoded)
    assert 0 < nonzero <= m["model"]["sparsity"]["prunable_nonzero"] and sum(e["values"] for e in encoded) >= nonzero
    assert 0 < sum(e["index"] for e in encoded) < sum(e["file"] for e in encoded)
    recorded = m["model"]["sparsity"]["sparse_encoded_weights"]  # what the manifest tells app teams
    assert recorded["nonzero_weights"] == nonzero and recorded["weight_bytes"] + recorded["index_bytes"] == sum(
        e["values"] + e["index"] for e in encoded
    )
    assert verify_dist(manifest.parent) == {"litert": None}  # loads and runs with the resolver the manifest names
    words = StreamingDecoder(manifest.parent)  # an app team's decoder, from the manifest alone
    assert set(words.graphs) == {"encoder", "predictor", "joiner"}


def test_a_search_profile_ships_the_dev_best_per_kernel_mix_within_the_budget(built_omni, tmp_path):
    """A profile with `search`: the densest tiers miss model_bytes, so per-kernel mixes of the omni tiers are scored
    on the dev split (never a test set of the manifest) and the best ships, within the budget, with the search in
    the manifest; the app-facing checks pass."""
    paths, _ = built_omni
    target = tmp_path / "search_speaker.toml"
    target.write_text(
        'name = "search_speaker"\n[device]\nruntime = "litert"\nthreads = 2\n[budgets]\nmodel_bytes = 66_000\n'
        '[build]\nmethod = "omni"\nsparse_encoding = true\nsearch = 6\n'
    )
    manifest = build(
        str(target),
        DataOptions("synth"),
        BuildPaths(tmp_path / "d", paths.work_dir),
        model=str(FIXTURES / "micro_tiles.toml"),
    )
    m = json.loads(manifest.read_text())
    validate_manifest(m)
    s = m["model"]["sparsity"]["search"]
    assert s["candidates_evaluated"] == 6 and s["budget"] == {"model_bytes": 66_000}
    assert set(s["tier_per_kernel"]) == {
        "enc0/kernel",
        "enc0/recurrent_kernel",
        "enc_proj/kernel",
        "pred_lstm/kernel",
        "pred_lstm/recurrent_kernel",
        "pred_proj/kernel",
    }
    assert set(s["tier_per_kernel"].values()) <= set(s["from_tiers"]) and s["uniform_tiers_dev_wer_float32"]
    assert s["dev_wer_float32"] <= min(s["uniform_tiers_dev_wer_float32"].values())
    assert "held out of training" in s["dev_split"] and "dev" not in m["evaluation"]["sets"]
    assert m["model"]["tier"] == s["sparsity_percent"] and m["model"]["method"] == "omni"
    shipped = m["target"]["budget_check"]["model_bytes"]
    assert shipped["ok"] and abs(shipped["value"] - s["estimated_bytes"]) <= 0.02 * shipped["value"]  # byte model
    assert verify_dist(manifest.parent) == {"litert": None}


def test_a_budget_no_tier_meets_is_a_clear_error_naming_each_budget(built_omni, tmp_path):
    from pipeline.errors import BudgetError

    paths, _ = built_omni
    target = tmp_path / "tiny_speaker.toml"
    target.write_text(
        'name = "tiny_speaker"\n[device]\nruntime = "litert"\n[budgets]\nmodel_bytes = 1000\nrtf = 0.5\n'
        '[build]\nmethod = "omni"\ntiers = [0, 90]\n'
    )
    with pytest.raises(BudgetError, match=r"model_bytes: limit 1,000, tier 90 needs [\d,]+") as exc:
        build(
            str(target),
            DataOptions("synth"),
            BuildPaths(tmp_path / "dist", paths.work_dir),
            model=str(FIXTURES / "micro.toml"),
        )
    assert "rtf" not in str(exc.value)  # only the budgets that are missed are named
    assert not (tmp_path / "dist").exists()


def _const_tensors(data: bytes) -> list:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    out = []
    for d in it.get_tensor_details():
        if len(d["shape"]) == 2 and d["dtype"].__name__ == "int8":
            try:
                out.append(it.get_tensor(d["index"]))
            except ValueError:
                pass  # activations: not readable before invoke
    return out


def test_omni_tier_manifest_records_method_tier_sparsity_and_sizes(built_omni):
    m = json.loads(built_omni[1].read_text())
    validate_manifest(m)
    model = m["model"]
    assert model["method"] == "omni" and model["tier"] == 90 and model["sparsity"]["shipped_encoding"] == "dense"
    assert abs(model["sparsity"]["sparsity"] - 0.90) <= 0.005
    assert model["sparsity"]["tiers_in_checkpoint"] == [0, 50, 70, 80, 90]
    # micro's encoder takes 3 x 40 = 120 inputs (and its LSTMs 24 and 8), which 16-wide blocks do not tile: its
    # sparse-encoded graph stores those weights dense (LiteRT decodes them wrongly otherwise)
    assert model["sparsity"]["sparse_encoded_weights"]["weights_stored_dense"] >= 1
    assert model["sparsity"]["int8_bytes"]["sparse_encoded"] > 0
    assert m["evaluation"]["sets"]["test_unseen"]["wer"]["int8_litert"] >= 0


def test_pruned_weights_are_zero_in_the_exported_int8_graphs(built_omni):
    import numpy as np

    from pipeline.checkpoint import ModelCheckpoint

    paths, manifest_path = built_omni
    shipped = json.loads(manifest_path.read_text())["model"]["config_sha256"]
    ck = next(  # the cache also holds other models' omni checkpoints (micro_tiles): the shipped one's
        ck
        for p in paths.work_dir.glob("cache/train/*/checkpoint/model.json")
        if json.loads(p.read_text())["meta"]["method"] == "omni"
        for ck in [ModelCheckpoint.load(p.parent)]
        if ck.config.digest() == shipped
    )
    tensors = [
        t
        for g in ("encoder", "predictor", "joiner")
        for t in _const_tensors((manifest_path.parent / f"{g}.tflite").read_bytes())
    ]
    for name, mask in ck.masks["tier90"].items():
        candidates = [t for t in tensors if t.shape == mask.T.shape]
        assert any(np.all(t[~mask.T] == 0) for t in candidates), f"{name}: pruned weights are not zero in the artifact"


def test_the_default_aat_gate_ships_aat_at_an_omni_checkpoints_sparsest_tier(built_omni, tmp_path):
    paths, _ = built_omni
    out = BuildPaths(tmp_path / "dist", paths.work_dir)  # the omni checkpoint is cached; AAT fine-tunes it
    m = json.loads(
        build(
            "watch", DataOptions("synth"), out, model=str(FIXTURES / "micro.toml"), method="omni", tier=90, aat=True
        ).read_text()
    )
    validate_manifest(m)
    sel = m["model"]["quantization"]["aat_selection"]
    assert (
        sel["rule"] == "sparsest" and sel["sparsest_tier"] is True and sel["shipped"] == "aat"
    )  # whatever test_seen showed
    assert m["model"]["quantization"]["activation_ranges"] == "learned (accelerator-aware training)"
    stages = {p.parent: json.loads(p.read_text())["inputs"] for p in paths.work_dir.glob("cache/export/*/stage.json")}
    aat_encoders = {
        sha256_file(d / "int8" / "encoder.tflite")
        for d, i in stages.items()
        if i["train"].get("phase") == "aat" and i["tier"] == 90
    }
    assert m["graphs"]["encoder"]["sha256"] in aat_encoders


def _dense_aat_checkpoint(work_dir):
    """The dense micro model's AAT checkpoint in the shared work dir (the omni one beside it has five tiers)."""
    from pipeline.checkpoint import ModelCheckpoint

    return next(p for p in work_dir.glob("cache/aat/*/checkpoint") if ModelCheckpoint.load(p).tiers == [0])


def _micro_with(folder, aat_lines: str):
    """micro.toml with lines added to its [aat] table (its last), under the same model name: training is cached
    apart from [aat], so builds of it share the micro model's trained checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "micro.toml").write_text((FIXTURES / "micro.toml").read_text() + aat_lines)
    return str(folder / "micro.toml")


@pytest.fixture(scope="module")
def built_aat(built, tmp_path_factory):
    """The watch build of the same micro model with the AAT phase, shipping AAT's graphs whatever they decode
    (gate = "none"); shares the data and training caches."""
    root = tmp_path_factory.mktemp("aat")
    paths = BuildPaths(root / "dist", built[0].work_dir)
    return paths, build(
        "watch", DataOptions("synth"), paths, model=_micro_with(root / "model", 'gate = "none"\n'), aat=True
    )


@pytest.fixture(scope="module")
def built_gated(built_aat, tmp_path_factory):
    """The same AAT build with the default gate: AAT's graphs or the checkpoint's PTQ ones, chosen on test_seen."""
    paths = BuildPaths(tmp_path_factory.mktemp("gated") / "dist", built_aat[0].work_dir)
    return paths, build("watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"), aat=True)


def test_the_aat_gate_ships_the_graphs_it_chose_with_the_figures_it_chose_on(built_gated):
    paths, manifest_path = built_gated
    m = json.loads(manifest_path.read_text())
    validate_manifest(m)
    q, sel = m["model"]["quantization"], m["model"]["quantization"]["aat_selection"]
    assert (
        sel["rule"] == "sparsest"
        and sel["split"] == "test_seen"
        and sel["words"] == m["evaluation"]["sets"]["test_seen"]["words"]
    )
    assert sel["sparsest_tier"] is False  # a dense checkpoint has one tier: the gap rule decides
    assert sel["aat_minus_ptq"] == pytest.approx(sel["wer_int8_aat"] - sel["wer_int8_ptq"], abs=1e-4)
    assert sel["ptq_minus_float"] == pytest.approx(sel["wer_int8_ptq"] - sel["wer_float"], abs=1e-4)
    if sel["shipped"] == "ptq":  # then the manifest's float figures are the same checkpoint's
        assert sel["wer_float"] == pytest.approx(
            m["evaluation"]["sets"]["test_seen"]["wer"]["float32_litert"], abs=1e-4
        )
    assert (sel["shipped"] == "aat") == (sel["gap_interval95"][0] > 0 and sel["aat_minus_ptq"] <= 0)
    assert sel["gap_interval95"][0] <= sel["ptq_minus_float"] <= sel["gap_interval95"][1]
    # the shipped files are the chosen export's int8 graphs, byte for byte, and the manifest describes that export
    exports = {}
    for stage in paths.work_dir.glob("cache/export/*/stage.json"):
        inputs = json.loads(stage.read_text())["inputs"]
        exports.setdefault(inputs["train"].get("phase", "train"), set()).add(
            sha256_file(stage.parent / "int8" / "encoder.tflite")
        )
    assert m["graphs"]["encoder"]["sha256"] in exports["aat" if sel["shipped"] == "aat" else "train"]
    learned = q["activation_ranges"] == "learned (accelerator-aware training)"
    assert learned == (sel["shipped"] == "aat") and (q["accelerator_aware_training"] is not None) == learned
    assert verify_dist(manifest_path.parent) == {"litert": None, "tflm": None}


def test_the_aat_gate_ships_aat_at_the_sparsest_tier_and_elsewhere_only_where_an_int8_gap_is_measured():
    # (AAT - PTQ, the low end of PTQ's int8 - float gap interval) on the gate split
    cases = {
        "win, gap measured": (-0.06, 0.02),
        "tie, gap measured": (0.0, 0.02),
        "worse, gap measured": (0.01, 0.02),
        "win, no gap": (-0.03, -0.01),
        "worse, no gap": (0.02, 0.0),
    }
    assert {name for name, figures in cases.items() if ships_aat(*figures)} == {
        "win, gap measured",
        "tie, gap measured",
    }
    assert {name for name, figures in cases.items() if ships_aat(*figures, sparsest=True)} == set(cases)


def test_the_sparsest_tier_is_the_highest_of_a_checkpoint_with_several():
    assert sparsest_tier(90, [0, 50, 70, 80, 90]) and not sparsest_tier(80, [0, 50, 70, 80, 90])
    assert not sparsest_tier(0, [0]) and not sparsest_tier(70, [70])  # dense, or one pruned tier: the gap rule


def test_an_aat_gate_on_a_split_the_corpus_lacks_is_refused_before_training(built, tmp_path):
    from pipeline.errors import ConfigError

    paths = BuildPaths(tmp_path / "dist", built[0].work_dir)
    with pytest.raises(
        ConfigError, match="gate_split 'valid' is not a split of the synth corpus .*dev, test_seen, test_unseen"
    ):
        build(
            "watch",
            DataOptions("synth"),
            paths,
            model=_micro_with(tmp_path / "model", 'gate_split = "valid"\n'),
            aat=True,
        )
    assert not (tmp_path / "dist").exists()


def test_aat_artifacts_carry_the_learned_ranges_and_pass_every_verification(built_aat):
    from pipeline.checkpoint import ModelCheckpoint
    from pipeline.quant import int8_params

    paths, manifest_path = built_aat
    m = json.loads(manifest_path.read_text())
    validate_manifest(m)
    q = m["model"]["quantization"]
    assert (
        q["activation_ranges"] == "learned (accelerator-aware training)"
        and q["accelerator_aware_training"]["steps"] == 20
    )
    assert q["aat_selection"] == {"rule": "none", "shipped": "aat"}
    assert verify_dist(manifest_path.parent) == {
        "litert": None,
        "tflm": None,
    }  # schema, hashes, loads in LiteRT and TFLM
    for g in m["graphs"].values():
        assert g["npu"]["npu_operator_fraction"] == 1.0 and g["npu"]["cpu_operators"] == 0
    for s in m["evaluation"]["sets"].values():
        assert set(s["wer"]) == {"float32_litert", "int8_litert", "int8_tflm"}
    ck = ModelCheckpoint.load(_dense_aat_checkpoint(paths.work_dir))
    out = next(t for t in m["graphs"]["encoder"]["outputs"] if t["name"] == "encoder_out")
    scale, zp = int8_params(*ck.tier_ranges(0)["enc_proj"])
    assert out["scale"] == pytest.approx(scale, rel=1e-5) and out["zero_point"] == zp
    assert m["model"]["method"] == "dense" and StreamingDecoder(manifest_path.parent).graphs


def test_bench_parity_on_real_utterances_of_the_aat_checkpoint(built_aat):
    from pipeline.bench import bench_parity

    paths, _ = built_aat
    tier, rates = bench_parity(_dense_aat_checkpoint(paths.work_dir), None, DataOptions("synth"), paths, utterances=3)
    assert tier == 0 and all(r >= 0.99 for r in rates.values()), rates


def test_bench_quant_reports_float_ptq_and_aat_per_tier(built_aat, tmp_path):
    from pipeline.bench import bench_quant

    paths, _ = built_aat
    rows = bench_quant(str(FIXTURES / "micro.toml"), "dense", None, DataOptions("synth"), paths, tmp_path / "rep")
    assert [r.tier for r in rows] == [0] and rows[0].same_operators and rows[0].aat_steps == 20
    r = rows[0]  # the default gate: the shipped WER is AAT's or the trained model's PTQ's, as chosen on test_seen
    assert (
        r.gate_rule == "sparsest"
        and r.gate_split == "test_seen"
        and r.shipped in ("aat", "ptq")
        and r.gate_wer_float is not None
    )
    assert r.wer_shipped == (r.wer_aat if r.shipped == "aat" else r.wer_ptq)
    assert r.shipped_minus_trained_ptq == pytest.approx(r.wer_shipped - r.wer_ptq, abs=1e-4)
    assert rows[0].npu_encoder_cycles_ptq > 0 and rows[0].npu_encoder_cycles_aat > 0
    assert rows[0].gap_ptq == pytest.approx(rows[0].wer_ft_ptq - rows[0].wer_ft_float, abs=1e-4)
    md = (tmp_path / "rep" / "quant.md").read_text()
    assert (
        "| dense | 0 |" in md
        and "AAT int8 never worse than the control" in md
        and "What `build --aat` ships (gate: sparsest" in md
    )
    assert "Rule sparsest ships AAT at the checkpoint's sparsest tier" in md
    assert (tmp_path / "rep" / "quant.csv").read_text().startswith("method,tier,wer_float,wer_ptq")


def test_bench_calibration_varies_only_the_calibration_seed(built, tmp_path):
    from pipeline.bench import bench_calibration

    paths = built[0]
    ck_dir = _dense_checkpoint(paths)
    rows = bench_calibration(ck_dir, None, [11, 12, 11], DataOptions("synth"), paths, tmp_path / "rep")
    assert [(r.tier, r.seed) for r in rows] == [(0, 11), (0, 12)]
    assert rows[0].minus_first == 0 and rows[1].minus_first == pytest.approx(
        rows[1].wer_int8 - rows[0].wer_int8, abs=1e-4
    )
    assert rows[0].wer_float == rows[1].wer_float  # the float graphs do not depend on calibration
    exports = {
        json.loads(p.read_text())["inputs"]["calibration"]["seed"]
        for p in paths.work_dir.glob("cache/export/*/stage.json")
    }
    assert {11, 12} <= exports
    assert "| 0 |" in (tmp_path / "rep" / "calibration.md").read_text()


def test_train_speed_times_every_variant_in_each_round(built):
    from pipeline.bench import bench_train_speed

    paths = built[0]
    speeds = bench_train_speed(
        str(FIXTURES / "micro.toml"), ["dense", "omni"], DataOptions("synth"), paths, steps=2, warmup=2, rounds=2
    )
    assert list(speeds) == ["dense", "omni"] and all(len(v) == 2 and min(v) > 0 for v in speeds.values())


def test_a_second_build_from_scratch_reproduces_the_manifest(built, tmp_path):
    """Same config, seed, data and versions → same figures; the .tflite bytes too (the converter is deterministic)."""
    paths = BuildPaths(tmp_path / "dist", tmp_path / "work")
    again = json.loads(build("watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml")).read_text())
    first = json.loads(built[1].read_text())
    for section in ("model", "frontend", "tokenizer", "streaming", "decode", "evaluation", "memory"):
        assert again[section] == first[section], section
    for g in ("encoder", "predictor", "joiner"):
        assert again["graphs"][g]["sha256"] == first["graphs"][g]["sha256"], (
            f"{g}.tflite differs between two identical builds"
        )
        assert again["graphs"][g]["npu"]["sha256"] == first["graphs"][g]["npu"]["sha256"]
    for k in ("config_sha256", "data_sha256", "code_sha256", "git_commit", "tool_versions"):
        assert again["build"][k] == first["build"][k], k


def test_each_evaluation_set_names_its_speakers_their_wer_and_a_caveat_when_there_are_fewer_than_three(built):
    m = json.loads(built[1].read_text())
    for name, s in m["evaluation"]["sets"].items():
        assert s["speakers"] and set(s["wer_by_speaker"]) == set(s["speakers"]), name
        per = s["wer_by_speaker"].values()
        assert min(per) - 1e-9 <= s["wer"]["int8_litert"] <= max(per) + 1e-9, name  # the overall WER is their mix
        assert ("caveat" in s) == (len(s["speakers"]) < 3), name

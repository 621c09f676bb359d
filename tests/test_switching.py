"""Switchable packages: every tier of one omni checkpoint in one folder, patched and switched at run time."""

import json
import re
import shutil

import numpy as np
import pytest

from examples.streaming_decoder import SwitchableDecoder, read_wav
from pipeline.build import BuildPaths, build
from pipeline.data import DataOptions
from pipeline.errors import ArtifactError, BudgetError, ConfigError
from pipeline.manifest import validate_manifest
from tests.conftest import FIXTURES
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

TIERS = [0, 50, 90]


@pytest.fixture(scope="module")
def package(built, tmp_path_factory):
    """The micro model's omni tiers 0, 50 and 90 as one switchable package for a LiteRT target (its data cache)."""
    root = tmp_path_factory.mktemp("switchable")
    target = root / "phone_tiers.toml"
    target.write_text(
        'name = "phone_tiers"\n[device]\nruntime = "litert"\nthreads = 1\n[budgets]\nrtf = 0.5\n'
        f'[build]\nmethod = "omni"\ntiers = {TIERS}\nswitchable = true\n'
    )
    paths = BuildPaths(root / "dist", built[0].work_dir)
    manifest = build(str(target), DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"))
    return paths, manifest


def _corpus(paths):
    from pipeline.corpus import read_manifest

    return read_manifest(next((paths.work_dir / "cache" / "data").glob("*/test_unseen.jsonl")))


def test_the_package_holds_every_tier_as_a_patch_of_the_densest_and_validates(package):
    paths, manifest_path = package
    m = json.loads(manifest_path.read_text())
    validate_manifest(m)
    sw = m["switching"]
    assert [t["tier"] for t in sw["tiers"]] == TIERS and sw["base_tier"] == 0
    assert sw["tiers"][0]["patches"] is None
    folder = manifest_path.parent
    patches = sorted(p.relative_to(folder).as_posix() for p in (folder / "tiers").rglob("*.npz"))
    assert patches == sorted(
        f"tiers/tier{t}/{g}.patch.npz" for t in TIERS[1:] for g in ("encoder", "joiner", "predictor")
    )
    graphs = sum(g["bytes"] for g in m["graphs"].values())
    assert sw["densest_graph_bytes"] == graphs
    assert sw["package_bytes"] == graphs + sum((folder / p).stat().st_size for p in patches)
    assert m["target"]["budget_check"]["model_bytes"]["value"] == sw["package_bytes"]
    nonzero = [t["nonzero_parameters"] for t in sw["tiers"]]
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[0] > nonzero[-1]
    for t in sw["tiers"]:
        assert set(t["wer"]) == set(m["evaluation"]["sets"])
        assert t["decode_rtf"]["p90"] > 0


def test_patch_round_trip_and_a_patch_of_the_wrong_graph_is_refused(package):
    from pipeline.switching import apply_patch, make_patch

    folder = package[1].parent
    base = (folder / "encoder.tflite").read_bytes()
    tier = bytearray(base)
    tier[100:164] = bytes(64)  # zeros, as a mask makes them
    tier[500] ^= 0x5A  # and another value, as a quantization parameter changes
    patch = make_patch(base, bytes(tier))
    assert apply_patch(base, patch, "p") == bytes(tier)
    with pytest.raises(ArtifactError, match="does not fit its base graph"):
        apply_patch(base[:-16], patch, "p")
    with pytest.raises(ArtifactError, match="is not a readable patch"):
        apply_patch(base, patch[: len(patch) // 2], "p")


def test_every_tier_through_the_switching_runtime_gets_its_standalone_graphs_words(package):
    """The example runtime (numpy + ai-edge-litert, no pipeline import) patched to each tier decodes like the
    pipeline's own decode of that tier's standalone graphs (the shared-grid export the package was made from)."""
    from pipeline.checkpoint import ModelCheckpoint
    from pipeline.decode import greedy_decode
    from pipeline.features import utterance_features
    from pipeline.runtimes import LiteRTGraph
    from pipeline.stages import transducer

    paths, manifest_path = package
    m = json.loads(manifest_path.read_text())
    corpus = _corpus(paths)
    sub = type(corpus)(corpus.utterances[:5], corpus.root)
    grids = {}
    for p in (paths.work_dir / "cache" / "shared_grid").iterdir():
        info = json.loads((p / "stage.json").read_text())
        grids[info["summary"]["tier"]] = p
    ck = next(  # the cache may hold other models' omni checkpoints (micro_tiles): the package's
        ck
        for p in (paths.work_dir / "cache" / "train").iterdir()
        if (p / "checkpoint").is_dir()
        for ck in [ModelCheckpoint.load(p / "checkpoint")]
        if ck.meta.get("method") == "omni" and ck.config.digest() == m["model"]["config_sha256"]
    )
    feats = utterance_features(sub, ck.config.frontend, edge_padding_samples=m["frontend"]["edge_padding_samples"])
    decoder = SwitchableDecoder(manifest_path.parent)
    for tier in TIERS:
        graphs = {
            g: LiteRTGraph((grids[tier] / "int8" / f"{g}.tflite").read_bytes())
            for g in ("encoder", "predictor", "joiner")
        }
        t = transducer(ck.config, ck.tokenizer, graphs)
        standalone = [ck.tokenizer.decode(greedy_decode(t, ck.normalizer(f)).tokens) for f in feats]
        theirs = []
        for u in sub.utterances:
            decoder.reset()
            decoder.set_tier(tier)
            decoder.accept(read_wav(corpus.audio_path(u), m["frontend"]["sample_rate"]))
            theirs.append(decoder.finish())
        assert theirs == standalone, tier


def test_a_switch_mid_stream_rebuilds_the_new_tiers_states_or_hands_them_over(package):
    """Mid-stream, the default rebuilds the new tier's states from the utterance so far (the encoder states equal a
    decoder that ran the new tier from the start; a switch to the same tier changes nothing); `carry="states"` hands
    the old tier's states over unchanged."""
    paths, manifest_path = package
    m = json.loads(manifest_path.read_text())
    corpus = _corpus(paths)
    audio = read_wav(corpus.audio_path(corpus.utterances[0]), m["frontend"]["sample_rate"])
    chunk = m["streaming"]["chunk_feature_frames"] * m["frontend"]["hop_samples"]
    encoder_states = [s["input"] for s in m["streaming"]["states"] if s["graph"] == "encoder"]

    def decoder_after(head, tier, then=None, carry="rebuild"):
        d = SwitchableDecoder(manifest_path.parent, cache=False)
        d.reset()
        d.set_tier(tier)
        d.accept(audio[:head])
        before = {k: v.copy() for k, v in d.states.items()}
        if then is not None:
            d.set_tier(then, carry)
        return d, before

    head = 3 * chunk
    same, before = decoder_after(head, 0, then=0)
    assert all(np.array_equal(same.states[k], v) for k, v in before.items()) and same.tier == 0
    switched, _ = decoder_after(head, 0, then=90)
    fresh, _ = decoder_after(head, 90)
    assert all(np.array_equal(switched.states[k], fresh.states[k]) for k in encoder_states)
    handed, before = decoder_after(head, 0, then=90, carry="states")
    assert handed.tier == 90 and all(np.array_equal(handed.states[k], v) for k, v in before.items())
    for d in (switched, handed):
        d.accept(audio[head:])
        assert isinstance(d.finish(), str)


def test_verify_decodes_every_tier_and_names_a_corrupted_patch(package, tmp_path):
    folder = package[1].parent
    r = run_cli("verify", folder)
    assert r.returncode == 0, r.stderr
    assert all(f"litert tier {t}: loads and runs" in r.stdout for t in TIERS[1:]), r.stdout
    corpus = next((package[0].work_dir / "cache" / "data").glob("*/test_unseen.jsonl"))
    r = run_cli("verify", folder, "--corpus", corpus, "--limit", "3")  # each tier also through the example runtime
    assert r.returncode == 0 and all(f"litert tier {t}: WER" in r.stdout for t in TIERS[1:]), r.stderr + r.stdout
    copy = tmp_path / "pkg"
    shutil.copytree(folder, copy)
    patch = copy / "tiers" / "tier50" / "joiner.patch.npz"
    patch.write_bytes(patch.read_bytes()[:-40] + bytes(40))
    r = run_cli("verify", copy)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and re.search(
        r"joiner\.patch\.npz does not match switching\.tiers\[1\]\.patches\.joiner", line
    )
    m = json.loads((copy / "manifest.json").read_text())  # a patch whose recorded hash was updated too
    data = patch.read_bytes()
    import hashlib

    m["switching"]["tiers"][1]["patches"]["joiner"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (copy / "manifest.json").write_text(json.dumps(m))
    r = run_cli("verify", copy)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "joiner.patch.npz is not a readable patch" in line, line


def test_switchable_refuses_what_a_package_cannot_be(built, tmp_path):
    paths = BuildPaths(tmp_path / "dist", built[0].work_dir)
    with pytest.raises(ConfigError, match="--switchable ships every tier of the checkpoint; --tier picks one"):
        build("watch", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"), tier=50, switchable=True)
    with pytest.raises(ConfigError, match="needs one shared-weight checkpoint"):
        build("phone", DataOptions("synth"), paths, model=str(FIXTURES / "micro.toml"), method="dense", switchable=True)
    assert not (tmp_path / "dist").exists()


def test_the_switching_bench_reports_switch_time_and_every_tier(package, tmp_path):
    paths, manifest_path = package
    corpus = next((paths.work_dir / "cache" / "data").glob("*/test_unseen.jsonl"))
    r = run_cli(
        "bench",
        "switching",
        manifest_path.parent,
        "--corpus",
        corpus,
        "--switches",
        "10",
        "--limit",
        "3",
        "--report",
        tmp_path / "r",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "r" / "switching.json").read_text())
    assert result["switch_cold"]["p90_ms"] > 0 and set(result["tiers"]) == {str(t) for t in TIERS}
    assert all(e["words_equal_standalone"] == e["utterances"] == 3 for e in result["tiers"].values())
    assert {"wer_switched_mid_utterance", "wer_switched_mid_utterance_states_handed_over"} <= set(result["tiers"]["90"])
    assert result["switch_mid_utterance_rebuild"]["p90_ms"] > 0


WATCH = """name = "watch_tiers"
[device]
runtime = "tflm"
threads = 1
[device.npu]
accelerator = "ethos-u55-128"
system_config = "Ethos_U55_High_End_Embedded"
memory_mode = "Shared_Sram"
config_file = "vela.ini"
[budgets]
rtf = 0.5
{budget}
[build]
method = "omni"
tiers = {tiers}
switchable = true
"""


@pytest.fixture(scope="module")
def watch_package(package, tmp_path_factory):
    """The same checkpoint's tiers for a TFLM + Ethos-U target: every tier also as its own Vela-compiled graphs."""
    paths, _ = package
    root = tmp_path_factory.mktemp("watch_switchable")
    target = root / "watch_tiers.toml"
    target.write_text(WATCH.format(budget="", tiers=TIERS))
    out = BuildPaths(root / "dist", paths.work_dir)
    return out, target, build(str(target), DataOptions("synth"), out, model=str(FIXTURES / "micro.toml"))


def test_an_npu_package_ships_every_tiers_compiled_graphs_and_leaves_out_what_does_not_fit(watch_package, tmp_path):
    paths, target, manifest_path = watch_package
    m = json.loads(manifest_path.read_text())
    validate_manifest(m)
    sw, folder = m["switching"], manifest_path.parent
    assert sw["device_storage"] == "compiled_graphs_per_tier" and sw["left_out"] == []
    assert [t["tier"] for t in sw["tiers"]] == TIERS
    for t in sw["tiers"]:
        for g, npu in t["npu"].items():
            data = (folder / npu["file"]).read_bytes()
            assert len(data) == npu["bytes"] and npu["npu_operator_fraction"] == 1.0, (t["tier"], g)
        assert t["npu_rtf"] > 0 and all("int8_tflm" in w for w in t["wer"].values())
    assert sw["tiers"][0]["npu"]["encoder"]["file"] == m["graphs"]["encoder"]["npu"]["file"]
    vela = [sum(e["bytes"] for e in t["npu"].values()) for t in sw["tiers"]]
    assert sw["package_bytes"] == sum(vela) == m["target"]["budget_check"]["model_bytes"]["value"]
    assert vela == sorted(vela, reverse=True) and vela[0] > vela[-1], vela  # Vela compresses the zeros away

    # model_bytes one byte short of all three: the last tier no longer fits and is left out, said why
    target.write_text(WATCH.format(budget=f"model_bytes = {sw['package_bytes'] - 1}", tiers=TIERS))
    m2 = json.loads(
        build(
            str(target),
            DataOptions("synth"),
            BuildPaths(tmp_path / "a", paths.work_dir),
            model=str(FIXTURES / "micro.toml"),
        ).read_text()
    )
    assert [t["tier"] for t in m2["switching"]["tiers"]] == TIERS[:-1]
    (left,) = m2["switching"]["left_out"]
    assert left["tier"] == TIERS[-1] and "model_bytes" in left["reason"]
    assert m2["switching"]["package_bytes"] == sum(vela[:-1])
    # not even the densest tier fits: a clear error and no folder
    target.write_text(WATCH.format(budget=f"model_bytes = {vela[0] - 1}", tiers=TIERS))
    with pytest.raises(BudgetError, match="with its densest tier alone: model_bytes"):
        build(
            str(target),
            DataOptions("synth"),
            BuildPaths(tmp_path / "b", paths.work_dir),
            model=str(FIXTURES / "micro.toml"),
        )
    assert not (tmp_path / "b").exists()


def test_verify_and_the_bench_decode_every_tier_of_an_npu_package_in_tflm(watch_package, tmp_path):
    paths, _, manifest_path = watch_package
    folder = manifest_path.parent
    corpus = next((paths.work_dir / "cache" / "data").glob("*/test_unseen.jsonl"))
    r = run_cli("verify", folder, "--corpus", corpus, "--limit", "2")
    assert r.returncode == 0, r.stderr
    assert all(f"{rt} tier {t}: WER" in r.stdout for rt in ("litert", "tflm") for t in TIERS[1:]), r.stdout
    r = run_cli(
        "bench", "switching", folder, "--corpus", corpus, "--switches", "10", "--limit", "2", "--report", tmp_path / "r"
    )
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "r" / "switching.json").read_text())
    assert result["switch_tflm"]["p90_ms"] > 0 and all("wer_tflm" in e for e in result["tiers"].values())
    copy = tmp_path / "pkg"  # a tier's compiled graph swapped for another tier's: caught by its digest
    shutil.copytree(folder, copy)
    (copy / "tiers" / "tier90" / "npu" / "encoder_vela.tflite").write_bytes(
        (copy / "tiers" / "tier50" / "npu" / "encoder_vela.tflite").read_bytes()
    )
    r = run_cli("verify", copy)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and "does not match switching.tiers[2].npu.encoder" in line, line

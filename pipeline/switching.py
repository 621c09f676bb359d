"""Switchable packages: every tier of one shared-weight (omni) checkpoint in one device folder, stored once.

The densest tier's int8 graphs ship whole; every other tier ships as a patch of them. For a patch to be small the tiers
share one weight grid: a sparser tier's int8 weights are the densest tier's int8 weights with its mask applied (the
densest tier's per-channel scales), so its weights differ from the base only by zeros. What else differs per tier is
small: the activation scales and zero points its own calibration found, the biases requantized to them, and the
graph's other constants.

Weights on the densest grid: a tier's own export quantizes its masked weights with per-channel scales from its own
largest kept weight; the shared grid uses the densest tier's (never smaller), so a sparser tier loses some weight
resolution. `pipeline build --switchable` measures each tier on both grids and reports the difference.

Patch format (`<graph>.patch.npz`, NumPy's zip of arrays, no pickle): `zero`, a bit per byte of the graph file
(np.packbits, big-endian bit order) set where the tier's byte is 0 and the base's is not; `xor`, one byte per byte of
the file, the tier's byte XOR the base's wherever `zero` is clear (0 elsewhere). Applying it: start from the base
file's bytes, zero the bytes `zero` marks, XOR with `xor`. Both arrays compress to little: only the zeroed weights, the
quantization parameters and the biases differ.

On a TFLM + Ethos-U target (the watch) each tier also ships its own Vela-compiled graphs: Vela packs every graph's
weights into a compressed command stream, which cannot be patched in place on a microcontroller, so the device keeps
every tier's compiled graphs in flash and switches by building its interpreter on another tier's (one arena serves
all: the tiers' graphs have the same tensors). There the tiers' compiled graphs are what the package's bytes count.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError
from .tflite_meta import fully_connected, load_model, pack_model, tflite_schema

log = logging.getLogger(__name__)
PATCH_SUFFIX = ".patch.npz"


def _values(buffer: Any, dtype: type) -> np.ndarray:
    return np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), dtype)


def shared_grid(base: bytes, own: bytes, where: str) -> bytes:
    """Tier graph `own` (its own export) on the weight grid of `base` (the densest tier's export of the same
    checkpoint and graph): every fully-connected weight = the base's int8 weight where `own`'s is non-zero, else 0,
    with the base's per-channel scales; each bias requantized to (own input scale x base weight scale); every other
    quantization parameter and constant `own`'s. Written by the same builder as `shared_grid(base, base)` (the shipped
    base), so the two line up byte for byte; `make_patch` refuses graphs that do not.

    The rule needs no mask: where `own` rounds a kept weight to 0, |w| < own scale / 2 <= base scale / 2, so the
    base's int8 weight there is 0 too."""
    a, ref, b = load_model(base), load_model(base), load_model(own)
    if len(a.subgraphs) != len(b.subgraphs) or len(a.buffers) != len(b.buffers):
        raise ArtifactError(f"{where}: the tier's graph does not have the structure of the densest tier's.")
    weight_buffers: set[int] = set()
    for sa, sr, sb in zip(a.subgraphs, ref.subgraphs, b.subgraphs):
        if len(sa.tensors) != len(sb.tensors) or len(sa.operators) != len(sb.operators):
            raise ArtifactError(f"{where}: the tier's graph does not have the structure of the densest tier's.")
        for i, (ta, tb) in enumerate(zip(sa.tensors, sb.tensors)):
            if list(ta.shape) != list(tb.shape) or ta.type != tb.type or ta.buffer != tb.buffer:
                raise ArtifactError(f"{where}: tensor {i} differs in shape, type or buffer from the densest tier's.")
            ta.quantization = tb.quantization
        for x, w, bias in fully_connected(b, sb):
            tw = sr.tensors[w]
            if tw.type != tflite_schema().TensorType.INT8 or a.buffers[tw.buffer].data is None:
                continue  # weights computed at run time: nothing stored to share
            base_q, own_q = _values(ref.buffers[tw.buffer], np.int8), _values(b.buffers[tw.buffer], np.int8)
            a.buffers[tw.buffer].data = np.where(own_q != 0, base_q, 0).astype(np.int8).view(np.uint8)
            sa.tensors[w].quantization = tw.quantization
            weight_buffers.add(tw.buffer)
            if bias >= 0 and b.buffers[sb.tensors[bias].buffer].data is not None:
                tb = sb.tensors[bias]
                real = _values(b.buffers[tb.buffer], np.int32) * np.asarray(tb.quantization.scale, np.float64)
                s_in = np.float32(sb.tensors[x].quantization.scale[0])
                scale = s_in * np.asarray(tw.quantization.scale, np.float32)
                q = np.clip(np.round(real / scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
                a.buffers[tb.buffer].data = q.view(np.uint8)
                sa.tensors[bias].quantization.scale = scale.astype(np.float32).tolist()
                weight_buffers.add(tb.buffer)
    for j, (xa, xb) in enumerate(zip(a.buffers, b.buffers)):
        if j not in weight_buffers and xb.data is not None:
            xa.data = xb.data
    return pack_model(a)


def make_patch(base: bytes, tier: bytes) -> bytes:
    """The patch that turns `base` into `tier` (same length), as `.patch.npz` bytes (module docstring)."""
    a, b = np.frombuffer(base, np.uint8), np.frombuffer(tier, np.uint8)
    if len(a) != len(b):
        raise ArtifactError("a tier's graph does not line up with the densest tier's once written (lengths differ).")
    zero = (b == 0) & (a != 0)
    out = io.BytesIO()
    np.savez_compressed(out, zero=np.packbits(zero), xor=np.where(zero, 0, a ^ b).astype(np.uint8))
    return out.getvalue()


def apply_patch(base: bytes, patch: bytes, where: str) -> bytes:
    """`base` with the patch applied; `ArtifactError` naming `where` if the patch is not one for a graph this size."""
    try:
        with np.load(io.BytesIO(patch), allow_pickle=False) as p:
            zero, xor = p["zero"], p["xor"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{where} is not a readable patch ({exc}).") from None
    out = np.frombuffer(base, np.uint8).copy()
    if xor.dtype != np.uint8 or xor.shape != out.shape or zero.dtype != np.uint8 or len(zero) != (len(out) + 7) // 8:
        raise ArtifactError(f"{where} does not fit its base graph ({len(out)} bytes).")
    out[np.unpackbits(zero, count=len(out)).astype(bool)] = 0
    out ^= xor
    return out.tobytes()


def patch_path(folder: Path, tier: int, graph: str) -> Path:
    return Path(folder) / "tiers" / f"tier{tier}" / f"{graph}{PATCH_SUFFIX}"


def stage_shared_grid(cache: Any, base: Any, export: Any) -> Any:
    """The tier of `export` on the weight grid of `base` (the densest tier's export of the same checkpoint): an
    export-like artifact (`int8/` and the tier's own `float32/`), so the verify stage measures it like any export."""
    import shutil

    from .codehash import code_digest
    from .export import GRAPHS

    key = {"base": base.key, "export": export.key, "code": code_digest(stage_shared_grid, "switching")}

    def run(tmp: Path) -> dict[str, Any]:
        shutil.copytree(export.folder / "float32", tmp / "float32")
        (tmp / "int8").mkdir()
        sizes = {}
        for g in GRAPHS:
            data = shared_grid(
                (base.folder / "int8" / f"{g}.tflite").read_bytes(),
                (export.folder / "int8" / f"{g}.tflite").read_bytes(),
                f"tier {export.summary['tier']} {g}",
            )
            (tmp / "int8" / f"{g}.tflite").write_bytes(data)
            sizes[g] = len(data)
        summary = {k: v for k, v in export.summary.items() if k not in ("bytes", "sparse_encoded_weights")}
        return {
            **summary,
            "sparse_encoded_weights": None,
            "bytes": {"float32": export.summary["bytes"]["float32"], "int8": sizes},
            "weight_grid": f"tier {base.summary['tier']}",
        }

    return cache.run("shared_grid", key, run)


def npu_path(tier: int, graph: str) -> str:
    """Where a non-base tier's Vela-compiled graph lies in a TFLM package, relative to the folder."""
    return f"tiers/tier{tier}/npu/{graph}_vela.tflite"


def build_switchable(
    cache: Any, target: Any, cfg: Any, tiers: list[int], corpus: Any, feats: Any, steps: int | None, out_dir: Path
) -> Path:
    """`dist/<target>/` holding the tiers of one omni checkpoint: the densest tier's graphs whole, a patch per other
    tier, each tier measured (on the shared grid, and on its own for comparison) and listed in the manifest's
    `switching`. On a TFLM + Ethos-U target every tier also ships its own Vela-compiled graphs (the device keeps each
    tier's in flash and switches by pointing the interpreter at another tier's; Vela's compressed weight streams cannot
    be patched in place), and those are what the package's bytes count.

    Tiers are taken densest first: the base tier must meet every budget; a further tier joins when it meets the arena
    and real-time budgets and the package stays within `model_bytes`, else it is left out (logged, and listed in
    `switching.left_out` with the reason)."""
    import hashlib
    from dataclasses import replace

    from .budgets import budget_figures, npu_latency, over_budget
    from .calibrate import load_calibration_recipe
    from .checkpoint import ModelCheckpoint
    from .dist import device_output, make_manifest, write_dist
    from .errors import BudgetError
    from .evaluate import stage_verify
    from .export import GRAPHS
    from .export_stage import stage_export
    from .stages import stage_train

    recipe = load_calibration_recipe(target.build.calibration)
    trained = stage_train(cache, cfg, feats, steps, method="omni")
    exports = {t: stage_export(cache, trained, corpus, recipe, t) for t in tiers}
    base_tier = tiers[0]
    grids = {t: stage_shared_grid(cache, exports[base_tier], exports[t]) for t in tiers}
    compiled = target.device.runtime == "tflm" and target.device.npu is not None
    base = {g: (grids[base_tier].folder / "int8" / f"{g}.tflite").read_bytes() for g in GRAPHS}
    storage = (
        "bytes of every tier's three Vela-compiled graphs (flash)"
        if compiled
        else "bytes of the package: the densest tier's three graphs and every other tier's patches"
    )
    files: dict[str, bytes] = {}
    measured: dict[int, dict[str, Any]] = {}
    entries, left_out = [], []
    package = 0
    for t in tiers:
        v = stage_verify(cache, grids[t], trained.folder, corpus, target, "dense")
        graphs = {g: (grids[t].folder / "int8" / f"{g}.tflite").read_bytes() for g in GRAPHS}
        mine = (
            {}
            if t == base_tier
            else {patch_path(Path("."), t, g).as_posix(): make_patch(base[g], graphs[g]) for g in GRAPHS}
        )
        npu_dir = Path(v["folder"]) / "npu"
        vela = {g: (npu_dir / f"{g}_vela.tflite").read_bytes() for g in GRAPHS} if compiled else {}
        if compiled:
            added = sum(len(b) for b in vela.values())
            if t != base_tier:
                mine.update({npu_path(t, g): vela[g] for g in GRAPHS})
        else:
            added = sum(len(b) for b in (base.values() if t == base_tier else mine.values()))
        figures = budget_figures(target, cfg, grids[t].summary, v)
        figures["model_bytes"] = {"value": package + added, "basis": storage}
        miss = over_budget(target, figures, t)
        if miss and t == base_tier:
            raise BudgetError(
                f"the switchable package of {cfg.name} misses the budgets of target {target.name!r} with its densest "
                f"tier alone: {miss}; raise the budget, or list sparser tiers in the profile's build.tiers."
            )
        if miss:
            log.info("%s: tier %d left out of the package: %s", target.name, t, miss)
            left_out.append({"tier": t, "reason": miss})
            continue
        package += added
        files.update(mine)
        measured[t] = v
        own = v if t == base_tier else stage_verify(cache, exports[t], trained.folder, corpus, target, "dense")
        entry: dict[str, Any] = {
            "tier": t,
            "nonzero_parameters": grids[t].summary["sparsity"]["nonzero_parameters"],
            "patches": None
            if t == base_tier
            else {
                g: {
                    "file": (rel := patch_path(Path("."), t, g).as_posix()),
                    "bytes": len(files[rel]),
                    "sha256": hashlib.sha256(files[rel]).hexdigest(),
                }
                for g in GRAPHS
            },
            "graph_sha256": {g: hashlib.sha256(graphs[g]).hexdigest() for g in GRAPHS},
            "wer": {
                split: {
                    "int8_litert": s["wer"]["int8_litert"],
                    "own_grid_int8_litert": own["sets"][split]["wer"]["int8_litert"],
                    "float32_litert": s["wer"]["float32_litert"],
                    **({"int8_tflm": s["wer"]["int8_tflm"]} if "int8_tflm" in s["wer"] else {}),
                }
                for split, s in v["sets"].items()
            },
            "decode_rtf": v["latency"]["decode_rtf"],
            "tflm_arena_bytes": max(v["tflm_arena_bytes"].values()),
        }
        if compiled:
            entry["npu"] = {
                g: {
                    "estimated": True,
                    **v["npu"][g],
                    "file": f"npu/{g}_vela.tflite" if t == base_tier else npu_path(t, g),
                    "bytes": len(vela[g]),
                    "sha256": hashlib.sha256(vela[g]).hexdigest(),
                }
                for g in GRAPHS
            }
            entry["npu_rtf"] = round(npu_latency(v, target, cfg)["rtf"], 6)
        entries.append(entry)
    figures = budget_figures(target, cfg, grids[base_tier].summary, measured[base_tier])
    figures["model_bytes"] = {
        "value": package,
        "basis": f"{storage}; tiers {', '.join(str(e['tier']) for e in entries)}",
    }
    switching = {
        "base_tier": base_tier,
        "weight_grid": "densest_tier",
        "patch_format": "npz_zero_bitmap_xor",
        "device_storage": "compiled_graphs_per_tier" if compiled else "base_graphs_and_patches",
        "package_bytes": package,
        "densest_graph_bytes": _densest_bytes(entries[0], base, compiled),
        "tiers": entries,
        "left_out": left_out,
    }
    ck = replace(ModelCheckpoint.load(trained.folder, expect=cfg, ignore=("aat",)), config=cfg)

    def make(graphs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        m = make_manifest(target, ck, graphs, measured[base_tier], corpus, grids[base_tier].summary, trained.summary)
        limit = m["target"]["budgets"]["model_bytes"]
        m["target"]["budget_check"]["model_bytes"] = {
            "limit": limit,
            **figures["model_bytes"],
            "ok": limit is None or package <= limit,
        }
        m["switching"] = switching
        return m

    base_npu = Path(measured[base_tier]["folder"]) / "npu" if compiled else None
    return write_dist(device_output(out_dir, target.name), grids[base_tier].folder / "int8", make, base_npu, files)


def _densest_bytes(entry: dict[str, Any], base: dict[str, bytes], compiled: bool) -> int:
    """The base tier's graphs as the device stores them: its Vela-compiled graphs on an NPU target, else its .tflite."""
    if compiled:
        return sum(e["bytes"] for e in entry["npu"].values())
    return sum(len(b) for b in base.values())


def load_example_decoder():  # type: ignore[no-untyped-def]
    """examples/streaming_decoder.py, the runtime app teams copy, loaded from the project's checkout."""
    import importlib.util

    from .config import PROJECT_ROOT

    path = PROJECT_ROOT / "examples" / "streaming_decoder.py"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the switching bench measures the example runtime from a checkout.")
    spec = importlib.util.spec_from_file_location("streaming_decoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def bench_switching(folder: Path, corpus_path: Path, switches: int = 100, limit: int | None = None) -> dict[str, Any]:
    """Measure a switchable package through the example runtime (`SwitchableDecoder`): the time of a tier switch
    (patching the base graphs and loading them: `cold`; a tier already loaded: `warm`; mid-utterance with the states
    rebuilt, a loaded tier: `mid_utterance_rebuild`), every tier's words against the pipeline's own decode of that
    tier's graphs (the standalone artifact), every tier's WER, and what a switch in the middle of an utterance costs:
    from the base tier to each other tier at the chunk boundary after half the audio, states rebuilt (the default) or
    handed over, against decoding the whole utterance at that tier."""
    import time

    from .corpus import read_manifest
    from .decode import greedy_decode
    from .verify import check_folder, manifest_features, transducer_from_manifest, utterance_errors

    folder = Path(folder)
    manifest = check_folder(folder)
    if "switching" not in manifest:
        raise ArtifactError(f"{folder} is not a switchable package (its manifest has no `switching`).")
    example = load_example_decoder()
    corpus = read_manifest(corpus_path)
    utts = corpus.utterances[:limit] if limit else corpus.utterances
    sub = type(corpus)(utts, corpus.root)
    refs = [u.text for u in utts]
    words = sum(len(r.split()) for r in refs)

    def wer(hyps: list[str]) -> float:
        return round(sum(utterance_errors(refs, hyps)) / words, 5)

    tiers = [t["tier"] for t in manifest["switching"]["tiers"]]
    base = manifest["switching"]["base_tier"]

    cold = example.SwitchableDecoder(folder, cache=False)
    times = []
    for i in range(switches):
        t0 = time.perf_counter()
        cold.set_tier(tiers[(i + 1) % len(tiers)])
        times.append(time.perf_counter() - t0)
    warm = example.SwitchableDecoder(folder)
    for t in tiers:
        warm.set_tier(t)
    warm_times = []
    for i in range(switches):
        t0 = time.perf_counter()
        warm.set_tier(tiers[(i + 1) % len(tiers)])
        warm_times.append(time.perf_counter() - t0)

    tflm = manifest["target"]["runtime"] == "tflm"
    tflm_times = []
    if tflm:  # a TFLM switch: the three interpreters built on another tier's graphs (host CPU kernels, int8 graphs)
        from .runtimes import TFLMGraph
        from .verify import tier_graph

        graphs = {t: {g: tier_graph(folder, manifest, t, g) for g in manifest["graphs"]} for t in tiers}
        for i in range(switches):
            t = tiers[(i + 1) % len(tiers)]
            t0 = time.perf_counter()
            for g, e in manifest["graphs"].items():
                TFLMGraph(graphs[t][g], e["tflm_arena_bytes"])
            tflm_times.append(time.perf_counter() - t0)

    sr = manifest["frontend"]["sample_rate"]
    audio = [example.read_wav(corpus.audio_path(u), sr) for u in utts]

    rebuild_times: list[float] = []

    def run(decoder: Any, x: np.ndarray, start: int, then: int | None = None, carry: str = "rebuild") -> str:
        decoder.reset()
        decoder.set_tier(start)
        if then is None:
            decoder.accept(x)
        else:
            half = len(x) // 2
            decoder.accept(x[:half])
            t0 = time.perf_counter()
            decoder.set_tier(then, carry)
            if carry == "rebuild":
                rebuild_times.append(time.perf_counter() - t0)
            decoder.accept(x[half:])
        return decoder.finish()

    per_tier = {}
    for t in tiers:
        pipe, fe, norm, tok = transducer_from_manifest(folder, manifest, "litert" if t == base else f"litert tier {t}")
        feats = manifest_features(manifest, fe, norm, sub)
        standalone = [tok.decode(greedy_decode(pipe, f).tokens) for f in feats]
        runtime = [run(warm, x, t) for x in audio]
        entry: dict[str, Any] = {
            "words_equal_standalone": sum(a == b for a, b in zip(runtime, standalone)),
            "utterances": len(utts),
            "wer": wer(runtime),
        }
        if tflm:
            t_tflm = transducer_from_manifest(folder, manifest, "tflm" if t == base else f"tflm tier {t}")[0]
            entry["wer_tflm"] = wer([tok.decode(greedy_decode(t_tflm, f).tokens) for f in feats])
        if t != base:
            entry["wer_switched_mid_utterance"] = wer([run(warm, x, base, t) for x in audio])
            entry["wer_switched_mid_utterance_states_handed_over"] = wer(
                [run(warm, x, base, t, "states") for x in audio]
            )
        per_tier[t] = entry

    def pct(v: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(1000 * float(np.percentile(v, 50)), 3),
            "p90_ms": round(1000 * float(np.percentile(v, 90)), 3),
        }

    return {
        "folder": str(folder),
        "corpus": str(corpus_path),
        "switches": switches,
        "switch_cold": pct(times),
        "switch_warm": pct(warm_times),
        "switch_mid_utterance_rebuild": pct(rebuild_times),
        **({"switch_tflm": pct(tflm_times)} if tflm else {}),
        "package_bytes": manifest["switching"]["package_bytes"],
        "densest_graph_bytes": manifest["switching"]["densest_graph_bytes"],
        "tiers": per_tier,
    }

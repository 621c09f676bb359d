"""`pipeline bench sparsity`: every method x tier, measured with the real converter, runtime and Vela.

Training, export and Vela runs go through the stage cache, so a rerun (or a later
`pipeline build` of the same method and tier) reuses them. Writes `sparsity.csv`,
`sparsity.md` and `sparsity_pareto.png` (int8 WER against artifact bytes, one line
per method).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .build import BuildPaths
from .cache import Artifact, StageCache
from .calibrate import CalibrationRecipe, load_calibration_recipe
from .checkpoint import ModelCheckpoint
from .config import AatConfig, load_model_config
from .data import DataOptions
from .evaluate import eval_sets
from .export import GRAPHS
from .export_stage import stage_export
from .fsutil import atomic_directory
from .methods import check_method
from .npu import compile_for_npu
from .preflight import Output
from .runtimes import LiteRTGraph
from .stages import begin, stage_corpus, stage_data, stage_features, stage_train, transducer
from .targets import load_target
from .verify import paired_bootstrap, score

log = logging.getLogger(__name__)
SPLIT = "test_unseen"


@dataclass(frozen=True)
class Row:
    method: str
    tier: int
    sparsity: float  # measured over the prunable weights
    nonzero_parameters: int
    prunable_nonzero: int
    wer_float: float
    wer_int8: float
    bytes_int8_dense: int
    bytes_int8_sparse: int | None
    vela_flash_bytes: int
    npu_encoder_cycles: int  # Vela's estimate for one encoder chunk
    npu_cycles_per_second: float  # encoder chunks + predictor/joiner steps of the eval decode
    train_seconds: float  # wall time of the training run that produced this tier (omni: all tiers at once)
    train_steps: int
    # sparse-encoded weights, read from the flatbuffers: stored int8 values + their CSR index bytes, nonzero values
    sparse_weight_bytes: int | None = None
    sparse_nonzero: int | None = None
    encoder_units: int | None = None  # the dense-width family: the encoder width this row was trained at
    search_budget: int | None = None  # omni-search rows: the shipped-bytes budget the per-kernel mix was searched for

    @property
    def shipped_bytes(self) -> int:
        """int8 .tflite bytes as a LiteRT target ships them: sparse-encoded where that is smaller."""
        return min(b for b in (self.bytes_int8_sparse, self.bytes_int8_dense) if b)

    @property
    def label(self) -> str:
        return f"{self.method} w{self.encoder_units}" if self.encoder_units else f"{self.method} {self.tier}"


WIDTH_METHOD = "dense-width"


def width_config(cfg: Any, units: int) -> Any:
    """`cfg` trained dense at another width: the encoder's LSTMs at `units`, the predictor's units and the joiner's
    dimension scaled by the same ratio (multiples of 8), everything else the same recipe."""

    def scaled(n: int) -> int:
        return max(8, int(round(n * units / cfg.encoder.units / 8)) * 8)

    return replace(
        cfg,
        name=f"{cfg.name}-w{units}",
        encoder=replace(cfg.encoder, units=units),
        predictor=replace(cfg.predictor, units=scaled(cfg.predictor.units)),
        joiner=replace(cfg.joiner, dim=scaled(cfg.joiner.dim)),
    )


def _measure(
    cache: StageCache,
    method: str,
    tier: int,
    trained: Artifact,
    corpus: Any,
    target_name: str,
    recipe: CalibrationRecipe | None = None,
    timed: bool = True,
) -> tuple[Row, Artifact, dict[str, list[int]]]:
    """One tier of one checkpoint: its export (through the stage cache, calibrated with `recipe`, default the target's)
    measured; returns the row, the export and the word errors of every test utterance ({"float32": [...], "int8":
    [...], "words": reference words}). `timed=False`: the row's training time is reported apart (or not at all)."""
    target = load_target(target_name)
    recipe = recipe or load_calibration_recipe(target.build.calibration)
    exported = stage_export(cache, trained, corpus, recipe, tier)
    export_dir, export = exported.folder, {"key": exported.key, **exported.summary}
    train = trained.summary if timed else {"wall_seconds": 0.0, "steps": 0}

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(trained.folder)
        feats, refs, seconds = eval_sets(corpus, ck)[SPLIT]
        wer = {}
        stats = None
        errors: dict[str, list[int]] = {"words": [len(r.split()) for r in refs]}
        for variant in ("float32", "int8"):
            t = transducer(
                ck.config,
                ck.tokenizer,
                {g: LiteRTGraph((export_dir / variant / f"{g}.tflite").read_bytes()) for g in GRAPHS},
            )
            s = score(t, ck.tokenizer, feats, refs, seconds, desc=f"{method} {tier} {variant}")
            wer[variant] = s.wer
            errors[variant] = s.word_errors
            stats = s.stats
        npu = {g: compile_for_npu(export_dir / "int8" / f"{g}.tflite", target.device.npu, tmp / "npu") for g in GRAPHS}
        calls = {"encoder": stats.encoder_calls, "predictor": stats.predictor_calls, "joiner": stats.joiner_calls}
        audio = stats.feature_frames * ck.config.frontend.hop_ms / 1000
        return {
            "wer": wer,
            "errors": errors,
            "flash": sum(r.flash_bytes for r in npu.values()),
            "encoder_cycles": npu["encoder"].cycles_total,
            "cycles_per_second": sum(calls[g] * npu[g].cycles_total for g in GRAPHS) / audio,
        }

    key = {"export": export["key"], "split": SPLIT, "npu": asdict(target.device.npu), "per_utterance": True}
    m = cache.run("bench", key, run).summary
    sp, enc = export["sparsity"], export.get("sparse_encoded_weights")
    row = Row(
        method,
        tier,
        round(sp["sparsity"], 5),
        sp["nonzero_parameters"],
        sp["prunable_nonzero"],
        round(m["wer"]["float32"], 5),
        round(m["wer"]["int8"], 5),
        sum(export["bytes"]["int8"].values()),
        sum(export["bytes"]["int8_sparse"].values()) if "int8_sparse" in export["bytes"] else None,
        m["flash"],
        m["encoder_cycles"],
        round(m["cycles_per_second"]),
        round(train["wall_seconds"], 1),
        train["steps"],
        enc["values"] + enc["index"] if enc else None,
        enc["nonzero"] if enc else None,
    )
    return row, exported, m["errors"]


def read_rows(path: Path) -> list[Row]:
    """Rows of an earlier `sparsity.csv`, to report runs made by separate invocations together."""
    from .errors import DataError

    types = {f.name: f.type for f in fields(Row)}
    optional = {f.name for f in fields(Row) if f.default is not MISSING}
    try:
        with open(path, newline="") as fh:
            out = []
            for rec in csv.DictReader(fh):
                vals = {}
                for k, t in types.items():
                    v = rec.get(k, "") if k in optional else rec[k]  # columns added later are empty in older reports
                    vals[k] = (
                        None
                        if v == ""
                        else (v if t == "str" else int(float(v)) if t in ("int", "int | None") else float(v))
                    )
                out.append(Row(**vals))
            return out
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a sparsity report CSV ({exc}).") from None


def bench_sparsity(
    model: str,
    methods: list[str],
    tiers: list[int],
    data: DataOptions,
    paths: BuildPaths,
    out: Path,
    steps: int | None = None,
    target: str = "watch",
    merge: list[Path] = (),
    widths: list[int] = (),
    search_budgets: list[int] = (),
    search: int = 24,
) -> list[Row]:
    """Every method x tier of `model`, and the same recipe trained dense at each encoder width of `widths` (the
    baseline a pruned tier must beat at its size); for omni, also the per-kernel mix of its tiers the budget search
    finds (scoring `search` mixes on the dev split) within each of `search_budgets` sparse-encoded bytes."""
    cfg = load_model_config(model)
    for m in methods:
        for t in tiers:
            check_method(m, cfg, t if m in ("tfmot", "csp") and t > 0 else None)
    cache, src = begin(cfg, data, paths.work_dir, [Output(out, "sparsity bench report")])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    rows: list[Row] = []
    errors: dict[tuple[str, int], dict[str, list[int]]] = {}

    def measure(method: str, tier: int, trained: Artifact) -> None:
        row, _, errors[method, tier] = _measure(cache, method, tier, trained, corpus, target)
        rows.append(row)
        log.info("%s", row)

    for units in widths:
        wcfg = width_config(cfg, units)
        trained = stage_train(cache, wcfg, feats, steps, method="dense")
        row, _, errors[WIDTH_METHOD, units] = _measure(cache, WIDTH_METHOD, 0, trained, corpus, target)
        rows.append(replace(row, encoder_units=units))
        log.info("%s", rows[-1])
    for method in methods:
        if method in ("dense", "omni"):
            trained = stage_train(cache, cfg, feats, steps, method=method)
            for tier in [0] if method == "dense" else [0, *tiers] if 0 not in tiers else tiers:
                measure(method, tier, trained)
            if method == "omni":
                rows.extend(searched_rows(cache, trained, corpus, target, rows, search_budgets, search, errors))
        else:
            for tier in (t for t in tiers if t > 0):
                measure(method, tier, stage_train(cache, cfg, feats, steps, method=method, tier=tier))
    earlier = [r for p in merge for r in read_rows(p) if r.label not in {x.label for x in rows}]
    merged = {(r.method, r.tier) for r in earlier}
    rows = earlier + rows
    write_report(rows, out, cfg.name, steps or cfg.train.steps, errors, merged=merged)
    return rows


def searched_rows(
    cache: StageCache,
    trained: Artifact,
    corpus: Any,
    target: str,
    rows: list[Row],
    budgets: list[int],
    evaluations: int,
    errors: dict[tuple[str, int], dict[str, list[int]]],
) -> list[Row]:
    """The omni checkpoint's searched per-kernel mix within each budget (bytes of sparse-encoded graphs), measured like
    a tier; the byte model is fitted on the omni rows already measured whose sparse encoding is the smaller."""
    from .search import stage_search

    exported = {
        r.tier: r.bytes_int8_sparse
        for r in rows
        if r.method == "omni" and r.tier > 0 and r.bytes_int8_sparse and r.bytes_int8_sparse < r.bytes_int8_dense
    }
    out = []
    for budget in budgets:
        if len(exported) < 2 or min(exported.values()) > budget:
            log.warning("search within %s B: needs two sparse-encoded omni tiers and one within it; skipped", budget)
            continue
        searched = stage_search(cache, trained, corpus, budget, exported, evaluations)
        tier = int(searched.summary["sparsity_percent"])
        # no training of its own: the checkpoint's training is the omni rows'
        row, _, errors[SEARCH_METHOD, budget] = _measure(
            cache, SEARCH_METHOD, tier, searched, corpus, target, timed=False
        )
        out.append(replace(row, search_budget=budget))
        log.info("%s", out[-1])
    return out


SEARCH_METHOD = "omni-search"


def _write_csv(path: Path, rows: list[Any]) -> None:
    """Dataclass rows as CSV, one column per field."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(rows[0])] if rows else [])
        w.writeheader()
        w.writerows(asdict(r) for r in rows)


def write_report(
    rows: list[Row],
    out: Path,
    model: str,
    steps: int,
    errors: dict[tuple[str, int], dict[str, list[int]]] | None = None,
    merged: set[tuple[str, int]] = frozenset(),
) -> None:
    """CSV, Markdown and the Pareto plot, replacing `out` atomically. `errors` (per-utterance word errors of the rows
    measured in this run, by (method, tier)) adds a paired-bootstrap interval to each method-vs-TFMOT comparison;
    `merged` names the rows taken from an earlier run (their training times are not comparable with this run's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_directory(out, "sparsity bench report") as tmp:
        _write_csv(tmp / "sparsity.csv", rows)
        dense = next((r for r in rows if r.method == "dense"), None)
        omni = next((r for r in rows if r.method == "omni"), None)
        lines = [
            f"# Sparsity bench: model `{model}`, {steps} training steps, WER on {SPLIT} (int8 decoded in LiteRT)",
            "",
            "| method | tier | sparsity | nonzero params | float WER | int8 WER | int8 bytes (dense) | int8 bytes "
            "(sparse) | Vela flash | NPU cycles / encoder chunk | NPU cycles / s audio | train s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            name = (
                f"{r.method} ({r.encoder_units} units)"
                if r.encoder_units
                else f"{r.method} (<= {r.search_budget:,} B)"
                if r.search_budget
                else r.method
            )
            lines.append(
                f"| {name} | {r.tier} | {r.sparsity:.3f} | {r.nonzero_parameters:,} | {100 * r.wer_float:.1f}% | "
                f"{100 * r.wer_int8:.1f}% | "
                f"{r.bytes_int8_dense:,} | {'-' if r.bytes_int8_sparse is None else f'{r.bytes_int8_sparse:,}'} | "
                f"{r.vela_flash_bytes:,} | "
                f"{r.npu_encoder_cycles:,} | {r.npu_cycles_per_second:,.0f} | {r.train_seconds:.0f} |"
            )
        if dense and omni:
            lines += [
                "",
                "Omni wall time / dense wall time: not given, one of the two rows comes from an earlier run "
                "(`--merge`); "
                "compare training cost with `pipeline bench train-speed`."
                if {(dense.method, dense.tier), (omni.method, omni.tier)} & merged
                else f"Omni wall time / dense wall time at equal steps: {omni.train_seconds / dense.train_seconds:.2f}",
            ]
        tfmot = {r.tier: r for r in rows if r.method == "tfmot"}
        errors = errors or {}

        def interval(method: str, tier: int) -> str:
            a, b = errors.get(("tfmot", tier)), errors.get((method, tier))
            if not a or not b or a["words"] != b["words"]:
                return ""
            diff, lo, hi = paired_bootstrap(a["int8"], b["int8"], a["words"])
            return (
                f"; {method} - TFMOT {100 * diff:+.1f} points, 95% CI {100 * lo:+.1f}..{100 * hi:+.1f} "
                "(paired bootstrap over utterances)"
            )

        for r in rows:
            if r.method == "omni" and r.tier in tfmot:
                lines.append(
                    f"- tier {r.tier}: omni int8 WER {100 * r.wer_int8:.1f}% vs TFMOT "
                    f"{100 * tfmot[r.tier].wer_int8:.1f}% "
                    f"(ratio {r.wer_int8 / max(tfmot[r.tier].wer_int8, 1e-9):.2f}, target <= "
                    f"1.10{interval('omni', r.tier)})"
                )
            if r.method == "csp" and r.tier in tfmot:
                lines.append(
                    f"- tier {r.tier}: CSP int8 WER {100 * r.wer_int8:.1f}% vs TFMOT magnitude pruning "
                    f"{100 * tfmot[r.tier].wer_int8:.1f}%"
                    f"{interval('csp', r.tier)}"
                )
            if r.sparse_weight_bytes is not None and r.sparse_nonzero and r.tier == 90:
                lines.append(
                    f"- {r.method} tier 90: the sparse-encoded weights take {r.sparse_weight_bytes:,} B (int8 values "
                    "+ CSR index arrays, "
                    f"read from the flatbuffers) for {r.sparse_nonzero:,} nonzero weights = "
                    f"{r.sparse_weight_bytes / r.sparse_nonzero:.2f} B per "
                    f"nonzero weight (target <= 1.3); the whole files are {r.bytes_int8_sparse:,} B, the rest being "
                    "graph structure "
                    f"(unrolled operators, tensor names, quantization parameters) that does not shrink with sparsity"
                )
            if r.tier == 90 and dense is not None:
                lines.append(
                    f"- {r.method} tier 90: Vela NPU cycles per encoder chunk "
                    f"{r.npu_encoder_cycles / max(dense.npu_encoder_cycles, 1):.2f}x dense (target <= 0.6)"
                )
        lines += width_lines(rows)
        (tmp / "sparsity.md").write_text("\n".join(lines) + "\n")
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        axes_by = (
            (axes[0], lambda r: r.shipped_bytes / 1024, "int8 .tflite KiB (sparse-encoded where smaller)"),
            (axes[1], lambda r: r.npu_cycles_per_second / 1e6, "Vela NPU Mcycles per second of audio"),
        )
        for ax, x_of, xlabel in axes_by:
            for method in dict.fromkeys(r.method for r in rows):
                pts = sorted(
                    (x_of(r), 100 * r.wer_int8, f"w{r.encoder_units}" if r.encoder_units else f"{r.tier}%")
                    for r in rows
                    if r.method == method
                )
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
                for x, y, t in pts:
                    ax.annotate(t, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"int8 WER % ({SPLIT})")
            ax.grid(alpha=0.3)
        axes[0].set_title(f"Sparsity tiers and dense widths, {model}, {steps} steps")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(tmp / "sparsity_pareto.png", dpi=120)
        plt.close(fig)


def width_lines(rows: list[Row]) -> list[str]:
    """For every pruned tier: the best dense model (the dense-width family and the full-width dense model) that is no
    larger, by shipped .tflite bytes and by Vela flash, and whether pruning won."""
    dense = [r for r in rows if r.method in ("dense", WIDTH_METHOD)]
    pruned = [r for r in rows if r.method not in ("dense", WIDTH_METHOD) and r.tier > 0]
    if not dense or not pruned or not any(r.method == WIDTH_METHOD for r in rows):
        return []
    out = ["", "Against the dense-width baseline (the same recipe trained dense at a smaller width):", ""]
    for r in pruned:
        parts = []
        for what, size in (
            ("shipped .tflite bytes", lambda x: x.shipped_bytes),
            ("Vela flash", lambda x: x.vela_flash_bytes),
        ):
            fits = [d for d in dense if size(d) <= size(r)]
            if not fits:
                parts.append(f"no dense model is as small by {what} ({size(r):,} B)")
                continue
            best = min(fits, key=lambda d: d.wer_int8)
            verdict = "pruning wins" if r.wer_int8 < best.wer_int8 else "pruning loses"
            parts.append(
                f"by {what} ({size(r):,} B) the best dense model no larger is {best.label} at "
                f"{100 * best.wer_int8:.1f}% ({size(best):,} B): {verdict} by "
                f"{100 * abs(best.wer_int8 - r.wer_int8):.1f} points"
            )
        out.append(f"- {r.method} tier {r.tier}, int8 WER {100 * r.wer_int8:.1f}%: " + "; ".join(parts))
    return out


def bench_train_speed(
    model: str,
    variants: list[str],
    data: DataOptions,
    paths: BuildPaths,
    steps: int = 100,
    warmup: int = 20,
    rounds: int = 1,
) -> dict[str, list[float]]:
    """Training steps per second of each variant on the same features, after `warmup` steps (tracing, caches):
    one figure per round, the variants timed one after another within each round.

    A variant is a method, optionally with omni's tiers-per-step and batch share: `omni:3x0.5`.
    Each round times the same `steps` consecutive steps of every variant's run (its batches, in memory). The
    figures are wall-clock: run it on an otherwise idle machine, and with several rounds.
    """
    import dataclasses
    import tempfile
    import time
    from contextlib import ExitStack

    from .train import Trainer

    cfg = load_model_config(model)
    cache, src = begin(cfg, data, paths.work_dir, [])
    cfg, corpus = stage_corpus(cache, cfg, src)
    features_dir = stage_features(cache, cfg, corpus).folder
    from .features import FeatureShards

    fs = FeatureShards.load(features_dir)
    out: dict[str, list[float]] = {v: [] for v in variants}
    with ExitStack() as stack:
        trainers = {}
        for variant in variants:
            method, _, shape = variant.partition(":")
            c = cfg
            if shape:
                k, share = shape.split("x")
                c = dataclasses.replace(
                    cfg, sparsity=dataclasses.replace(cfg.sparsity, tiers_per_step=int(k), tier_batch=float(share))
                )
            check_method(method, c, c.sparsity.tiers[-1] if method in ("tfmot", "csp") else None)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            trainers[variant] = Trainer(
                c, fs, work, method, c.sparsity.tiers[-1] if method in ("tfmot", "csp") else None
            )
            trainers[variant].run(until=warmup)  # tracing and first-call costs stay out of the timed rounds
        for r in range(rounds):
            for variant, t in trainers.items():
                t0 = time.perf_counter()
                t.run(start=warmup + r * steps, until=warmup + (r + 1) * steps)
                out[variant].append(steps / (time.perf_counter() - t0))
                log.info("round %d, %s: %.2f steps/s", r + 1, variant, out[variant][-1])
    return out


def bench_latency(model: str, threads: list[int], runs: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Host LiteRT time of one int8 encoder chunk per thread count, as a real-time factor (p50, p90).

    Uses the architecture with its seeded initial weights and a calibration drawn from
    the float graphs run on random features: compute time does not depend on the weight
    values, so this measures a model config before it is trained.
    """
    import time

    import numpy as np

    from ._tf import keras
    from .export import convert_all
    from .model import build_training_model, get_params
    from .runtimes import LiteRTGraph

    cfg = load_model_config(model)
    keras.utils.set_random_seed(seed)
    vocab = 12
    params = get_params(build_training_model(cfg, vocab), cfg)
    rng = np.random.default_rng(seed)
    floats = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params).items()}
    rep: dict[str, list[dict[str, np.ndarray]]] = {g: [] for g in GRAPHS}
    for _ in range(16):
        enc_in = {
            s.name: rng.normal(size=s.shape).astype(np.float32) * (1.0 if s.name == "features" else 0.3)
            for s in floats["encoder"].inputs
        }
        rep["encoder"].append(enc_in)
        enc_out = floats["encoder"](**enc_in)["encoder_out"]
        onehot = np.eye(vocab, dtype=np.float32)[rng.integers(vocab)][None]
        pred_in = {
            "token": onehot,
            **{
                s.name: rng.normal(size=s.shape).astype(np.float32) * 0.3
                for s in floats["predictor"].inputs
                if s.name != "token"
            },
        }
        rep["predictor"].append(pred_in)
        rep["joiner"].append(
            {"encoder_frame": enc_out[:, 0], "predictor_out": floats["predictor"](**pred_in)["predictor_out"]}
        )
    encoder = convert_all(cfg, params, rep)["encoder"]
    chunk_seconds = cfg.chunk_ms / 1000
    rows = []
    for n in threads:
        g = LiteRTGraph(encoder, n)
        x = {s.name: rep["encoder"][0][s.name] for s in g.inputs}
        for _ in range(10):
            g(**x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            g(**x)
            times.append(time.perf_counter() - t0)
        rtf = np.array(times) / chunk_seconds
        rows.append(
            {
                "model": cfg.name,
                "threads": n,
                "chunk_ms": cfg.chunk_ms,
                "encoder_bytes": len(encoder),
                "runs": runs,
                "ms_per_chunk_p50": float(np.percentile(times, 50) * 1000),
                "rtf_p50": float(np.percentile(rtf, 50)),
                "rtf_p90": float(np.percentile(rtf, 90)),
            }
        )
    return rows


@dataclass(frozen=True)
class QuantRow:
    """One tier. AAT fine-tunes the trained model; so does the control, the same steps in float.
    AAT is judged against the control, so that the extra training is not credited to the emulation."""

    method: str
    tier: int
    wer_float: float  # the trained model, float32 graphs
    wer_ptq: float  # the trained model, post-training quantized int8 (calibrated ranges)
    wer_ft_float: float  # control: fine-tuned in float for the AAT steps, float32 graphs
    wer_ft_ptq: float  # control, post-training quantized int8
    wer_aat: float  # AAT int8 (learned ranges)
    gap_ptq: float  # wer_ft_ptq - wer_ft_float: what post-training quantization costs
    gap_aat: float  # wer_aat - wer_ft_float: what is left with AAT
    gap_closed: float | None  # 1 - gap_aat / gap_ptq where the PTQ gap is positive
    npu_encoder_cycles_ptq: int
    npu_encoder_cycles_aat: int
    same_operators: bool  # the int8 graphs hold the same operators (AAT changes ranges, not the graph)
    aat_steps: int
    aat_seconds: float
    # wer_aat - wer_ft_ptq and its 95% interval from a paired bootstrap over test utterances (verify.paired_bootstrap)
    aat_minus_ptq: float | None = None
    aat_minus_ptq_low: float | None = None
    aat_minus_ptq_high: float | None = None
    # what `build --aat` ships for this tier ([aat] gate, gate.stage_aat_gate): "aat" or "ptq" (the trained model's
    # PTQ),
    # the gate split's float WER, the low end of the 95% interval of PTQ - float there, the int8 WER of both, and the
    # shipped graphs' WER here, minus the trained PTQ's and the control PTQ's
    gate_rule: str | None = None
    gate_split: str | None = None
    gate_wer_float: float | None = None
    gate_gap_low: float | None = None
    gate_wer_ptq: float | None = None
    gate_wer_aat: float | None = None
    shipped: str | None = None
    wer_shipped: float | None = None
    shipped_minus_trained_ptq: float | None = None
    shipped_minus_ptq: float | None = None
    shipped_gap_closed: float | None = None


def _operators(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()]  # noqa: SLF001


def _chosen_tiers(held: list[int], tiers: list[int] | None, method: str) -> list[int]:
    """`tiers` (default: every tier the checkpoint holds); a tier it does not hold is a ConfigError."""
    from .errors import ConfigError

    chosen = tiers or held
    missing = [t for t in chosen if t not in held]
    if missing:
        raise ConfigError(
            f"the {method} checkpoint holds tier(s) {', '.join(map(str, held))}, not {', '.join(map(str, missing))}."
        )
    return chosen


def bench_quant(
    model: str,
    method: str,
    tiers: list[int] | None,
    data: DataOptions,
    paths: BuildPaths,
    out: Path,
    steps: int | None = None,
    aat_steps: int | None = None,
    init: Path | None = None,
    target: str = "watch",
    aat: AatConfig | None = None,
) -> list[QuantRow]:
    """Per tier: float and post-training int8 WER before and after a float fine-tuning (the control), and AAT int8 WER
    (int8 decoded from the .tflite in LiteRT); NPU cycles per encoder chunk with calibrated and with learned ranges.

    The base checkpoint is trained (`method`, `steps`) through the stage cache, or given (`init`);
    AAT and the control fine-tune it once for every tier it holds, with `aat` as the recipe if given (else the
    config's).
    """
    from .errors import ConfigError
    from .gate import check_gate_split, stage_aat_gate
    from .stages import checkpoint_stage_input, stage_aat

    cfg = load_model_config(model)
    if init is not None:
        ck = ModelCheckpoint.load(init)
        cfg, method, base = ck.config, ck.meta.get("method", "dense"), checkpoint_stage_input(init)
    else:
        check_method(method, cfg, tiers[0] if method in ("tfmot", "csp") and tiers else None)
        if method in ("tfmot", "csp") and (not tiers or len(tiers) != 1):
            raise ConfigError(f"method {method} trains one tier per model; give exactly one tier with --tiers.")
    cache, src = begin(cfg, data, paths.work_dir, [Output(out, "quantization bench report")])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    if init is None:
        base = stage_train(
            cache, cfg, feats, steps, method=method, tier=tiers[0] if method in ("tfmot", "csp") else None
        )
    chosen = _chosen_tiers(ModelCheckpoint.load(base.folder).tiers, tiers, method)
    tuned = cfg if aat is None else replace(cfg, aat=aat)
    recipe = load_calibration_recipe(load_target(target).build.calibration)  # the calibration _measure's exports use
    check_gate_split(tuned, corpus)
    aat_stage = stage_aat(cache, tuned, feats, base, corpus, recipe, aat_steps)
    control = stage_aat(cache, tuned, feats, base, corpus, recipe, aat_steps, emulate=False)

    def measure(stage: Artifact, tier: int) -> tuple[Row, Artifact, dict[str, list[int]]]:
        # training time is reported once below, not per row
        return _measure(cache, method, tier, stage, corpus, target, timed=False)

    rows = []
    for tier in chosen:
        (before, base_export, _), (ft, ptq_export, ft_err), (after, aat_export, aat_err) = (
            measure(base, tier),
            measure(control, tier),
            measure(aat_stage, tier),
        )
        same = all(
            _operators(ptq_export.folder / "int8" / f"{g}.tflite")
            == _operators(aat_export.folder / "int8" / f"{g}.tflite")
            for g in GRAPHS
        )
        gap_ptq = ft.wer_int8 - ft.wer_float
        closed = lambda wer: round(1 - (wer - ft.wer_float) / gap_ptq, 3) if gap_ptq > 0 else None  # noqa: E731, B023 (share of the PTQ gap `wer` closes; called in this iteration)
        diff, lo, hi = paired_bootstrap(ft_err["int8"], aat_err["int8"], ft_err["words"])
        gate = stage_aat_gate(cache, base_export, aat_export, aat_stage.folder, corpus, tuned.aat)
        shipped = after.wer_int8 if gate["shipped"] == "aat" else before.wer_int8
        rows.append(
            QuantRow(
                method,
                tier,
                before.wer_float,
                before.wer_int8,
                ft.wer_float,
                ft.wer_int8,
                after.wer_int8,
                round(gap_ptq, 5),
                round(after.wer_int8 - ft.wer_float, 5),
                closed(after.wer_int8),
                ft.npu_encoder_cycles,
                after.npu_encoder_cycles,
                same,
                aat_stage.summary["aat"]["steps"],
                round(aat_stage.summary["aat"]["wall_seconds"], 1),
                round(diff, 5),
                round(lo, 5),
                round(hi, 5),
                gate["rule"],
                gate.get("split"),
                gate.get("wer_float"),
                gate.get("gap_interval95", [None])[0],
                gate.get("wer_int8_ptq"),
                gate.get("wer_int8_aat"),
                gate["shipped"],
                shipped,
                round(shipped - before.wer_int8, 5),
                round(shipped - ft.wer_int8, 5),
                closed(shipped),
            )
        )
        log.info("%s", rows[-1])
    write_quant_report(rows, out, cfg.name, tuned.aat)
    return rows


def write_quant_report(rows: list[QuantRow], out: Path, model: str, recipe: AatConfig | None = None) -> None:
    with atomic_directory(out, "quantization bench report") as tmp:
        _write_csv(tmp / "quant.csv", rows)
        lines = [
            f"# Quantization bench: model `{model}`, WER on {SPLIT}; int8 decoded from the .tflite in LiteRT",
            "",
            "Trained = the checkpoint; control = the same fine-tuning steps as AAT, in float; PTQ = post-training "
            "quantization (calibrated ranges); AAT = fine-tuned with the int8 kernels emulated, exported with the "
            "learned ranges. "
            "Gaps are int8 minus the control's float WER.",
            "",
            "AAT - PTQ is AAT int8 minus the control's PTQ int8 (points) with its 95% interval from a paired "
            "bootstrap over "
            "the test utterances: an interval spanning 0 is no measured difference.",
            "",
            "| method | tier | trained float | trained PTQ int8 | control float | control PTQ int8 | AAT int8 | AAT - "
            "PTQ (95% CI) "
            "| PTQ gap | AAT gap | gap closed | NPU cycles / chunk PTQ | AAT | same operators |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
        ]
        for r in rows:
            ci = (
                "-"
                if r.aat_minus_ptq is None
                else f"{100 * r.aat_minus_ptq:+.1f} "
                f"({100 * r.aat_minus_ptq_low:+.1f}..{100 * r.aat_minus_ptq_high:+.1f})"
            )
            lines.append(
                f"| {r.method} | {r.tier} | {_pct(r.wer_float)} | {_pct(r.wer_ptq)} | {_pct(r.wer_ft_float)} | "
                f"{_pct(r.wer_ft_ptq)} | {_pct(r.wer_aat)} | {ci} | "
                f"{100 * r.gap_ptq:+.1f} | {100 * r.gap_aat:+.1f} | "
                f"{'-' if r.gap_closed is None else f'{100 * r.gap_closed:.0f}%'} | "
                f"{r.npu_encoder_cycles_ptq:,} | {r.npu_encoder_cycles_aat:,} | {'yes' if r.same_operators else 'no'} |"
            )
        if rows:
            worse = [r.tier for r in rows if r.wer_aat > r.wer_ft_ptq]
            above = [r.tier for r in rows if r.aat_minus_ptq_low is not None and r.aat_minus_ptq_low > 0]
            below = [r.tier for r in rows if r.aat_minus_ptq_high is not None and r.aat_minus_ptq_high < 0]
            lines += [
                "",
                f"AAT: {rows[0].aat_steps} fine-tuning steps for all tiers together, {rows[0].aat_seconds:.0f} s"
                + (f"; recipe {', '.join(f'{k} = {v}' for k, v in asdict(recipe).items())}." if recipe else "."),
                "AAT int8 never worse than the control's PTQ int8: "
                f"{'yes' if not worse else 'NO, at tier(s) ' + ', '.join(map(str, worse))}.",
                f"Differences whose 95% interval excludes 0: AAT worse at {', '.join(map(str, above)) or 'no tier'}; "
                f"AAT better at {', '.join(map(str, below)) or 'no tier'}.",
            ]
            sparsest = max(rows, key=lambda r: r.tier)
            closed = "-" if sparsest.gap_closed is None else f"{100 * sparsest.gap_closed:.0f}%"
            lines.append(
                f"Sparsest tier {sparsest.tier}: PTQ gap {100 * sparsest.gap_ptq:+.1f}, AAT gap "
                f"{100 * sparsest.gap_aat:+.1f}, "
                f"closed {closed} (target: >= 50%, or AAT gap <= 0.3)."
            )
            lines += _shipped_lines(rows)
        (tmp / "quant.md").write_text("\n".join(lines) + "\n")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _shipped_lines(rows: list[QuantRow]) -> list[str]:
    """The table and verdicts of what `build --aat` ships per tier, as its [aat] gate chose."""
    gated = [r for r in rows if r.shipped is not None]
    if not gated:
        return []
    split = next((r.gate_split for r in gated if r.gate_split), None)
    lines = [
        "",
        f"## What `build --aat` ships (gate: {gated[0].gate_rule}" + (f", chosen on {split})" if split else ")"),
        "",
        f"The trained model's PTQ graphs or AAT's, per tier, chosen on {split or 'no split'} (not on {SPLIT}); "
        f"shipped WER on {SPLIT}."
        + (
            " Rule sparsest ships AAT at the checkpoint's sparsest tier whatever the split shows."
            if gated[0].gate_rule == "sparsest"
            else ""
        ),
        "",
        f"| tier | {split or 'gate'} float | PTQ int8 | PTQ - float, 95% low end | AAT int8 | ships | shipped int8 | "
        "- trained PTQ | "
        "- control PTQ | gap closed |",
        "| ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: |",
    ]
    for r in gated:
        closed = "-" if r.shipped_gap_closed is None else f"{100 * r.shipped_gap_closed:.0f}%"
        low = "-" if r.gate_gap_low is None else f"{100 * r.gate_gap_low:+.1f}"
        lines.append(
            f"| {r.tier} | {_pct(r.gate_wer_float)} | {_pct(r.gate_wer_ptq)} | {low} | {_pct(r.gate_wer_aat)} | "
            f"{r.shipped.upper()} | {_pct(r.wer_shipped)} | "
            f"{100 * r.shipped_minus_trained_ptq:+.1f} | {100 * r.shipped_minus_ptq:+.1f} | {closed} |"
        )
    worse_trained = [str(r.tier) for r in gated if r.shipped_minus_trained_ptq > 0]
    worse_control = [str(r.tier) for r in gated if r.shipped_minus_ptq > 0]
    lines += [
        "",
        f"Shipped int8 never worse than the trained model's PTQ int8 (what `build` ships without --aat): "
        f"{'yes' if not worse_trained else 'NO, at tier(s) ' + ', '.join(worse_trained)}.",
        "Shipped int8 never worse than the control's PTQ int8: "
        f"{'yes' if not worse_control else 'NO, at tier(s) ' + ', '.join(worse_control)}.",
    ]
    return lines


@dataclass(frozen=True)
class CalibrationRow:
    tier: int
    seed: int  # the calibration recipe's seed: which training utterances (and recorded inputs) calibrate
    wer_float: float
    wer_int8: float  # post-training int8, decoded from the .tflite in LiteRT
    # int8 WER minus the first seed's (points as fractions) with its 95% paired-bootstrap interval
    minus_first: float = 0.0
    minus_first_low: float = 0.0
    minus_first_high: float = 0.0


def bench_calibration(
    init: Path,
    tiers: list[int] | None,
    seeds: list[int],
    data: DataOptions,
    paths: BuildPaths,
    out: Path,
    target: str = "watch",
) -> list[CalibrationRow]:
    """Post-training int8 WER of each tier of a trained checkpoint when only the calibration draw changes: the target's
    calibration recipe with each of `seeds` (other utterances, other recorded inputs; same count). How far int8 WER
    moves
    with the calibration alone is the yardstick for any other int8 change of a few points (AAT, a new recipe)."""
    from .errors import ConfigError
    from .stages import checkpoint_stage_input

    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise ConfigError("give at least one calibration seed.")
    ck = ModelCheckpoint.load(init)
    cfg, method, base = ck.config, ck.meta.get("method", "dense"), checkpoint_stage_input(init)
    chosen = _chosen_tiers(ck.tiers, tiers, method)
    cache, src = begin(cfg, data, paths.work_dir, [Output(out, "calibration bench report")])
    corpus = stage_data(cache, cfg, src)
    recipe = load_calibration_recipe(load_target(target).build.calibration)
    rows = []
    for tier in chosen:
        first: dict[str, list[int]] | None = None
        for seed in seeds:
            row, _, err = _measure(cache, method, tier, base, corpus, target, replace(recipe, seed=seed), timed=False)
            first = first or err
            diff, lo, hi = paired_bootstrap(first["int8"], err["int8"], err["words"])
            rows.append(
                CalibrationRow(tier, seed, row.wer_float, row.wer_int8, round(diff, 5), round(lo, 5), round(hi, 5))
            )
            log.info("%s", rows[-1])
    write_calibration_report(rows, out, cfg.name, recipe)
    return rows


def write_calibration_report(rows: list[CalibrationRow], out: Path, model: str, recipe: CalibrationRecipe) -> None:
    """calibration.csv and calibration.md: a line per tier, int8 WER per seed, the spread and the largest difference."""
    seeds = list(dict.fromkeys(r.seed for r in rows))
    tiers = list(dict.fromkeys(r.tier for r in rows))
    with atomic_directory(out, "calibration bench report") as tmp:
        _write_csv(tmp / "calibration.csv", rows)
        lines = [
            f"# Calibration bench: model `{model}`, WER on {SPLIT}; post-training int8 decoded from the .tflite in "
            "LiteRT",
            "",
            f"Calibration recipe `{recipe.name}` ({recipe.utterances} utterances of `{recipe.split}`, up to "
            f"{recipe.max_samples_per_graph} recorded inputs per graph) with only its seed changed. Spread = largest "
            "minus "
            f"smallest int8 WER over the seeds; vs seed {seeds[0]} = the difference from the first seed furthest from "
            "it, with its 95% "
            "interval from a paired bootstrap over the test utterances.",
            "",
            "| tier | float | "
            + " | ".join(f"int8, seed {s}" for s in seeds)
            + f" | spread | furthest vs seed {seeds[0]} (95% CI) |",
            "| ---: | ---: | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: |",
        ]
        spreads = {}
        for t in tiers:
            rs = [r for r in rows if r.tier == t]
            int8 = [r.wer_int8 for r in rs]
            spreads[t] = max(int8) - min(int8)
            far = max(rs, key=lambda r: abs(r.minus_first))
            lines.append(
                f"| {t} | {_pct(rs[0].wer_float)} | "
                + " | ".join(_pct(x) for x in int8)
                + f" | {100 * spreads[t]:.1f} | "
                f"{100 * far.minus_first:+.1f} ({100 * far.minus_first_low:+.1f}..{100 * far.minus_first_high:+.1f}) |"
            )
        if spreads:
            worst = max(spreads, key=spreads.get)
            lines += [
                "",
                f"Largest spread: {100 * spreads[worst]:.1f} points at tier {worst}. An int8 change smaller than the "
                "spread at "
                "its tier is within what the choice of calibration utterances alone does.",
            ]
        (tmp / "calibration.md").write_text("\n".join(lines) + "\n")


def bench_parity(
    init: Path, tier: int | None, data: DataOptions, paths: BuildPaths, utterances: int = 20, target: str = "watch"
) -> tuple[int, dict[str, float]]:
    """How closely the int8 .tflite of an AAT checkpoint's tier follows the training-time emulation, on real speech:
    the share of encoder outputs, predictor outputs and joiner logits within one int8 step
    (`parity.emulation_agreement`)."""
    import dataclasses

    from .corpus import read_manifest
    from .errors import ConfigError
    from .parity import emulation_agreement
    from .stages import checkpoint_stage_input, decode_features

    ck = ModelCheckpoint.load(init)
    cfg = ck.config
    tier = ck.tiers[-1] if tier is None else tier
    ranges = ck.tier_ranges(tier)
    if ranges is None:
        raise ConfigError(
            f"checkpoint {init} holds no learned int8 ranges for tier {tier}; fine-tune it with `pipeline train --aat`."
        )
    cache, src = begin(cfg, data, paths.work_dir, [])
    corpus = stage_data(cache, cfg, src)
    # the int8 graphs as `pipeline build` exports them (same stage, same calibration recipe)
    recipe = load_calibration_recipe(load_target(target).build.calibration)
    export_dir = stage_export(cache, checkpoint_stage_input(init), corpus, recipe, tier).folder
    int8 = {g: LiteRTGraph((export_dir / "int8" / f"{g}.tflite").read_bytes()) for g in GRAPHS}
    full = read_manifest(corpus.splits[SPLIT])
    test = dataclasses.replace(full, utterances=full.utterances[:utterances])
    feats = decode_features(corpus, ck, test)
    tokens = [ck.tokenizer.encode(u.text, where=f"transcript of {u.id}") for u in test.utterances]
    return tier, emulation_agreement(
        cfg, ck.tier_params(tier), ranges, int8, list(zip(feats, tokens)), ck.tokenizer.blank_id
    )

"""`pipeline bench speakers`: how a recipe does on speakers and voices it has never heard.

Leave-one-speaker-out over every recorded FSDD speaker: fold k trains on the other four (plus synthesized voices) and
tests on every recording of speaker k. Each fold also holds one or two espeak-ng voice families out of the synthesized
training speech and tests on them (leave-one-voice-family-out), and on speech of every synthesis engine the recipe does
not train on that runs here (`test_engines`: an engine it never heard, each engine scored apart), so five trainings
measure all three. Per fold: float and int8 WER decoded in LiteRT (and TFLM with `tflm`); overall: the mean over
folds, the worst fold and a 95% interval over folds (Student's t: the spread between speakers, which is what a new
speaker draws from). Recipe choices are made on the mean and the worst fold.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .budgets import shipped_encoding
from .build import BuildPaths
from .cache import Artifact
from .calibrate import load_calibration_recipe
from .checkpoint import ModelCheckpoint
from .config import load_model_config
from .corpus import read_manifest
from .data import DataOptions, resolve_source
from .errors import ConfigError, DataError
from .evaluate import eval_sets
from .export import GRAPHS
from .export_stage import stage_export
from .fsdd import FSDD_SPEAKERS
from .fsutil import atomic_directory
from .preflight import Output
from .runtimes import LiteRTGraph, TFLMGraph
from .stages import begin, stage_corpus, stage_features, stage_fsdd_speakers, stage_train, transducer
from .synth import ENGINES, VOICES, check_engine, held_engine
from .targets import load_target
from .verify import format_confusions, score, word_confusions

log = logging.getLogger(__name__)
SPLITS = ("test_unseen", "test_voices", "test_engines")
TEST_SETS = ("recorded", "synthesized")  # then one "engine <name>" per engine the recipe never trains on
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student's t, 97.5%


@dataclass(frozen=True)
class Fold:
    speaker: str  # the FSDD speaker held out
    voices: tuple[str, ...]  # the espeak-ng voice families held out of the synthesized training speech


TOP_ERRORS = 5  # word errors listed per fold and test set


def make_folds(speakers: tuple[str, ...] = FSDD_SPEAKERS, voices: tuple[str, ...] = VOICES) -> list[Fold]:
    """One fold per speaker; the voice families dealt round-robin over the folds (7 over 5 folds: 2, 2, 1, 1, 1)."""
    return [Fold(s, tuple(voices[i :: len(speakers)])) for i, s in enumerate(speakers)]


@dataclass(frozen=True)
class FoldRow:
    seed: int
    fold: str  # the held-out FSDD speaker
    # recorded (the held-out speaker) | synthesized (the held-out voice families) | engine <name> (an engine the recipe
    # never trains on)
    test_set: str
    held_out: str  # who speaks the test set
    utterances: int
    words: int
    wer_float: float
    wer_int8: float
    wer_int8_tflm: float | None
    # the most frequent word errors of the int8 LiteRT decode: "four→five 42, three→eight 37"
    top_errors: str = ""


def _t_interval(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (math.nan, math.nan)
    m = statistics.fmean(values)
    half = T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, m - half), m + half  # a WER is never below 0


def summarize(rows: list[FoldRow], test_set: str, column: str = "wer_int8") -> dict[str, Any]:
    """Mean over folds (each fold's seeds averaged first), the worst fold and a 95% t-interval over folds."""
    per_fold: dict[str, list[float]] = {}
    for r in rows:
        if r.test_set == test_set and getattr(r, column) is not None:
            per_fold.setdefault(r.fold, []).append(getattr(r, column))
    if not per_fold:
        return {}
    means = {f: statistics.fmean(v) for f, v in per_fold.items()}
    worst = max(means, key=means.__getitem__)
    lo, hi = _t_interval(list(means.values()))
    return {
        "mean": statistics.fmean(means.values()),
        "worst": means[worst],
        "worst_fold": worst,
        "interval95": (lo, hi),
        "folds": len(means),
    }


def bench_speakers(
    model: str | None,
    data: DataOptions,
    paths: BuildPaths,
    out: Path,
    seeds: list[int],
    target: str = "watch",
    steps: int | None = None,
    speakers: tuple[str, ...] = FSDD_SPEAKERS,
    tflm: bool = False,
    synthesized_only: bool = False,
    method: str | None = None,
    tier: int = 0,
) -> list[FoldRow]:
    """Train and measure every fold (and seed) through the stage cache; write speakers.csv, .md and .png.
    `synthesized_only`: one model per seed trained on synthesized speech alone (what a build with no recorded speech
    ships), tested on every recording of every FSDD speaker. `method`: dense or omni (default: the target's, dense
    for the other pruning methods); `tier`: the omni tier decoded, stored as the target's build would ship it
    (`budgets.shipped_encoding`)."""
    profile = load_target(target)
    cfg = load_model_config(model or profile.build.model)
    if method is None:
        method = profile.build.method if profile.build.method in ("dense", "omni") else "dense"
    if method not in ("dense", "omni"):
        raise ConfigError(f"bench speakers trains dense or omni models, not {method!r}.")
    if tier and method != "omni":
        raise ConfigError(f"tier {tier} needs the omni method; a {method} model has tier 0 only.")
    if tier and tier not in cfg.sparsity.tiers:
        raise ConfigError(f"tier {tier} is not one of the model's tiers ({', '.join(map(str, cfg.sparsity.tiers))}).")
    cache, src = begin(cfg, data, paths.work_dir, [Output(out, "speakers bench report")])
    if src.kind != "fsdd":
        raise ConfigError(
            "bench speakers holds out recorded speakers, so it needs FSDD (--fsdd-dir or PIPELINE_FSDD_DIR); none was "
            "found."
        )
    recipe = load_calibration_recipe(profile.build.calibration)
    cfg = replace(cfg, data=replace(cfg.data, synth_test_engines=other_engines(cfg)))
    rows: list[FoldRow] = []
    int8 = "int8"
    if synthesized_only:
        for seed in seeds:
            int8, seed_rows = _synthesized_only(cache, cfg, src, recipe, profile, method, seed, steps, speakers, tier)
            rows += seed_rows
        write_speakers_report(
            rows,
            out,
            f"{_what(cfg.name, method, tier, int8)} (synthesized speech only)",
            steps or cfg.train.steps,
            seeds,
            SYNTH_ONLY_ABOUT,
        )
        return rows
    for seed in seeds:
        # the folds of the full run, whichever of them are asked for: a fold held out the same voice families
        # whether it runs alone or with the others, so its figures compare
        for fold in [f for f in make_folds() if f.speaker in speakers]:
            fcfg = replace(
                cfg,
                data=replace(cfg.data, fsdd_test_speakers=(fold.speaker,), synth_test_voices=fold.voices),
                train=replace(cfg.train, seed=seed),
            )
            fcfg, corpus = stage_corpus(cache, fcfg, src)
            feats = stage_features(cache, fcfg, corpus)
            trained = stage_train(cache, fcfg, feats, steps, method=method)
            export = stage_export(cache, trained, corpus, recipe, tier)
            int8 = _int8_storage(profile, export)
            measured = _measure_fold(cache, seed, fold, trained.folder, export, corpus, tflm, int8)
            rows += measured
            log.info("fold %s seed %d: %s", fold.speaker, seed, [asdict(r) for r in measured])
    write_speakers_report(rows, out, _what(cfg.name, method, tier, int8), steps or cfg.train.steps, seeds)
    return rows


def _int8_storage(profile: Any, export: Artifact) -> str:
    """The folder of the int8 graphs the target would ship from `export` (the build's own choice of storage)."""
    return "int8_sparse" if shipped_encoding(profile, export) == "sparse" else "int8"


def _what(name: str, method: str, tier: int, int8: str) -> str:
    """The report's name of what was measured: the model, and for omni its tier and storage."""
    if method != "omni":
        return f"{name}, {method}"
    return f"{name}, omni tier {tier}" + (", sparse-encoded" if int8 == "int8_sparse" else "")


def other_engines(cfg: Any) -> tuple[str, ...]:
    """The synthesis engines `cfg` does not train on that can run here (flite needs its Debian package)."""
    out = []
    for engine in ENGINES:
        if engine in cfg.data.synth_engines:
            continue
        try:
            check_engine(engine)
        except DataError as exc:
            log.warning("no %s test set: %s", engine, exc)
            continue
        out.append(engine)
    return tuple(out)


def _synthesized_only(
    cache: Any,
    cfg: Any,
    fsdd: Any,
    recipe: Any,
    profile: Any,
    method: str,
    seed: int,
    steps: int | None,
    speakers: tuple[str, ...],
    tier: int = 0,
) -> tuple[str, list[FoldRow]]:
    """A model trained on synthesized speech alone, decoded on every recording of each FSDD speaker; returns the int8
    storage measured and the rows."""
    synth = resolve_source(DataOptions("synth"))
    scfg, corpus = stage_corpus(cache, replace(cfg, train=replace(cfg.train, seed=seed)), synth)
    trained = stage_train(cache, scfg, stage_features(cache, scfg, corpus), steps, method=method)
    export = stage_export(cache, trained, corpus, recipe, tier)
    int8 = _int8_storage(profile, export)
    every = stage_fsdd_speakers(cache, cfg, fsdd)
    rows = []
    for spk in speakers:
        one = replace(every, splits={"train": every.splits["train"], "test_unseen": every.splits[spk]})
        rows += _measure_fold(cache, seed, Fold(spk, ()), trained.folder, export, one, False, int8)
    return int8, rows


def _by_engine(
    manifest: Path, feats: list[Any], refs: list[str], hop_ms: float
) -> dict[str, tuple[list[Any], list[str], float]]:
    """A `test_engines` split's features and transcripts (in manifest order) parted by the engine that said them
    (`synth.held_engine`), each with its audio seconds."""
    who = [held_engine(u.speaker) for u in read_manifest(manifest).utterances]
    out = {}
    for engine in sorted(set(who)):
        idx = [i for i, w in enumerate(who) if w == engine]
        part = [feats[i] for i in idx]
        out[engine] = (part, [refs[i] for i in idx], float(sum(len(f) for f in part) * hop_ms / 1000))
    return out


def _measure_fold(
    cache: Any,
    seed: int,
    fold: Fold,
    ckpt: Path,
    export: Artifact,
    corpus: Any,
    tflm: bool,
    int8: str = "int8",
) -> list[FoldRow]:
    """Decode `export`'s float32 and int8 graphs (`int8`: the folder of the int8 storage measured) on the fold's
    test sets, through the stage cache."""
    from .runtimes import tflm_min_arena

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt)
        # one decoder per graph set, shared by every test set of the fold
        decoders = {
            name: transducer(
                ck.config,
                ck.tokenizer,
                {g: LiteRTGraph((export.folder / folder / f"{g}.tflite").read_bytes()) for g in GRAPHS},
            )
            for name, folder in (("float", "float32"), ("int8", int8))
        }
        if tflm:
            files = {g: export.folder / int8 / f"{g}.tflite" for g in GRAPHS}
            graphs = {g: TFLMGraph(f, tflm_min_arena(f)) for g, f in files.items()}
            decoders["int8_tflm"] = transducer(ck.config, ck.tokenizer, graphs)
        out = {}
        for split in SPLITS:
            if split not in corpus.splits:
                continue
            every = eval_sets(corpus, ck, only=split)[split]
            if split == "test_engines":  # each held-out engine scored apart: "test_engines:<engine>"
                for engine, part in _by_engine(corpus.splits[split], *every[:2], ck.config.frontend.hop_ms).items():
                    out[f"{split}:{engine}"] = measure(ck, decoders, part, split)
            else:
                out[split] = measure(ck, decoders, every, split)
        return out

    def measure(
        ck: Any, decoders: dict[str, Any], test: tuple[list[Any], list[str], float], split: str
    ) -> dict[str, Any]:
        """Float and int8 WER (and the int8's commonest word errors) of one test set."""
        feats, refs, seconds = test
        wer, errors = {}, []
        for name, t in decoders.items():
            scored = score(t, ck.tokenizer, feats, refs, seconds, desc=f"{fold.speaker} {split} {name}")
            wer[name] = scored.wer
            if name == "int8":
                counts = word_confusions(refs, scored.hypotheses)
                errors = [[r, h, n] for (r, h), n in counts.most_common(TOP_ERRORS)]
        return {
            "utterances": len(refs),
            "words": sum(len(r.split()) for r in refs),
            "wer": wer,
            "top_errors": errors,
        }

    # the test sets are part of the key: one export is measured on several corpora (--synthesized-only)
    tests = {s: corpus.splits[s].name for s in SPLITS if s in corpus.splits}
    key = {"export": export.key, "tflm": tflm, "data": corpus.key, "tests": tests}
    if int8 != "int8":
        key["int8"] = int8
    m = cache.run("speakers", key, run).summary
    rows = []
    sets = [("test_unseen", "recorded", fold.speaker), ("test_voices", "synthesized", "+".join(fold.voices))]
    sets += [
        (k, f"engine {k.split(':', 1)[1]}", k.split(":", 1)[1]) for k in sorted(m) if k.startswith("test_engines:")
    ]
    for split, test_set, who in sets:
        if split in m:
            e = m[split]
            rows.append(
                FoldRow(
                    seed,
                    fold.speaker,
                    test_set,
                    who,
                    e["utterances"],
                    e["words"],
                    round(e["wer"]["float"], 5),
                    round(e["wer"]["int8"], 5),
                    round(e["wer"]["int8_tflm"], 5) if "int8_tflm" in e["wer"] else None,
                    format_confusions(e.get("top_errors", [])),
                )
            )
    return rows


def _test_sets(rows: list[FoldRow]) -> list[str]:
    """The test sets `rows` have: recorded, synthesized, then each held-out engine's."""
    engines = sorted({r.test_set for r in rows if r.test_set.startswith("engine ")})
    return [t for t in TEST_SETS if any(r.test_set == t for r in rows)] + engines


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


LOSO_ABOUT = (
    "Leave-one-speaker-out over the FSDD speakers (each fold trains on the other four and synthesized voices) and "
    "leave-one-voice-family-out over the espeak-ng voices (each fold's families say no training speech), and speech "
    "of each synthesis engine the recipe does not train on (engine <name>). WER decoded in LiteRT (int8 in TFLM where "
    "given)."
)
SYNTH_ONLY_ABOUT = (
    "One model trained on synthesized speech alone (what a build that finds no recorded speech ships), tested on "
    "every recording of each FSDD speaker (a fold here is a speaker, not a training). WER decoded in LiteRT."
)


def write_speakers_report(
    rows: list[FoldRow], out: Path, model: str, steps: int, seeds: list[int], about: str = LOSO_ABOUT
) -> None:
    """speakers.csv (one row per fold, seed and test set), speakers.md (the table and the summary), speakers.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_directory(out, "speakers bench report") as tmp:
        with open(tmp / "speakers.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(FoldRow)])
            w.writeheader()
            w.writerows(asdict(r) for r in rows)
        lines = [
            f"# Speakers bench: model `{model}`, {steps} training steps, seeds {', '.join(map(str, seeds))}",
            "",
            about,
            "",
            "| fold | seed | test set | held out | words | float | int8 | int8 - float | int8 TFLM |",
            "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(
                f"| {r.fold} | {r.seed} | {r.test_set} | {r.held_out} | {r.words} | {_pct(r.wer_float)} | "
                f"{_pct(r.wer_int8)} | "
                f"{100 * (r.wer_int8 - r.wer_float):+.1f} | {_pct(r.wer_int8_tflm)} |"
            )
        lines += [
            "",
            "| test set | WER | mean over folds | worst fold | 95% interval over folds |",
            "| --- | --- | ---: | --- | --- |",
        ]
        for test_set in _test_sets(rows):
            for column, label in (("wer_float", "float"), ("wer_int8", "int8 LiteRT"), ("wer_int8_tflm", "int8 TFLM")):
                s = summarize(rows, test_set, column)
                if s:
                    lo, hi = s["interval95"]
                    lines.append(
                        f"| {test_set} | {label} | {_pct(s['mean'])} | {_pct(s['worst'])} ({s['worst_fold']}) | "
                        f"{_pct(lo)} .. {_pct(hi)} |"
                    )
        errors = [r for r in rows if r.top_errors]
        if errors:
            lines += [
                "",
                f"Most frequent word errors per fold (int8 LiteRT; at most {TOP_ERRORS}, with their counts):",
                "",
                "| fold | seed | test set | errors |",
                "| --- | ---: | --- | --- |",
            ]
            lines += [f"| {r.fold} | {r.seed} | {r.test_set} | {r.top_errors} |" for r in errors]
        (tmp / "speakers.md").write_text("\n".join(lines) + "\n")
        present = _test_sets(rows) or ["recorded"]
        fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4), squeeze=False)
        for ax, test_set in zip(axes[0], present):
            sub = [r for r in rows if r.test_set == test_set]
            names = list(dict.fromkeys(r.held_out for r in sub))
            for k, (column, label) in enumerate((("wer_float", "float"), ("wer_int8", "int8"))):
                vals = [100 * statistics.fmean(getattr(r, column) for r in sub if r.held_out == n) for n in names]
                ax.bar([i + 0.4 * k for i in range(len(names))], vals, width=0.4, label=label)
            ax.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=20, fontsize=8)
            ax.set_ylabel("WER (%)")
            ax.set_title(f"{test_set}: held out of training")
            ax.legend()
        fig.tight_layout()
        fig.savefig(tmp / "speakers.png", dpi=110)
        plt.close(fig)

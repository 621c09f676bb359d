"""`pipeline` command line: a thin shell over the stage functions; errors caught once in `main`."""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .build import BuildPaths
from .build import build as run_build
from .data import DEV_SPLIT_FILE, SOURCES, DataOptions
from .distribute import STRATEGIES
from .errors import PipelineError, host_error
from .fsdd import FSDD_RECORDINGS_SHA256, FSDD_SPEAKERS, FSDD_URL
from .sparsity import METHODS
from .targets import BuildOptions

DATA_DEFAULTS = DataOptions()
PATH_DEFAULTS = BuildPaths()


def data_options(fn: Callable) -> Callable:
    """The options every command that reads speech shares."""
    opts = [
        click.option(
            "--data",
            "source",
            type=click.Choice(SOURCES),
            default=DATA_DEFAULTS.source,
            show_default=True,
            help="auto: FSDD if found, else synthesized speech (the model's data.synth_engines).",
        ),
        click.option(
            "--fsdd-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="FSDD folder (default: $PIPELINE_FSDD_DIR, else ../shared/data/fsdd beside the project).",
        ),
        click.option(
            "--train-manifest", type=click.Path(path_type=Path), default=None, help="your own training corpus (JSONL)."
        ),
        click.option(
            "--test-manifest",
            type=click.Path(path_type=Path),
            multiple=True,
            help="your own test corpus (JSONL); repeatable.",
        ),
    ]

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        source: str,
        fsdd_dir: Path | None,
        train_manifest: Path | None,
        test_manifest: tuple[Path, ...],
        **kwargs: Any,
    ) -> Any:
        tests = [Path(p) for p in test_manifest]
        if source == "manifest" and tests and all(p.name == DEV_SPLIT_FILE for p in tests):
            raise click.BadParameter(
                f"{tests[0]} is the dev split (a file named {DEV_SPLIT_FILE} is never reported as a test set); add a "
                "test manifest with another name.",
                param_hint="--test-manifest",
            )
        return fn(*args, data=DataOptions(source, fsdd_dir, train_manifest, tuple(test_manifest)), **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


aat_config_option = click.option(
    "--aat-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="a TOML file with an [aat] table: the fine-tuning recipe to use instead of the model config's [aat].",
)


def aat_steps_option(fn: Callable) -> Callable:
    return click.option(
        "--aat-steps",
        type=click.IntRange(min=1),
        default=None,
        help="AAT fine-tuning steps (default: the model config's aat.steps).",
    )(fn)


def init_option(help_text: str) -> Callable:
    """`--init`: a trained checkpoint folder to start from."""
    return click.option("--init", "init", type=click.Path(path_type=Path), default=None, help=help_text)


def report_option(name: str) -> Callable:
    """`--report`: the bench's output folder, `bench/<name>` by default."""
    return click.option(
        "--report",
        type=click.Path(path_type=Path),
        default=Path("bench") / name,
        show_default=True,
        help="output folder.",
    )


def method_options(fn: Callable) -> Callable:
    fn = click.option(
        "--tier", type=int, default=None, help="sparsity tier in percent (one of the model config's tiers)."
    )(fn)
    return click.option(
        "--method",
        type=click.Choice(METHODS),
        default=None,
        help="dense | tfmot (one pruned model per tier) | omni (all tiers, shared weights) | csp (compressed sensing).",
    )(fn)


def path_options(fn: Callable) -> Callable:
    fn = click.option(
        "--work-dir",
        type=click.Path(path_type=Path),
        default=PATH_DEFAULTS.work_dir,
        show_default=True,
        help="stage cache.",
    )(fn)
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path),
        default=PATH_DEFAULTS.out_dir,
        show_default=True,
        help="device artifacts.",
    )(fn)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging and tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Train one streaming RNN-T and ship verified int8 artifacts for every device."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.option("--target", "target", default=None, help="target profile in targets/ (see `pipeline targets`).")
@click.option(
    "--all-targets",
    is_flag=True,
    help="every profile from ONE trained checkpoint (default: tiny, omni), each at its densest tier within budget.",
)
@click.option("--model", default=None, help="model config in models/ (default: the target's).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="training steps (default: the model config's).")
@method_options
@click.option(
    "--aat/--no-aat",
    default=None,
    help="fine-tune with the int8 kernels emulated (accelerator-aware training) before export "
    "(default: the target's build.aat); each tier ships AAT's int8 graphs or the checkpoint's post-training-quantized "
    "ones, as the model's [aat] gate chooses on a held-out split (manifest: model.quantization.aat_selection).",
)
@click.option(
    "--switchable/--no-switchable",
    default=None,
    help="ship the tiers of one omni checkpoint as one package (the densest tier's graphs plus a small patch per "
    "other tier; on an NPU target each tier's own Vela-compiled graphs too, as many tiers as fit model_bytes) that an "
    "app switches between at run time (default: the target's build.switchable).",
)
@data_options
@path_options
def build(
    target: str | None,
    all_targets: bool,
    model: str | None,
    steps: int | None,
    method: str | None,
    tier: int | None,
    aat: bool | None,
    switchable: bool | None,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Data → train → int8 export → verify in the device runtime → dist/<target>/ + manifest.json."""
    paths = BuildPaths(out_dir, work_dir)
    if all_targets == (target is not None):
        raise click.UsageError("give exactly one of --target NAME or --all-targets.")
    if all_targets:
        if tier is not None:
            raise click.UsageError(
                "--tier picks one tier for one target; --all-targets chooses each profile's tier by its budgets."
            )
        if switchable:
            raise click.UsageError("--switchable builds one target; give --target NAME.")
        from .build import build_all

        for manifest in build_all(data, paths, model, steps, method, bool(aat)):
            _wrote(manifest)
        return
    _wrote(run_build(target, data, paths, model, steps, method, tier, aat, switchable))


def _wrote(manifest: Path) -> None:
    click.echo(f"wrote {manifest}")
    evaluation = json.loads(Path(manifest).read_text())["evaluation"]
    if evaluation.get("caveat"):
        click.echo(f"note: {evaluation['caveat']}.", err=True)
    for name, s in evaluation["sets"].items():
        if s.get("caveat"):
            click.echo(f"note: {name}: {s['caveat']}.", err=True)


@cli.command()
@click.option("--model", default=BuildOptions().model, show_default=True, help="model config in models/.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="training steps (default: the model config's).")
@click.option("--resume", is_flag=True, help="continue from the last checkpoint of the same run.")
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="default",
    show_default=True,
    help="tf.distribute strategy; multi-worker reads the cluster from TF_CONFIG (see README).",
)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="folder for the trained checkpoint.")
@method_options
@click.option(
    "--aat",
    is_flag=True,
    help="then fine-tune every tier with the int8 kernels emulated (accelerator-aware training); "
    "the checkpoint also holds the learned int8 ranges, which export uses.",
)
@aat_steps_option
@aat_config_option
@init_option("with --aat: fine-tune this trained checkpoint folder instead of training one first.")
@data_options
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=PATH_DEFAULTS.work_dir,
    show_default=True,
    help="stage cache.",
)
def train(
    model: str,
    steps: int | None,
    resume: bool,
    strategy: str,
    out: Path,
    method: str | None,
    tier: int | None,
    aat: bool,
    aat_steps: int | None,
    aat_config: Path | None,
    init: Path | None,
    data: DataOptions,
    work_dir: Path,
) -> None:
    """Prepare data and train one model (or one set of sparsity tiers); writes a checkpoint folder (params.npz +
    model.json).
    """
    from .checkpoint import ModelCheckpoint, checkpoint_output
    from .config import load_aat_config, load_model_config
    from .distribute import make_distribution
    from .fsutil import atomic_directory
    from .methods import check_method
    from .stages import begin, stage_corpus, stage_features, stage_train

    if (init is not None or aat_steps is not None or aat_config is not None) and not aat:
        raise click.UsageError("--init, --aat-steps and --aat-config belong to --aat.")
    if init is not None and (method is not None or tier is not None or steps is not None):
        raise click.UsageError("--init fine-tunes a trained checkpoint: --method, --tier and --steps do not apply.")
    dist = make_distribution(strategy)  # first: MultiWorkerMirroredStrategy must precede other TF work
    recipe = load_aat_config(aat_config) if aat_config is not None else None
    cfg = load_model_config(model)
    base = None
    if init is not None:
        from .stages import checkpoint_stage_input

        cfg = ModelCheckpoint.load(init).config
        base = checkpoint_stage_input(init)
    if recipe is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, aat=recipe)
    method = method or "dense"
    check_method(method, cfg, tier)
    cache, src = begin(cfg, data, work_dir, [checkpoint_output(out)])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    if base is None:
        base = stage_train(cache, cfg, feats, steps, resume=resume, method=method, tier=tier, dist=dist)
    ckpt, summary = base.folder, base.summary
    if aat:
        from .calibrate import load_calibration_recipe
        from .stages import stage_aat

        # the default recipe is every target's calibration (targets/*.toml); export calibrates with the same
        tuned = stage_aat(
            cache, cfg, feats, base, corpus, load_calibration_recipe("default"), aat_steps, resume=resume, dist=dist
        )
        ckpt, summary = (
            tuned.folder,
            {"steps": tuned.summary["aat"]["steps"], "final_loss": tuned.summary["aat"]["final_loss"]},
        )
    target = checkpoint_output(out)
    with atomic_directory(target.path, target.holds, target.legacy) as tmp:
        for f in ckpt.iterdir():
            shutil.copyfile(f, tmp / f.name)
    click.echo(f"wrote {out} (steps {summary['steps']}, loss {summary['final_loss']:.3f})")


@cli.command("download-fsdd")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--url", default=FSDD_URL, show_default=True)
@click.option(
    "--sha256",
    "sha",
    default=FSDD_RECORDINGS_SHA256,
    show_default=True,
    help="digest of the recordings (see pipeline/fsdd.py).",
)
def download_fsdd(dest: Path, url: str, sha: str) -> None:
    """Download the Free Spoken Digit Dataset (CC BY-SA 4.0) and verify it."""
    from .fsdd import download_fsdd as download

    click.echo(f"FSDD at {download(dest, url, sha)}")


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--corpus", type=click.Path(path_type=Path), default=None, help="JSONL corpus to decode a few utterances of."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=5, show_default=True, help="utterances to decode from --corpus."
)
def verify(folder: Path, corpus: Path | None, limit: int) -> None:
    """Check a device folder: manifest schema, sha256 of every graph, load and decode in its runtime."""
    from .verify import verify_dist

    result = verify_dist(folder, corpus, limit)
    shown = ", ".join(f"{rt}: " + ("loads and runs" if w is None else f"WER {w:.3f}") for rt, w in result.items())
    click.echo(f"{folder}: manifest valid, hashes match; {shown}")


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("wavs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--runtime",
    type=click.Choice(["litert", "tflm"]),
    default="litert",
    show_default=True,
    help="runtime to decode in (tflm: device folders built for TFLM, e.g. the watch).",
)
@click.option("--mix-stereo", is_flag=True, help="average the channels of multi-channel files (default: refuse them).")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per file instead of `file<TAB>transcript`.")
@click.option(
    "--edge-padding/--no-edge-padding",
    default=True,
    show_default=True,
    help="the zeros the manifest's frontend adds at both ends of each file (edge_padding_samples); --no-edge-padding "
    "leaves them out, to see what they do.",
)
def transcribe(
    folder: Path, wavs: tuple[Path, ...], runtime: str, mix_stereo: bool, as_json: bool, edge_padding: bool
) -> None:
    """Transcribe WAV files with a device folder's int8 graphs, through its manifest alone.

    WAV of any integer or float encoding (or FLAC, OGG), mono (or --mix-stereo); other sample rates are resampled to
    the model's.
    """
    from .verify import transcribe as run

    for r in run(folder, list(wavs), runtime, mix_stereo, edge_padding):
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "file": str(r.path),
                        "text": r.text,
                        "audio_seconds": round(r.seconds, 3),
                        "rtf": round(r.compute_seconds / max(r.seconds, 1e-9), 4),
                        "runtime": runtime,
                    }
                )
            )
        else:
            click.echo(f"{r.path}\t{r.text}")


@cli.group()
def bench() -> None:
    """Long measurements (not unit tests): each writes a report folder (Markdown, CSV, charts)."""


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}.") from None


def _positive_int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    values = _int_list(ctx, param, value)
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected comma-separated integers of at least 1, got {value!r}.")
    return values


@bench.command("sparsity")
@click.option("--model", default=BuildOptions().model, show_default=True, help="model config in models/.")
@click.option("--methods", default="dense,tfmot,omni,csp", show_default=True, help="comma-separated training methods.")
@click.option(
    "--tiers",
    default="50,70,80,90",
    show_default=True,
    callback=_int_list,
    help="comma-separated sparse tiers (dense is tier 0).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="training steps of every run (default: the model config's).",
)
@click.option(
    "--widths",
    default="96,80,64",
    show_default=True,
    callback=_int_list,
    help="the baseline: encoder widths (units) at which the same recipe is also trained dense, predictor and joiner "
    "scaled alike; empty for none.",
)
@click.option(
    "--search-budgets",
    default="",
    show_default=True,
    callback=_int_list,
    help="comma-separated shipped-bytes budgets (sparse-encoded graphs) within which the budget search finds omni's "
    "best per-kernel mix of tiers on the dev split; empty for none.",
)
@click.option(
    "--search",
    type=click.IntRange(min=1),
    default=24,
    show_default=True,
    help="mixes the budget search scores per budget.",
)
@report_option("sparsity")
@click.option(
    "--merge",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    multiple=True,
    help="sparsity.csv of an earlier run to report together (its rows for methods/tiers not rerun).",
)
@data_options
@path_options
def bench_sparsity(
    model: str,
    methods: str,
    tiers: list[int],
    widths: list[int],
    search_budgets: list[int],
    search: int,
    steps: int | None,
    report: Path,
    merge: tuple[Path, ...],
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Every method x tier and a dense-width baseline: float/int8 WER, nonzeros, dense/sparse/Vela bytes, NPU cycles,
    training time; which pruned tiers beat the best dense model of their size."""
    from .bench import bench_sparsity as run

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise click.BadParameter(
            f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}.", param_hint="--methods"
        )
    run(
        model,
        chosen,
        tiers,
        data,
        BuildPaths(out_dir, work_dir),
        report,
        steps,
        merge=list(merge),
        widths=widths,
        search_budgets=search_budgets,
        search=search,
    )
    click.echo((report / "sparsity.md").read_text())


@bench.command("speakers")
@click.option(
    "--target",
    default="watch",
    show_default=True,
    help="target profile whose model, method and calibration are measured.",
)
@click.option("--model", default=None, help="model config in models/ (default: the target's).")
@click.option(
    "--seeds",
    default="1234",
    show_default=True,
    callback=_int_list,
    help="comma-separated training seeds (each fold trains once per seed).",
)
@click.option(
    "--speakers",
    default=",".join(FSDD_SPEAKERS),
    show_default=True,
    help="comma-separated FSDD speakers, one fold each (the others always train); each fold is the full run's.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="training steps of every fold (default: the model config's).",
)
@click.option(
    "--method",
    type=click.Choice(["dense", "omni"]),
    default=None,
    help="training method (default: the target's; dense for its other pruning methods).",
)
@click.option(
    "--tier",
    type=click.IntRange(min=0, max=99),
    default=0,
    show_default=True,
    help="omni: the tier decoded, stored as the target stores it (sparse-encoded on the speaker).",
)
@click.option("--tflm", is_flag=True, help="also decode the int8 graphs in TFLM (slower).")
@click.option(
    "--synthesized-only",
    is_flag=True,
    help="instead: one model trained on synthesized speech alone, tested on every FSDD speaker.",
)
@report_option("speakers")
@data_options
@path_options
def bench_speakers(
    target: str,
    model: str | None,
    seeds: list[int],
    speakers: str,
    steps: int | None,
    method: str | None,
    tier: int,
    tflm: bool,
    synthesized_only: bool,
    report: Path,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Leave-one-speaker-out (FSDD) and leave-one-voice-family-out (espeak-ng): float and int8 WER per fold, mean,
    worst, 95% interval.
    """
    from .speakers import bench_speakers as run

    chosen = tuple(s.strip() for s in speakers.split(",") if s.strip())
    bad = [s for s in chosen if s not in FSDD_SPEAKERS]
    if bad or not chosen:
        raise click.BadParameter(
            f"name one or more of {', '.join(FSDD_SPEAKERS)}" + (f", not {bad[0]!r}." if bad else "."),
            param_hint="--speakers",
        )
    if not seeds:
        raise click.BadParameter("give at least one seed.", param_hint="--seeds")
    run(
        model,
        data,
        BuildPaths(out_dir, work_dir),
        report,
        seeds,
        target,
        steps,
        chosen,
        tflm,
        synthesized_only,
        method,
        tier,
    )
    click.echo((report / "speakers.md").read_text())


@bench.command("switching")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    required=True,
    help="held-out utterances (JSONL, e.g. <work-dir>/cache/data/<key>/test_unseen.jsonl).",
)
@click.option("--switches", type=click.IntRange(min=10), default=100, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="decode only the first N utterances.")
@click.option("--report", type=click.Path(path_type=Path), default=Path("bench/switching"), show_default=True)
def bench_switching(folder: Path, corpus: Path, switches: int, limit: int | None, report: Path) -> None:
    """A switchable package through the example runtime: switch time, every tier's words against its standalone
    graphs, WER per tier and after a switch in the middle of an utterance."""
    from .fsutil import atomic_write_json
    from .switching import bench_switching as run

    result = run(folder, corpus, switches, limit)
    report.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report / "switching.json", result)
    lines = [
        f"# Switching tiers: {folder}",
        "",
        f"Package {result['package_bytes']:,} B = {result['package_bytes'] / result['densest_graph_bytes']:.3f} x the "
        f"densest tier's graphs ({result['densest_graph_bytes']:,} B).",
        "",
        f"Tier switch over {switches} switches: cold (patch + load) p50 {result['switch_cold']['p50_ms']} ms, p90 "
        f"{result['switch_cold']['p90_ms']} ms; warm (tier loaded before) p90 {result['switch_warm']['p90_ms']} ms; "
        f"mid-utterance with the states rebuilt p90 {result['switch_mid_utterance_rebuild']['p90_ms']} ms.",
        "",
        *(
            [
                f"TFLM (host, the int8 graphs on the CPU kernels): building a tier's three interpreters p50 "
                f"{result['switch_tflm']['p50_ms']} ms, p90 {result['switch_tflm']['p90_ms']} ms (on the device a "
                "switch builds the interpreter on that tier's Vela graphs in flash, in the same arena).",
                "",
            ]
            if "switch_tflm" in result
            else []
        ),
        "| tier | words = standalone | WER | switched mid-utterance: states rebuilt | states handed over | WER TFLM |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tier, e in result["tiers"].items():
        mid = e.get("wer_switched_mid_utterance")
        kept = e.get("wer_switched_mid_utterance_states_handed_over")
        lines.append(
            f"| {tier} | {e['words_equal_standalone']}/{e['utterances']} | {100 * e['wer']:.1f}% | "
            + (f"{100 * mid:.1f}% | {100 * kept:.1f}% | " if mid is not None else "- | - | ")
            + (f"{100 * e['wer_tflm']:.1f}% |" if "wer_tflm" in e else "- |")
        )
    (report / "switching.md").write_text("\n".join(lines) + "\n")
    click.echo((report / "switching.md").read_text())


@bench.command("quant")
@click.option("--model", default=BuildOptions().model, show_default=True, help="model config in models/.")
@click.option(
    "--method",
    default="omni",
    show_default=True,
    type=click.Choice(METHODS),
    help="training method of the base checkpoint.",
)
@click.option(
    "--tiers", default="", callback=_int_list, help="comma-separated tiers (default: every tier the checkpoint holds)."
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="base training steps (default: the model config's)."
)
@aat_steps_option
@aat_config_option
@init_option("a trained checkpoint folder to start from instead of training one.")
@report_option("quant")
@data_options
@path_options
def bench_quant(
    model: str,
    method: str,
    tiers: list[int],
    steps: int | None,
    aat_steps: int | None,
    aat_config: Path | None,
    init: Path | None,
    report: Path,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Per tier: float, post-training int8 and AAT int8 WER (LiteRT), the int8 - float gaps, NPU cycles before/after
    AAT.
    """
    from .bench import bench_quant as run

    if init is not None and steps is not None:
        raise click.UsageError("--init starts from a trained checkpoint: --steps does not apply.")
    from .config import load_aat_config

    run(
        model,
        method,
        tiers or None,
        data,
        BuildPaths(out_dir, work_dir),
        report,
        steps,
        aat_steps,
        init,
        aat=load_aat_config(aat_config) if aat_config is not None else None,
    )
    click.echo((report / "quant.md").read_text())


@bench.command("calibration")
@click.option("--init", "init", type=click.Path(path_type=Path), required=True, help="a trained checkpoint folder.")
@click.option(
    "--tiers", default="", callback=_int_list, help="comma-separated tiers (default: every tier the checkpoint holds)."
)
@click.option(
    "--seeds",
    default="11,12,13",
    show_default=True,
    callback=_int_list,
    help="calibration seeds (the target recipe's seed is replaced by each in turn).",
)
@click.option("--target", default="watch", show_default=True, help="target profile whose calibration recipe is varied.")
@report_option("calibration")
@data_options
@path_options
def bench_calibration(
    init: Path,
    tiers: list[int],
    seeds: list[int],
    target: str,
    report: Path,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Per tier: post-training int8 WER with each calibration seed (how much int8 WER moves with the calibration draw
    alone).
    """
    from .bench import bench_calibration as run

    run(
        init,
        tiers or None,
        seeds,
        data,
        BuildPaths(out_dir, work_dir),
        report,
        target,
    )
    click.echo((report / "calibration.md").read_text())


@bench.command("parity")
@click.option(
    "--init",
    "init",
    type=click.Path(path_type=Path),
    required=True,
    help="an AAT checkpoint folder (`pipeline train --aat`).",
)
@click.option("--tier", type=int, default=None, help="tier to check (default: the sparsest in the checkpoint).")
@click.option(
    "--utterances", type=click.IntRange(min=1), default=20, show_default=True, help="test_unseen utterances to run."
)
@data_options
@path_options
def bench_parity(
    init: Path,
    tier: int | None,
    utterances: int,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Share of the int8 .tflite's outputs within one int8 step of the AAT emulation, on real utterances."""
    from .bench import bench_parity as run

    tier, rates = run(init, tier, data, BuildPaths(out_dir, work_dir), utterances)
    click.echo(
        f"tier {tier}, {utterances} utterances: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in rates.items())
        + " within one int8 step"
    )


@bench.command("train-speed")
@click.option("--model", default=BuildOptions().model, show_default=True, help="model config in models/.")
@click.option(
    "--variants",
    default="dense,omni,omni:3x0.5,tfmot,csp",
    show_default=True,
    help="methods to time; omni:KxS = K tiers per step, each on a share S of the batch.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="timed steps per variant and round (after 20 warm-up steps).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="rounds, each timing every variant in turn; the medians are reported.",
)
@data_options
@path_options
def bench_train_speed(
    model: str,
    variants: str,
    steps: int,
    rounds: int,
    data: DataOptions,
    out_dir: Path,
    work_dir: Path,
) -> None:
    """Training steps per second of each method on the same batches, and the ratio to dense (run on an idle machine)."""
    import statistics

    from .bench import bench_train_speed as run

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    for v in chosen:
        m, _, shape = v.partition(":")
        if m not in METHODS or (shape and not re.fullmatch(r"\d+x(0?\.\d+|1(\.0*)?)", shape)):
            raise click.BadParameter(f"{v!r} is not METHOD or omni:KxS (e.g. omni:3x0.5).", param_hint="--variants")
    if len(set(chosen)) != len(chosen):
        raise click.BadParameter("each variant once (use --rounds to repeat).", param_hint="--variants")
    speeds = run(
        model,
        chosen,
        data,
        BuildPaths(out_dir, work_dir),
        steps,
        rounds=rounds,
    )
    base = speeds.get("dense")
    for v, s in speeds.items():
        # the ratio per round (variants timed minutes apart within a round), then its median
        ratio = statistics.median(b / x for b, x in zip(base, s)) if base else None
        click.echo(
            f"{v:12s} {statistics.median(s):6.2f} steps/s (rounds: {', '.join(f'{x:.2f}' for x in s)})"
            + (f"  {ratio:.2f}x dense wall time per step" if ratio else "")
        )


@bench.command("scale")
@click.option("--model", default=BuildOptions().model, show_default=True, help="model config in models/.")
@click.option(
    "--hours",
    default="2,20",
    show_default=True,
    help="comma-separated training corpus sizes, hours of synthesized connected digits (each cached).",
)
@click.option("--workers", default="1,2", show_default=True, help="comma-separated worker counts (on 127.0.0.1).")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="timed training steps of each run (after 20 warm-up steps).",
)
@click.option(
    "--report", type=click.Path(path_type=Path), default=Path("bench/scale"), show_default=True, help="output folder."
)
@click.option(
    "--work-dir", type=click.Path(path_type=Path), default=Path(".pipeline"), show_default=True, help="stage cache."
)
def bench_scale(model: str, hours: str, workers: str, steps: int, report: Path, work_dir: Path) -> None:
    """Features throughput, training steps/s and peak training memory as the corpus grows, at 1 and 2 workers."""
    from .scale import bench_scale as run

    try:
        sizes = [float(h) for h in hours.split(",") if h.strip()]
        counts = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated numbers, e.g. 2,20.") from None
    for r in run(model, sizes, counts, steps, work_dir, report):
        click.echo(
            f"{r.hours:7.2f} h  features {r.features_realtime:6.0f}x real time  {r.workers} worker(s) "
            f"{r.steps_per_second:6.2f} steps/s  peak RSS {r.peak_rss_mb:6.0f} MB"
        )
    click.echo(f"report: {report / 'scale.md'}")


@bench.command("latency")
@click.option("--model", default="large", show_default=True, help="model config in models/.")
@click.option(
    "--threads",
    default="1,4",
    show_default=True,
    callback=_positive_int_list,
    help="comma-separated LiteRT thread counts.",
)
@click.option("--runs", type=click.IntRange(min=10), default=200, show_default=True)
def bench_latency(model: str, threads: list[int], runs: int) -> None:
    """Host LiteRT int8 encoder real-time factor (p50/p90) of a model config, per thread count."""
    from .bench import bench_latency as run
    from .manifest import machine

    click.echo(f"machine: {machine()}")
    for r in run(model, threads, runs):
        click.echo(
            f"{r['model']:6s} threads={r['threads']} encoder {r['encoder_bytes']:,} B, {r['ms_per_chunk_p50']:.2f} ms "
            f"per {r['chunk_ms']:.0f} ms chunk: "
            f"RTF p50 {r['rtf_p50']:.4f} p90 {r['rtf_p90']:.4f} ({r['runs']} runs)"
        )


@cli.command()
def targets() -> None:
    """List target profiles and their budgets."""
    from .targets import load_target, target_names

    for name in target_names():
        t = load_target(name)
        b = t.budgets
        click.echo(
            f"{t.name:10s} {t.device.runtime:7s} threads={t.device.threads} model={t.build.model:6s} "
            f"method={t.build.method:5s} "
            f"sparse_encoding={str(t.build.sparse_encoding).lower():5s} aat={str(t.build.aat).lower():5s} "
            f"budgets: model_bytes={b.model_bytes} arena_bytes={b.arena_bytes} rtf={b.rtf}  {t.description}"
        )


MAX_MESSAGE = 600  # characters: an error is one sentence, never a listing


def _one_sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one sentence and exit code 2 for user errors, 1 for internal ones."""
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except PipelineError as exc:
        if verbose:
            logging.exception("error")
        click.echo(f"error: {_one_sentence(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # an environment problem no stage turned into a HostError: still one sentence, exit 3
        if verbose:
            logging.exception("error")
        err = host_error("use", exc.filename or "a file", exc)
        click.echo(f"error: {_one_sentence(str(err))}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 (the one place that turns bugs into exit code 1)
        if verbose:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback).", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""`pipeline bench scale`: what training costs as the corpus grows.

For each corpus size (hours of connected digits said by synthesized speakers, cached like any data stage) it reports
the features stage's throughput (seconds of audio featurized per second, augmented copies included, on one core),
and, for 1 and 2 workers (`MultiWorkerMirroredStrategy` on 127.0.0.1), training steps per second and each training
process's peak resident memory. Each training runs in a process of its own (`python -m pipeline.scale JOB`), so its
peak memory is its own; with two workers the larger of the two is reported. The features come from the stage cache,
so a training process holds what training needs (the model, the features' row table, a batch), not the features.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig, load_model_config
from .errors import ConfigError, InternalError
from .fsutil import atomic_directory
from .preflight import utterance_seconds
from .tomlconf import load_dataclass, to_dict

log = logging.getLogger(__name__)

WARMUP_STEPS = 20  # steps before the timed ones (tracing, caches); a checkpoint is saved after them


@dataclass(frozen=True)
class ScaleRow:
    hours: float  # audio of the training corpus (clean), measured
    utterances: int
    feature_rows: int  # clean + augmented copies
    features_seconds: float  # the features stage's wall time (one core)
    features_realtime: float  # featurized audio seconds per second of that stage
    workers: int
    steps: int  # timed steps, after WARMUP_STEPS
    steps_per_second: float
    peak_rss_mb: float  # the largest training process's peak resident memory


def corpus_config(cfg: ModelConfig, hours: float, seconds_per_utterance: float | None = None) -> ModelConfig:
    """`cfg` drawing `hours` of connected-digit utterances from synthesized speakers (the data stage's synthesized
    source), named after the size; utterances last `seconds_per_utterance` on average (default: the estimate from the
    recipe)."""
    utterances = max(1, round(hours * 3600 / (seconds_per_utterance or utterance_seconds(cfg))))
    return dataclasses.replace(
        cfg,
        name=f"{cfg.name}_{hours:g}h".replace(".", "p"),
        data=dataclasses.replace(cfg.data, train_utterances=utterances),
        synthesized={},  # the corpus's recipe as written: no [synthesized] overrides
    )


def free_ports(n: int) -> list[int]:
    """`n` TCP ports on 127.0.0.1 free at the time of the call (for a cluster of worker processes)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _train_processes(cfg: ModelConfig, work_dirs: list[Path], steps: int, folder: Path) -> tuple[float, float]:
    """Train `cfg` for WARMUP_STEPS + `steps` on len(`work_dirs`) workers, one process each; returns (timed steps per
    second on the chief, the largest peak RSS in MB)."""
    workers = len(work_dirs)
    cluster = [f"127.0.0.1:{p}" for p in free_ports(workers)] if workers > 1 else []
    procs = []
    for i, work in enumerate(work_dirs):
        job = folder / f"job-{cfg.name}-{workers}w-{i}.json"
        result = folder / f"result-{cfg.name}-{workers}w-{i}.json"
        job.write_text(
            json.dumps(
                {
                    "config": to_dict(cfg),
                    "work_dir": str(work),
                    "steps": steps,
                    "multi_worker": workers > 1,
                    "out": str(result),
                }
            )
        )
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})
        log_file = (folder / f"train-{cfg.name}-{workers}w-{i}.log").open("w")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "pipeline.scale", str(job)], stdout=log_file, stderr=log_file, env=env
                ),
                result,
                log_file,
            )
        )
    peak, rate = 0.0, 0.0
    failed = []
    for p, result, log_file in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        log_file.close()
        peak = max(peak, usage.ru_maxrss / 1024)  # kilobytes on Linux
        if p.returncode != 0:
            failed.append(f"{log_file.name} (exit {p.returncode})")
        elif result.name.endswith("-0.json"):
            rate = json.loads(result.read_text())["steps_per_second"]
    if failed:
        raise InternalError(f"a training process of the scale bench failed; see {', '.join(failed)}.")
    return rate, peak


def bench_scale(
    model: str, hours: list[float], workers: list[int], steps: int, work_dir: Path, report: Path
) -> list[ScaleRow]:
    """The figures of the module docstring, one row per (corpus size, worker count); writes scale.md/.csv to
    `report`."""
    from .cache import link_stages
    from .stages import stage_features

    if not hours or not workers or min(workers) < 1 or min(hours) <= 0:
        raise ConfigError("--hours and --workers need positive values.")
    base = load_model_config(model)
    rows: list[ScaleRow] = []
    with atomic_directory(report, holds="pipeline bench report") as tmp:
        for h in hours:
            cache, cfg, corpus, clean_hours = _corpus(base, h, work_dir)
            features = stage_features(cache, cfg, corpus)
            s = features.summary
            audio = s["frames"] * cfg.frontend.hop_ms / 1000  # featurized seconds, copies included
            for n in workers:
                works = [work_dir] + [work_dir.parent / f"{work_dir.name}-worker{i}" for i in range(1, n)]
                for w in works[1:]:  # each worker has its own cache: the data and features stages linked in, not redone
                    link_stages(work_dir, w)
                (tmp / "runs").mkdir(exist_ok=True)
                rate, peak = _train_processes(cfg, works, steps, tmp / "runs")
                rows.append(
                    ScaleRow(
                        round(clean_hours, 3),
                        s["utterances"],
                        s["feature_sets"],
                        s["seconds"],
                        round(audio / s["seconds"], 1),
                        n,
                        steps,
                        round(rate, 2),
                        round(peak, 1),
                    )
                )
                log.info("%s", rows[-1])
        write_scale_report(rows, tmp, model)
    return rows


def _corpus(base: ModelConfig, hours: float, work_dir: Path) -> tuple[Any, ModelConfig, Any, float]:
    """The data stage of a synthesized corpus of `hours` (within 3%: sized again from the first draw's mean utterance
    length when the recipe's estimate missed); returns the stage cache, the config, the prepared corpus and its
    measured hours."""
    from .corpus import read_manifest
    from .data import DataOptions
    from .stages import begin, stage_corpus

    per_utterance = None
    for _ in range(2):
        cfg = corpus_config(base, hours, per_utterance)
        cache, src = begin(cfg, DataOptions("synth"), work_dir, [])
        cfg, corpus = stage_corpus(cache, cfg, src)
        train = read_manifest(corpus.splits["train"])
        measured = sum(u.duration for u in train.utterances) / 3600
        if abs(measured / hours - 1) <= 0.03:
            break
        per_utterance = measured * 3600 / len(train.utterances)
    return cache, cfg, corpus, measured


def write_scale_report(rows: list[ScaleRow], folder: Path, model: str) -> None:
    names = [f.name for f in dataclasses.fields(ScaleRow)]
    with (folder / "scale.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow([getattr(r, n) for n in names])
    lines = [
        f"# Scale bench: model `{model}`",
        "",
        "Training corpora of connected digits said by synthesized speakers. Features: the features stage's wall time "
        "on one core and its throughput in seconds of audio featurized per second (augmented copies included). "
        f"Training: steps per second after {WARMUP_STEPS} warm-up steps, and the largest peak resident memory of the "
        "training processes (one per worker, on 127.0.0.1).",
        "",
        "| corpus hours | utterances | feature rows | features s | features x real time | workers | steps | steps/s "
        "| peak RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.hours:.2f} | {r.utterances:,} | {r.feature_rows:,} | {r.features_seconds:.0f} | "
            f"{r.features_realtime:.0f} | {r.workers} | {r.steps} | {r.steps_per_second:.2f} | {r.peak_rss_mb:.0f} |"
        )
    by_workers: dict[int, list[ScaleRow]] = {}
    for r in rows:
        by_workers.setdefault(r.workers, []).append(r)
    ratios = []
    for n, rs in by_workers.items():
        if len(rs) > 1:
            big, small = max(rs, key=lambda r: r.hours), min(rs, key=lambda r: r.hours)
            ratios.append(f"{n} worker{'s' if n > 1 else ''}: {big.peak_rss_mb / small.peak_rss_mb:.2f}x")
    if ratios:
        lines += ["", "Peak RSS of the largest corpus over the smallest: " + ", ".join(ratios) + "."]
    (folder / "scale.md").write_text("\n".join(lines) + "\n")


def _worker(job_path: Path) -> None:
    """One training run of the bench (this process): warm-up steps, then the timed ones."""
    from .data import DataOptions
    from .distribute import make_distribution

    job = json.loads(job_path.read_text())
    dist = make_distribution("multi-worker" if job["multi_worker"] else "default")
    from .stages import begin, stage_corpus, stage_features
    from .train import Trainer

    cfg = load_dataclass(ModelConfig, job["config"], str(job_path))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=WARMUP_STEPS))
    work = Path(job["work_dir"])
    cache, src = begin(cfg, DataOptions("synth"), work, [])
    cfg, corpus = stage_corpus(cache, cfg, src)
    features = stage_features(cache, cfg, corpus)
    from .features import FeatureShards

    train_dir = work / "scale-train"
    shutil.rmtree(train_dir, ignore_errors=True)
    trainer = Trainer(cfg, FeatureShards.load(features.folder), train_dir, steps=WARMUP_STEPS + job["steps"], dist=dist)
    trainer.run(until=WARMUP_STEPS)
    t0 = time.perf_counter()
    trainer.run(resume=True)
    rate = job["steps"] / (time.perf_counter() - t0)
    Path(job["out"]).write_text(json.dumps({"steps_per_second": rate}))
    shutil.rmtree(train_dir, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _worker(Path(sys.argv[1]))

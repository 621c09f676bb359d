"""Run the [aat] gate again on a `bench quant` work dir's cached exports, with another rule or on another held-out split.

    python reports/quant/regate.py WORK_DIR [RULE [SPLIT]]

RULE: significant or better (default: the [aat] default). SPLIT: test_seen, test_unseen, or the espeak-ng splits an
FSDD corpus synthesizes beside its training voices, synth/test_seen and synth/test_unseen (default: the split the
bench's gate used). For every tier the bench's gate decided on (its cache/aat_gate stages), runs
build.stage_aat_gate on the same PTQ and AAT exports (cached under WORK_DIR/regate) and prints its figures as JSON
lines. Session 17 used it on the session-16 benches, whose checkpoints no longer exist.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

from pipeline.build import PreparedData, stage_aat_gate
from pipeline.cache import StageCache
from pipeline.checkpoint import ModelCheckpoint
from pipeline.config import AatConfig
from pipeline.data import DataSource

SPLITS = ("test_seen", "test_unseen", "synth/test_seen", "synth/test_unseen")


def bench_inputs(work: Path) -> tuple[Path, Path]:
    """A bench work dir's newest data folder, and one of its AAT checkpoint folders (decoding needs only the config,
    tokenizer and normalizer, which every tier shares)."""
    cache = work / "cache"
    return max((cache / "data").iterdir(), key=lambda d: d.stat().st_mtime), next((cache / "aat").glob("*/checkpoint"))


def regate(work: Path, ck_dir: Path, corpus: PreparedData, cfg: AatConfig, split: str | None, out: str) -> list[dict]:
    """build.stage_aat_gate with `cfg` on `split` (None: the split the bench's gate used) for every tier the bench's gate
    decided on, on the same PTQ and AAT exports (stages cached under WORK_DIR/`out`); one dict per tier, by tier."""
    cache = work / "cache"
    stages, store = [json.loads(p.read_text()) for p in (cache / "export").glob("*/stage.json")], StageCache(cache)
    exports = {json.dumps(s["inputs"], sort_keys=True): store.folder("export", s["key"]) for s in stages}
    rows = []
    for p in (cache / "aat_gate").glob("*/stage.json"):
        inputs = json.loads(p.read_text())["inputs"]
        ptq, aat = ((exports[json.dumps(inputs[k], sort_keys=True)], {"key": inputs[k]}) for k in ("ptq", "aat"))
        gate = stage_aat_gate(StageCache(work / out), ptq, aat, ck_dir, corpus, replace(cfg, gate_split=split or inputs["split"]))
        rows.append({"tier": inputs["ptq"]["tier"], **gate})
    return sorted(rows, key=lambda r: r["tier"])


def main() -> None:
    work = Path(sys.argv[1])
    rule = sys.argv[2] if len(sys.argv) > 2 else AatConfig().gate
    split = sys.argv[3] if len(sys.argv) > 3 else None
    data, ck_dir = bench_inputs(work)
    corpus = PreparedData(DataSource("fsdd", ""), data, {}, {s: data / f"{s}.jsonl" for s in SPLITS})
    cfg = replace(ModelCheckpoint.load(ck_dir).config.aat, gate=rule)
    for row in regate(work, ck_dir, corpus, cfg, split, "regate"):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

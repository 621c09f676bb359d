"""Re-choose, with another [aat] gate rule, what `build --aat` ships from a `bench quant` work dir's cached exports.

    python reports/quant/regate.py WORK_DIR [RULE]     (RULE: gap, significant or better; default: the [aat] default)

For every tier the bench's gate decided on (its cache/aat_gate stages), runs build.stage_aat_gate with RULE on the same
PTQ and AAT exports (a cache under WORK_DIR/regate, so a second run reuses it) and prints the gate's figures as JSON
lines. This is how session 17 applied the `gap` rule to the session-16 benches of two checkpoints that no longer exist.
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


def main() -> None:
    cache = Path(sys.argv[1]) / "cache"
    rule = sys.argv[2] if len(sys.argv) > 2 else AatConfig().gate
    exports = {json.dumps(s["inputs"], sort_keys=True): p.parent for p in (cache / "export").glob("*/stage.json") for s in [json.loads(p.read_text())]}
    data = max((cache / "data").iterdir(), key=lambda d: d.stat().st_mtime)
    split = sys.argv[3] if len(sys.argv) > 3 else None  # another held-out split of the bench's corpus (synth/test_seen: its espeak-ng split)
    corpus = PreparedData(DataSource("fsdd", ""), data, {}, {s: data / f"{s}.jsonl" for s in ("test_seen", "test_unseen", "synth/test_seen", "synth/test_unseen")})
    ck_dir = next((cache / "aat").glob("*/checkpoint"))
    cfg = replace(ModelCheckpoint.load(ck_dir).config.aat, gate=rule)
    rows = []
    for p in (cache / "aat_gate").glob("*/stage.json"):
        inputs = json.loads(p.read_text())["inputs"]
        ptq, aat = ((exports[json.dumps(inputs[k], sort_keys=True)], {"key": inputs[k]}) for k in ("ptq", "aat"))
        rows.append((inputs["ptq"]["tier"], stage_aat_gate(StageCache(Path(sys.argv[1]) / "regate"), ptq, aat, ck_dir, corpus,
                                                           replace(cfg, gate_split=split or inputs["split"]))))
    for tier, gate in sorted(rows, key=lambda r: r[0]):
        print(json.dumps({"tier": tier, **gate}), flush=True)


if __name__ == "__main__":
    main()

"""What the `gap` gate and rule B (AAT at the sparsest tier, `gap` elsewhere) ship on every benched checkpoint, from
the benches' quant.csv files.

    python reports/quant/gate_record.py [BENCH_DIR...]   # default: the 13 checkpoints benched in sessions 20-25

Per checkpoint: the sparsest tier's float / PTQ / AAT WER, what each rule ships there, and shipped − the checkpoint's
own PTQ (what `build` ships without --aat). At the other tiers both rules ship what the gate chose. Then the totals
the session-26 registration quotes (reports/quant/README.md).
"""
import csv
import sys
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT = [f"{s}/seed{n}" for s, seeds in (("eigen", (1234, 2, 3, 4)), ("cmn", (1234, 2, 3)), ("s22", (1234, 2, 3)), ("s25", (1234, 2, 3)))
           for n in seeds]


def main() -> None:
    dirs = sys.argv[1:] or [str(HERE / d) for d in DEFAULT]
    totals = {"gap": [], "B": []}
    closed = {"gap": 0, "B": 0}
    with_gap = 0
    print("| checkpoint | tier | control float / PTQ / AAT | trained PTQ | gap ships | B ships | gap: shipped - PTQ | B: shipped - PTQ |")
    print("| --- | ---: | --- | ---: | :---: | :---: | ---: | ---: |")
    for d in dirs:
        rows = list(csv.DictReader(open(Path(d) / "quant.csv")))
        r = max(rows, key=lambda r: int(r["tier"]))
        f = {k: float(r[k]) for k in ("wer_ft_float", "wer_ft_ptq", "wer_aat", "wer_ptq")}
        gap_delta = (f["wer_aat"] if r["shipped"] == "aat" else f["wer_ptq"]) - f["wer_ptq"]
        b_delta = f["wer_aat"] - f["wer_ptq"]
        totals["gap"].append(gap_delta)
        totals["B"].append(b_delta)
        ptq_gap = f["wer_ft_ptq"] - f["wer_ft_float"]
        if ptq_gap > 0:
            with_gap += 1
            shipped_gap = float(r["shipped_gap_closed"]) if r["shipped_gap_closed"] else None
            closed["gap"] += shipped_gap is not None and shipped_gap >= 0.5
            closed["B"] += float(r["gap_closed"]) >= 0.5
        name = str(Path(d).relative_to(HERE)) if Path(d).is_relative_to(HERE) else d
        print(f"| {name} | {r['tier']} | {100 * f['wer_ft_float']:.1f} / {100 * f['wer_ft_ptq']:.1f} / {100 * f['wer_aat']:.1f} | "
              f"{100 * f['wer_ptq']:.1f} | {r['shipped'].upper()} | AAT | {100 * gap_delta:+.1f} | {100 * b_delta:+.1f} |")
    n = len(dirs)
    for rule in ("gap", "B"):
        t = totals[rule]
        print(f"{rule}: mean shipped - PTQ at the sparsest tier {100 * sum(t) / n:+.1f} points over {n} checkpoints; "
              f"worse by more than 1 point on {sum(x > 0.01 for x in t)}; gap closed >= 50% on {closed[rule]} of the {with_gap} with a gap")


if __name__ == "__main__":
    main()

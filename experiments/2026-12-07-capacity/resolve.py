"""Write `models/tiny` fully resolved (every field, no `extends`) with the given overrides, as a candidate config.

python experiments/2026-12-07-capacity/resolve.py NAME "DESCRIPTION" section.field=value ... > candidate.toml
"""

import json
import sys

from pipeline.config import load_model_config
from pipeline.tomlconf import to_dict


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def emit(d, prefix=""):
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in d.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix else []
    lines += [f"{k} = {toml_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        lines += [""] + emit(v, f"{prefix}.{k}" if prefix else k)
    return lines


name, description, *overrides = sys.argv[1:]
d = to_dict(load_model_config("tiny"))
d["name"], d["description"] = name, description
for o in overrides:
    path, value = o.split("=", 1)
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[leaf] = json.loads(value)
print(f"# models/tiny fully resolved (no extends) with {', '.join(overrides)}")
print("\n".join(emit(d)))

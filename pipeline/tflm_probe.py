"""Child process for arena probing: `python -m pipeline.tflm_probe MODEL ARENA_BYTES`.

Exit 0 if TFLM allocates and invokes MODEL in ARENA_BYTES, 1 if not. TFLM can crash
the process outright on tiny arenas, which is why probes never run in the parent.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # TFLM reports each failed allocation on stderr
    from tflite_micro.python.tflite_micro import runtime

    try:
        it = runtime.Interpreter.from_file(argv[0], arena_size=int(argv[1]))
        it.invoke()
    except RuntimeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Child process of `synth.synthesize_recordings`: `python -m pipeline.synth_worker JOBS.json OUT.npz`.

Synthesizes the jobs of JOBS.json and writes their audio to OUT.npz (`synth.run_worker`). It imports only the
synthesizers and NumPy (never TensorFlow, beside which SVOX Pico crashes).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .synth import run_worker

if __name__ == "__main__":
    run_worker(Path(sys.argv[1]), Path(sys.argv[2]))

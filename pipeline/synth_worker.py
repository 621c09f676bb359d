"""Child process of `synth.synthesize_recordings`: `python -m pipeline.synth_worker JOBS OUT`.

Reads (engine, jobs) pickled in JOBS, synthesizes every job with `synth._say_all` and pickles the audio to OUT. It
imports only the synthesizer and NumPy (never TensorFlow, beside which SVOX Pico crashes).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from .synth import _say_all


def main(jobs_file: str, out_file: str) -> None:
    engine, jobs = pickle.loads(Path(jobs_file).read_bytes())
    audio = _say_all(engine, jobs)
    tmp = Path(out_file + ".partial")
    tmp.write_bytes(pickle.dumps(audio, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.rename(out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

import subprocess
import sys

import pipeline


def test_every_public_name_resolves():
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, pipeline, pipeline.tflm_probe; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"

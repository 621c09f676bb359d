import subprocess
import sys

# tensorflow/tensorflow#117700's reproduction: with TF 2.21's oneDNN kernels on an AVX-512 CPU this broadcast matmul
# corrupts the heap (free(): invalid size, abort); the pipeline's AAT steps died the same way
BROADCAST_MATMUL = """
import pipeline
from pipeline._tf import tf
tf.random.set_seed(280958)
for _ in range(200):
    out = tf.linalg.matmul(tf.random.normal([13, 1, 3, 4]), tf.random.normal([4, 16]))
print(out.shape)
"""


def test_importing_the_package_turns_tensorflows_onednn_kernels_off():
    from tensorflow.python.util import _pywrap_util_port

    import pipeline  # noqa: F401
    from pipeline._tf import tf  # noqa: F401

    assert not _pywrap_util_port.IsMklEnabled()


def test_rank4_broadcast_matmul_does_not_corrupt_the_heap():
    proc = subprocess.run([sys.executable, "-c", BROADCAST_MATMUL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "(13, 1, 3, 16)" in proc.stdout, proc.stderr[-2000:]

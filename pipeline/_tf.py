"""Import TensorFlow with Keras 2 (tf-keras): TFMOT needs it. Import tf/keras from here only (the environment
TensorFlow reads at import is set in pipeline/__init__.py, which runs first)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]

"""Commands import TensorFlow without Keras (`lean_import`); Keras still works afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

PROBE = """
import sys
from gpt2easy import cli
cli.quiet_tensorflow(freeze={freeze})
print("during", "keras" in sys.modules, "optree" in sys.modules)
import tensorflow as tf
assert tf.keras.layers.Dense(2)(tf.ones([1, 3])).shape == (1, 2)  # Keras imports on first use
print("after", "keras" in sys.modules)
"""


def probe(freeze: bool) -> list[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", PROBE.format(freeze=freeze)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("\n")


def test_commands_import_tensorflow_without_keras_and_keras_still_works():
    assert probe(freeze=True)[:2] == ["during False False", "after True"]


def test_the_python_api_leaves_tensorflows_own_keras_import_alone():
    assert probe(freeze=False)[:2] == ["during True True", "after True"]


def test_without_refuses_only_inside_the_block_and_keeps_the_location_findable():
    code = """
import importlib.util, sys
from gpt2easy import lean_import
with lean_import.without("wave"):
    origin = importlib.util.find_spec("wave").origin
    try:
        import wave
    except ImportError:
        print("refused")
print(origin == importlib.util.find_spec("wave").origin, "wave" in sys.modules)
import wave
print(wave.__name__)
"""
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split("\n")[:3] == ["refused", "True False", "wave"], out.stderr

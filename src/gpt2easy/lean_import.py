"""Import TensorFlow without Keras, in our commands' own processes.

`import tensorflow` ends by importing all of Keras 3 (`keras.src.optimizers`, which pulls in every
layer, loss and metric, plus optree and h5py), only so that Keras' optimizers register themselves
for loading Keras SavedModels; it ignores an ImportError there. gpt2easy never uses Keras, and that
import is about 0.1 s of every launch (measured on 2 cores, 2026-12-04: `import tensorflow` median
1.82 -> 1.72 s over 8 alternating launches). `without("keras")` makes Keras unimportable for the
duration of a `with` block and leaves it as it was afterwards: `tf.keras` and `import keras` work
later as usual (they import it then). Its location stays findable during the block, because
TensorFlow reads it to set up `tf.keras`'s module path.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys


class _Refused(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not imported while TensorFlow is (gpt2easy never uses it)")

    def exec_module(self, module) -> None:  # never reached: create_module raises
        raise ImportError(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        real = importlib.machinery.PathFinder.find_spec(name, path)
        if real is None:
            return None
        return importlib.machinery.ModuleSpec(name, _Refused(), origin=real.origin)


@contextlib.contextmanager
def without(*names: str):
    """Top-level packages `names` (not yet imported) fail to import inside the block."""
    finder = _Finder(tuple(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)

"""gpt2easy: fine-tune GPT-2 on your own text and generate from it, on TensorFlow 2.

Modules that never import TensorFlow (so `encode.py` starts fast): `errors`, `hparams`, `files`,
`folders`, `encoder`, `dataset`, `cli`. The TensorFlow side: `model`, `checkpoint`, `sample`, `train`.
"""

__version__ = "0.1.0"

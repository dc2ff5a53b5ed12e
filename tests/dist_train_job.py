"""Runs the real trainer (`gpt2easy.trainer.train`) in its own process for
tests/test_distribute_trainer.py: `--logical_cpus 2` first splits the CPU into two logical devices
(this must happen before TensorFlow starts, hence a process of its own). The training settings come
as one JSON object; the summary is written to --out as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--logical_cpus", type=int, default=1)
    p.add_argument("--config", required=True, help="TrainConfig fields as JSON")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import tensorflow as tf

    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    import logging

    from gpt2easy.errors import UserError
    from gpt2easy.trainer import TrainConfig, train

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        summary = train(TrainConfig(**json.loads(args.config)))
    except UserError as e:
        summary = {"error": str(e)}
    Path(args.out).write_text(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate samples from nothing (each starts after <|endoftext|>), streaming them to the terminal.

    python generate_unconditional_samples.py --top_k 40                  # forever, Ctrl+C to stop
    python generate_unconditional_samples.py --nsamples 10 --output samples.txt --run_name run1
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(
    str, "model_name", "models_dir", "run_name", "checkpoint", "precision", "output"
)
def sample_model(
    model_name: str = "124M",
    models_dir: str = DEFAULT_MODELS_DIR,
    run_name: str | None = None,
    checkpoint: str | None = None,
    seed: int | None = None,
    nsamples: int = 0,
    batch_size: int = 1,
    length: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop=None,
    stop_at_endoftext: bool = True,
    precision: str = "fp32",
    output: str | None = None,
    verbose: bool = False,
) -> None:
    """Print samples under `==== SAMPLE n ====` banners: NSAMPLES of them, or forever.

    Args:
        model_name: model folder under models_dir (124M, 355M, 774M, 1558M, or your own).
        models_dir: folder holding one folder per model.
        run_name: sample from the newest checkpoint of training run checkpoint/RUN_NAME.
        checkpoint: sample from this checkpoint folder or prefix (e.g. checkpoint/run1/model-500);
            wins over run_name and model_name.
        seed: seed of the random draws; the same seed and flags give the same samples.
            Default: a random seed (shown with --verbose).
        nsamples: number of samples, a multiple of batch_size; 0 = forever (until Ctrl+C).
        batch_size: samples generated together (faster per sample, uses more memory).
        length: tokens per sample; default n_ctx (1024).
        temperature: divides the logits; below 1 is more predictable, 0 is greedy (argmax).
        top_k: sample among the k most likely tokens only; 0 = no limit.
        top_p: sample among the most likely tokens whose mass reaches p (nucleus, including the
            token that crosses p); 0 or 1 = off. With top_k too, top-k applies first.
        repetition_penalty: CTRL's penalty on tokens already in the sample; 1 = off.
        stop: a string, or a list like '["\\n\\n", "THE END"]': a sample ends just before it.
        stop_at_endoftext: end a sample at <|endoftext|> (not shown); off: keep generating and
            show it, as the classic script did.
        precision: fp32 (exactly the reference model) or bf16 (about 1.7x faster here).
        output: also write the samples (complete ones only, with their banners) to this file.
        verbose: more logging.
    """
    del verbose  # read by cli.run to set the log level
    from gpt2easy.sample import check_flags, parse_stops

    check_flags(nsamples=nsamples, batch_size=batch_size, length=length, temperature=temperature,
                top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                precision=precision, seed=seed, forever_ok=True)  # fmt: skip
    stops = parse_stops(stop)
    cli.quiet_tensorflow()
    from gpt2easy.files import atomic_write_text
    from gpt2easy.sample import ENDOFTEXT, banner, load, settings_from_flags, stream_samples

    generator, encoder, hp = load(models_dir, model_name, run_name, checkpoint, precision)
    settings = settings_from_flags(
        hp.n_ctx, hp.n_ctx, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, stops=stops, stop_at_endoftext=stop_at_endoftext,
        seed=seed)  # fmt: skip
    batch_size, nsamples = int(batch_size), int(nsamples)
    done: list[str] = []
    try:
        b = 0
        while nsamples == 0 or len(done) < nsamples:
            texts = stream_samples(generator, encoder, [ENDOFTEXT], batch_size, settings, b,
                                   len(done) + 1, sys.stdout)  # fmt: skip
            done += texts
            b += 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        if output is not None and done:
            lines = [f"{banner(i + 1)}\n{text}\n" for i, text in enumerate(done)]
            atomic_write_text(output, "".join(lines))
    where = f" to {output}" if output is not None else ""
    print(f"wrote {len(done)} sample{'s' * (len(done) != 1)}{where}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(sample_model)

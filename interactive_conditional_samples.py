#!/usr/bin/env python3
"""Continue the user's text with GPT-2, streaming the samples to the terminal.

    python interactive_conditional_samples.py --temperature 0.8 --top_k 20 --model_name 124M
    python interactive_conditional_samples.py --run_name run1            # newest checkpoint of a run
    echo "Once upon a time" | python interactive_conditional_samples.py --seed 1 --length 50
    python interactive_conditional_samples.py --prompts_file prompts.txt --output out.jsonl --batch_size 8
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402

PROMPT = "Model prompt >>> "


def read_prompt() -> str | None:
    """The next prompt: `Model prompt >>> ` on a terminal, one line per prompt from a pipe.
    None at end of input."""
    try:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return input(PROMPT)
        if sys.stdin.isatty():
            print(PROMPT, end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None
    except EOFError:
        return None


@fire.decorators.SetParseFn(str, "model_name", "models_dir", "run_name", "checkpoint", "precision",
                              "prompts_file", "output")
def interact_model(
    model_name: str = "124M",
    models_dir: str = DEFAULT_MODELS_DIR,
    run_name: str | None = None,
    checkpoint: str | None = None,
    seed: int | None = None,
    nsamples: int = 1,
    batch_size: int = 1,
    length: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop=None,
    stop_at_endoftext: bool = True,
    precision: str = "fp32",
    verbose: bool = False,
    prompts_file: str | None = None,
    output: str | None = None,
) -> None:
    """Ask for a prompt, print NSAMPLES continuations under `==== SAMPLE n ====` banners, repeat.

    Args:
        model_name: model folder under models_dir (124M, 355M, 774M, 1558M, or your own).
        models_dir: folder holding one folder per model.
        run_name: sample from the newest checkpoint of training run checkpoint/RUN_NAME.
        checkpoint: sample from this checkpoint folder or prefix (e.g. checkpoint/run1/model-500);
            wins over run_name and model_name.
        seed: seed of the random draws; the same seed and flags give the same text every time.
            Default: a random seed (shown with --verbose).
        nsamples: samples per prompt; a multiple of batch_size.
        batch_size: samples generated together (faster per sample, uses more memory).
        length: new tokens per sample; default n_ctx // 2 (512). A prompt too long to leave room
            keeps its last n_ctx + 1 - length tokens (with a warning).
        temperature: divides the logits; below 1 is more predictable, 0 is greedy (argmax).
        top_k: sample among the k most likely tokens only; 0 = no limit.
        top_p: sample among the most likely tokens whose mass reaches p (nucleus, including the
            token that crosses p); 0 or 1 = off. With top_k too, top-k applies first.
        repetition_penalty: CTRL's penalty on tokens already in the prompt or the sample
            (1.2 is a common choice); 1 = off.
        stop: a string, or a list like '["\\n\\n", "THE END"]': a sample ends just before it.
        stop_at_endoftext: end a sample at <|endoftext|> (not shown); off: keep generating and
            show it, as the classic script did.
        precision: fp32 (exactly the reference model) or bf16 (about 1.7x faster here).
        verbose: more logging.
        prompts_file: answer the prompts of this file (one per line, or .jsonl with a "prompt"
            field) in batches of batch_size (prompts side by side), then exit.
        output: with prompts_file: one JSON line per sample (line, prompt, index, text, tokens,
            seed), written atomically; a rerun with the same output skips prompts already in it.
    """
    del verbose  # read by cli.run to set the log level
    from gpt2easy.bulk import check_bulk_flags
    from gpt2easy.sample import check_flags, parse_stops

    check_bulk_flags(prompts_file, output, batch_size)
    check_flags(nsamples=nsamples, batch_size=1 if prompts_file else batch_size, length=length,
                temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                precision=precision, seed=seed)  # fmt: skip
    stops = parse_stops(stop)
    cli.quiet_tensorflow()
    from gpt2easy.sample import fit_prompt, load, settings_from_flags, stream_samples

    generator, encoder, hp = load(models_dir, model_name, run_name, checkpoint, precision)
    settings = settings_from_flags(
        hp.n_ctx, hp.n_ctx // 2, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, stops=stops, stop_at_endoftext=stop_at_endoftext,
        seed=seed)  # fmt: skip
    if prompts_file is not None:
        from gpt2easy.bulk import run_prompts_file

        run_prompts_file(generator, encoder, prompts_file, output, settings, int(batch_size),
                         int(nsamples), seed is not None, sys.stdout)  # fmt: skip
        return
    while True:
        text = read_prompt()
        if text is None:
            if sys.stdin.isatty():
                print(file=sys.stderr)
            return
        if not text.strip():
            if sys.stdin.isatty():
                print("Prompt should not be empty!", file=sys.stderr)
            continue
        ids = fit_prompt(encoder.encode(text), settings.length, hp.n_ctx)
        for b in range(int(nsamples) // int(batch_size)):
            stream_samples(generator, encoder, ids, int(batch_size), settings, b,
                           b * int(batch_size) + 1, sys.stdout)  # fmt: skip
        print("=" * 80, flush=True)


if __name__ == "__main__":
    cli.run(interact_model)

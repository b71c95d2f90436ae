"""What the generation task's inputs cost on this machine: the Austen corpus and its split in SmolLM2 tokens,
the base checkpoint's conversion and load time and memory, its held-out perplexity (fp32 vs bf16
autocast), seconds per training step, and greedy decoding speed with and without the KV cache.

One thing at a time, each bounded; steps and generations are warmed once before timing. Conversion is only
timed when the checkpoint is not cached yet (delete `<cache>/extracted/smollm2-135m-hf` to re-time). On a
shared machine pass `--threads` no larger than the idle cores: oversubscribed OpenMP threads spin (2 threads
on 2 busy cores ran a forward pass 4× slower than 1 thread).

    python -m bench.generation_base [--cache-dir .cache] [--threads 1] [--blocks 30] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from training.generation.base import checkpoint_dir, ensure_base_checkpoint, is_complete, load_base
from training.generation.data import load_austen
from training.generation.split import chunk_token_ids, split_documents, token_stream


def rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux /proc; elsewhere the peak so far)."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * resource.getpagesize() / 2**20
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def perplexity(model: torch.nn.Module, blocks: torch.Tensor, autocast: bool) -> tuple[float, float]:
    """(perplexity over `blocks` [n, L] one block at a time, seconds taken)."""
    started, total, count = time.perf_counter(), 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for block in blocks:
            loss = model(block[None], labels=block[None]).loss.float()
            total += loss.item() * (block.numel() - 1)
            count += block.numel() - 1
    return float(torch.tensor(total / count).exp()), time.perf_counter() - started


def seconds_per_step(model: torch.nn.Module, blocks: torch.Tensor, batch: int, length: int, steps: int) -> float:
    """Mean seconds of forward+backward+AdamW step at [batch, length] under bf16 autocast (after 1 warm-up)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    data = blocks[:, :length]
    times = []
    for step in range(steps + 1):
        ids = data[(step * batch) % len(data):][:batch]
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # step 0 warms the kernels and allocates AdamW state
            times.append(time.perf_counter() - started)
    model.eval()
    return sum(times) / len(times)


def generate_tokens_per_second(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, use_cache: bool,
                               pad_id: int) -> float:
    """Greedy new tokens per second for one prompt (second of two identical runs)."""
    rate = 0.0
    for _ in range(2):
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 use_cache=use_cache, pad_token_id=pad_id)
        rate = (out.shape[1] - prompt.shape[1]) / (time.perf_counter() - started)
    return rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation_base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--blocks", type=int, default=30, help="held-out blocks of 256 tokens for perplexity")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per shape")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    cached = is_complete(checkpoint_dir(args.cache_dir))
    started = time.perf_counter()
    ensure_base_checkpoint(args.cache_dir)
    label = "already cached (not re-timed)" if cached else "converted"
    print(f"base checkpoint: {label} in {time.perf_counter() - started:.1f} s")

    rss_before = rss_mib()
    started = time.perf_counter()
    model, tokenizer = load_base(args.cache_dir, torch.float32)
    params = sum(p.numel() for p in model.parameters())
    print(f"load cached checkpoint (fp32): {time.perf_counter() - started:.2f} s; RSS {rss_before:.0f} → "
          f"{rss_mib():.0f} MiB (+{rss_mib() - rss_before:.0f}); {params / 1e6:.1f} M params")

    corpus = load_austen(args.cache_dir)
    split = split_documents(corpus.documents, 0.05, 0.05, seed=args.seed)
    started = time.perf_counter()
    tokens = split.token_counts(lambda text: tokenizer(text, add_special_tokens=False).input_ids)
    chars = split.chars()
    print(f"Austen: {corpus.chars():,} chars in {len(corpus.documents)} novels; tokenised in "
          f"{time.perf_counter() - started:.1f} s")
    for name in chars:
        print(f"  {name:10} {chars[name]:>10,} chars {tokens[name]:>10,} tokens  "
              f"({chars[name] / max(tokens[name], 1):.2f} chars/token)")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    held_out = chunk_token_ids(token_stream(split.segments["test"], encode, eos), 256)
    blocks = held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(args.seed))[: args.blocks]]

    ppl32, s32 = perplexity(model, blocks, autocast=False)
    print(f"RSS after loading and the fp32 forward passes: {rss_mib():.0f} MiB (weights are mmapped until touched)")
    ppl16, s16 = perplexity(model, blocks, autocast=True)
    print(f"perplexity on {len(blocks)} held-out test blocks × 256: "
          f"fp32 {ppl32:.2f} ({s32 / len(blocks):.2f} s/block), "
          f"bf16 autocast {ppl16:.2f} ({s16 / len(blocks):.2f} s/block); ratio bf16/fp32 {ppl16 / ppl32:.3f}, "
          f"speed-up {s32 / s16:.2f}×")

    train = chunk_token_ids(token_stream(split.segments["train"][:4], encode, eos), 256)
    step_8x256 = seconds_per_step(model, train, 8, 256, args.steps)
    step_4x128 = seconds_per_step(model, train, 4, 128, args.steps)
    print(f"training step (fwd+bwd+AdamW, bf16 autocast): 8×256 {step_8x256:.2f} s ({8 * 256 / step_8x256:.0f} tok/s), "
          f"4×128 {step_4x128:.2f} s ({4 * 128 / step_4x128:.0f} tok/s); ratio {step_8x256 / step_4x128:.2f}; "
          f"RSS {rss_mib():.0f} MiB, peak {peak_rss_mib():.0f} MiB")

    model, _ = load_base(args.cache_dir, torch.float32)  # fresh weights: the steps above changed them
    prompt = blocks[0][None, :32]
    cached_rate = generate_tokens_per_second(model, prompt, args.new_tokens, True, tokenizer.pad_token_id)
    uncached_rate = generate_tokens_per_second(model, prompt, args.new_tokens, False, tokenizer.pad_token_id)
    print(f"greedy generate, 32-token prompt + {args.new_tokens} new (fp32): use_cache {cached_rate:.1f} tok/s, "
          f"no cache {uncached_rate:.1f} tok/s; ratio {cached_rate / uncached_rate:.2f}×")


if __name__ == "__main__":
    main()

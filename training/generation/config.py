"""The generation job's config: corpus, starting model, dropout placement, MC settings and what the evaluation
chooses on validation (last-k, τ, the abstain rule's target). Presets live in training/generation/job.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from training.core.config import TrainConfig, validate_files
from training.generation.data import TextFiles


@dataclass
class GenerationConfig(TrainConfig):
    """Fine-tune a causal LM with added dropout and report its MC-dropout uncertainty."""

    data: str = field(default="austen", metadata={
        "help": "corpus; file: your --train-file (and --validation-file, --test-file)",
        "choices": ("austen", "shakespeare", "bible", "synthetic", "file")})
    train_file: str | None = field(default=None, metadata={
        "help": "file: UTF-8 prose, .txt (the whole file is ONE document, blank lines separate its paragraphs; "
                "validation and test are one paragraph-aligned block of it) or .jsonl (one document per line under "
                "--text-key; whole documents are held out)"})
    validation_file: str | None = field(default=None, metadata={"help": "file: validation text (.txt or .jsonl)"})
    test_file: str | None = field(default=None, metadata={"help": "file: test text, read once for the report"})
    text_key: str = field(default="text", metadata={"help": "file: the JSONL key holding a document's text"})
    model: str = field(default="smollm2", metadata={"help": "starting model", "choices": ("smollm2", "tiny")})
    block_size: int = field(default=128, metadata={"help": "tokens per training block"})
    validation_fraction: float = field(default=0.05, metadata={
        "help": "held-out share per document (validation; a .jsonl file: share of its documents)"})
    test_fraction: float = field(default=0.05, metadata={
        "help": "held-out share per document (test; a .jsonl file: share of its documents)"})
    split_seed: int = field(default=1234, metadata={"help": "seed of held-out spans, subsets and probes"})
    eval_blocks: int = field(default=24, metadata={"help": "validation blocks for periodic validation"})
    calibration_prompts: int = field(default=100, metadata={
        "help": "validation blocks (not in periodic validation) whose prompt windows choose last-k, τ and the rule"})
    test_blocks: int = field(default=48, metadata={"help": "test blocks for perplexity before/after"})
    test_prompts: int = field(default=100, metadata={"help": "test blocks (not in test_blocks) for the prompt report"})
    prompt_tokens: int | None = field(default=None, metadata={"help": "prompt window (none: block_size / 4)"})
    continuation_tokens: int | None = field(default=None, metadata={
        "help": "true continuation after each prompt, and max_new_tokens of its decode (none: block_size / 4)"})
    target_risk: float = field(default=0.55, metadata={
        "help": "abstain rule: largest mean token error rate of the true continuations of the kept prompts"})
    last_k_tolerance: float = field(default=0.02, metadata={
        "help": "choose the smallest last-k whose best validation PRR is within this of the best one's"})
    token_eval_blocks: int = field(default=12, metadata={"help": "test blocks for the token-uncertainty AUROC"})
    probes_per_kind: int = field(default=40, metadata={"help": "sentences per kind (in-domain, bible, news, shuffled)"})
    attention_dropout: float | None = field(default=None,
                                            metadata={"help": "attention-probability dropout; none = dropout"})
    dropout_layers: int | None = field(default=None, metadata={"help": "top layers that get dropout (none: all)"})
    train_layers: int | None = field(default=None, metadata={"help": "top layers that are trained (none: all)"})
    mc_samples: int = field(default=10, metadata={"help": "T: MC samples at serving and evaluation"})
    mc_last_k: int | None = field(default=None, metadata={
        "help": "stochastic top layers at MC time (none: chosen on validation among compare_last_k and all "
                "layers with dropout)"})
    compare_last_k: tuple[int, ...] = field(default=(), metadata={
        "help": "last-k candidates scored on validation besides all layers with dropout"})
    max_input_tokens: int = field(default=512, metadata={"help": "prompt token limit at serving"})
    max_new_tokens: int = field(default=256, metadata={"help": "cap on generated tokens at serving"})
    default_max_new_tokens: int = field(default=64, metadata={"help": "generated tokens when a request gives none"})
    eval_batch_size: int = field(default=8, metadata={"help": "blocks/sentences per evaluation batch"})
    eval_dtype: str = field(default="auto", metadata={"help": "float32|bfloat16|auto (as the service resolves it)"})
    device: str = field(default="auto", metadata={"help": "cpu|cuda|auto"})
    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {"test_blocks", "token_eval_blocks", "probes_per_kind", "mc_samples", "mc_last_k", "compare_last_k",
         "max_input_tokens", "max_new_tokens", "default_max_new_tokens", "eval_batch_size", "eval_dtype", "device",
         "calibration_prompts", "test_prompts", "prompt_tokens", "continuation_tokens", "target_risk",
         "last_k_tolerance"})

    def validate(self) -> None:
        super().validate()
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2 for MC uncertainty, got {self.mc_samples}")
        if self.block_size < 8:
            raise ValueError(f"block_size must be >= 8, got {self.block_size}")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("default_max_new_tokens must not exceed max_new_tokens")
        if not 0.0 < self.target_risk < 1.0:
            raise ValueError(f"target_risk must be in (0, 1), got {self.target_risk}")
        if self.windows[0] + self.windows[1] > self.block_size:
            raise ValueError("prompt_tokens + continuation_tokens must fit block_size")
        for name in ("dropout_layers", "train_layers", "mc_last_k", "prompt_tokens", "continuation_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or none")
        validate_files(self)

    def text_files(self) -> TextFiles:
        """The `--data file` inputs (validate() made sure train_file is set)."""
        optional = lambda name: Path(name) if name else None  # noqa: E731
        return TextFiles(Path(str(self.train_file)), optional(self.validation_file), optional(self.test_file),
                         self.text_key, self.validation_fraction, self.test_fraction, self.split_seed)

    @property
    def windows(self) -> tuple[int, int]:
        """(prompt tokens, continuation tokens) of the evaluation's prompt windows."""
        return self.prompt_tokens or self.block_size // 4, self.continuation_tokens or self.block_size // 4

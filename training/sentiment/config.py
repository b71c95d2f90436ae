"""The sentiment job's config: `SentimentConfig` (every field, with its help text) and the presets.

Every preset is defined by its work (examples, steps, subset sizes), never by the clock, so it trains and
evaluates the same on any machine (training.core.config for the precedence and the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.core.dropout import validate_sites
from training.core.confidence_maps import CRITERIA, MAP_KINDS
from training.core.config import TrainConfig, validate_files
from training.sentiment.data import LabelledFiles, SubsetSizes


@dataclass
class SentimentConfig(TrainConfig):
    """Fine-tune a BERT classifier for review sentiment, then measure and calibrate its MC-dropout uncertainty."""

    data: str = field(default="imdb", metadata={"help": "dataset; file: your --train-file (and --validation-file, "
                                                        "--test-file)", "choices": ("imdb", "synthetic", "file")})
    train_file: str | None = field(default=None, metadata={
        "help": "file: labelled examples, .csv, .tsv (first line names the columns) or .jsonl (one object per line); "
                "any number of labels, named by the data. Splits not given are held out of it, stratified"})
    validation_file: str | None = field(default=None, metadata={"help": "file: validation examples (same format)"})
    test_file: str | None = field(default=None, metadata={"help": "file: test examples, read once for the report"})
    text_column: str = field(default="text", metadata={"help": "file: the column (JSONL: key) holding the text"})
    label_column: str = field(default="label", metadata={"help": "file: the column (JSONL: key) holding the label"})
    validation_fraction: float = field(default=0.2, metadata={
        "help": "file: share of each label held out of --train-file for validation when no --validation-file"})
    test_fraction: float = field(default=0.2, metadata={
        "help": "file: share of each label held out of --train-file for test when no --test-file"})
    model: str = field(default="minilm", metadata={"help": "encoder", "choices": ("minilm", "tiny")})
    split_seed: int = field(default=1234, metadata={"help": "seed of the train/validation/test split"})
    validation_size: int = field(default=5000, metadata={"help": "validation split size"})
    test_size: int = field(default=5000, metadata={"help": "test split size (kept untouched)"})
    train_size: int | None = field(default=None, metadata={"help": "synthetic: training examples (imdb: the rest)"})
    train_limit: int | None = field(default=None, metadata={"help": "use this many training examples (none: all)"})
    eval_subset: int | None = field(
        default=400, metadata={"help": "validation part for periodic validation: early stopping, best weights"})
    selection_size: int | None = field(
        default=1000, metadata={"help": "validation part for choosing last-k and the abstain measure/threshold"})
    selection_modes_limit: int | None = field(
        default=None, metadata={"help": "reviews of the selection part where every MC mode runs (none: all)"})
    calibration_size: int | None = field(
        default=None, metadata={"help": "validation part for τ and the confidence map (none: the rest)"})
    calibration_maps: tuple[str, ...] = field(
        default=MAP_KINDS, metadata={"help": f"confidence maps cross-validated after τ: {', '.join(MAP_KINDS)}"})
    calibration_folds: int = field(default=5, metadata={"help": "cross-validation folds of the map choice"})
    calibration_criterion: str = field(default="ece", metadata={"help": "what the map choice minimises",
                                                                "choices": CRITERIA})
    histogram_bins: int = field(default=15, metadata={"help": "equal-mass bins of the histogram map"})
    test_limit: int | None = field(
        default=None, metadata={"help": "test reviews (nested in the headline set) where every MC mode runs"})
    headline_test_limit: int | None = field(
        default=None, metadata={"help": "test reviews for the deterministic and serving modes (none: all)"})
    max_length: int = field(default=256, metadata={"help": "tokens per review incl. [CLS]/[SEP] (head+tail)"})
    head_tokens: int = field(default=64, metadata={"help": "tokens kept from the start of a long review"})
    tiny_vocab_size: int = field(default=600, metadata={"help": "tiny: WordPiece vocabulary size"})
    tiny_hidden: int = field(default=32, metadata={"help": "tiny: hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "tiny: encoder layers"})
    tiny_heads: int = field(default=2, metadata={"help": "tiny: attention heads"})
    select_metric: str = field(default="nll", metadata={"help": "validation metric for best weights",
                                                        "choices": ("nll", "accuracy")})
    mc_samples: int = field(default=20, metadata={"help": "T: MC samples at serving, calibration and evaluation"})
    mc_last_k_candidates: tuple[int, ...] = field(default=(1, 2),
                                                  metadata={"help": "last-k modes compared with full MC"})
    mc_last_k_tolerance: float = field(default=0.01, metadata={"help": "AUROC a last-k mode may lose vs full MC"})
    mc_sites: tuple[str, ...] = field(default=("hidden", "head"), metadata={"help": "dropouts live at MC time"})
    attention_dropout: float | None = field(
        default=None,
        metadata={"help": "attention-probability dropout in training; none = `dropout`. 0 trains ~20 % faster on "
                  "CPU (the fused attention kernel) and matches MC sites that leave attention off"},
    )
    target_risk: float = field(default=0.05, metadata={"help": "selective risk the abstain threshold targets"})
    eval_batch_rows: int = field(default=256, metadata={"help": "rows (items × relative MC cost) per eval batch"})
    eval_dtype: str = field(default="auto", metadata={"help": "float32|bfloat16|auto (as the service resolves it)"})
    device: str = field(default="auto", metadata={"help": "cpu|cuda|auto"})
    # Evaluation-only fields may change when a run is resumed.
    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {"mc_samples", "mc_last_k_candidates", "mc_last_k_tolerance", "mc_sites", "target_risk", "eval_batch_rows",
         "eval_dtype", "test_limit", "headline_test_limit", "calibration_size", "device", "selection_size",
         "selection_modes_limit", "calibration_maps", "calibration_folds", "calibration_criterion", "histogram_bins"}
    )

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.head_tokens <= self.max_length - 2:
            raise ValueError(f"head_tokens must be in [0, max_length - 2], got {self.head_tokens}")
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2 for MC uncertainty, got {self.mc_samples}")
        validate_sites(self.mc_sites)
        if not 0.0 < self.target_risk < 1.0:
            raise ValueError(f"target_risk must be in (0, 1), got {self.target_risk}")
        if [self.eval_subset, self.selection_size, self.calibration_size].count(None) > 1:
            raise ValueError("at most one of eval_subset, selection_size, calibration_size may be none (the rest)")
        if not self.calibration_maps or set(self.calibration_maps) - set(MAP_KINDS):
            raise ValueError(f"calibration_maps must be among {MAP_KINDS}, got {self.calibration_maps}")
        validate_files(self)

    def labelled_files(self) -> LabelledFiles:
        """The `--data file` inputs (validate() made sure train_file is set)."""
        optional = lambda name: Path(name) if name else None  # noqa: E731
        return LabelledFiles(Path(str(self.train_file)), optional(self.validation_file), optional(self.test_file),
                             self.text_column, self.label_column, self.validation_fraction, self.test_fraction,
                             self.split_seed)

    def subset_sizes(self) -> SubsetSizes:
        return SubsetSizes(self.eval_subset, self.selection_size, self.calibration_size, self.selection_modes_limit,
                           self.headline_test_limit, self.test_limit)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": "synthetic", "model": "tiny", "train_size": 400, "validation_size": 300, "test_size": 150,
        "eval_subset": 100, "selection_size": 80, "calibration_folds": 3, "max_length": 48, "head_tokens": 12,
        "epochs": 10, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup_ratio": 0.1,
        "mc_last_k_candidates": (1,), "eval_batch_rows": 512, "eval_dtype": "float32", "progress": False,
        "num_threads": 1,
    },
    "quick": {
        # 6,000 reviews / 16 = 375 steps, whatever the machine (≈1.6–2 s per step at 256 tokens with bf16 on a
        # 2-core CPU). Validation: 400 for early stopping, 1,600 to choose last-k (every mode on 600 of them)
        # and the abstain rule, the other 3,000 for τ and the confidence map. Test: the deterministic and
        # serving modes on all 5,000, every mode on 600 of them (bf16: full MC ≈ 2.5 reviews/s, last-2 ≈ 10/s,
        # last-1 and deterministic ≈ 60/s when the machine is idle).
        "train_limit": 6000, "max_steps": 375, "epochs": 1, "batch_size": 16, "lr": 8e-5, "warmup_ratio": 0.1,
        "bf16": True, "eval_every": 100, "eval_subset": 400, "selection_size": 1600, "selection_modes_limit": 600,
        "test_limit": 600, "attention_dropout": 0.0, "max_length": 256, "head_tokens": 64, "eval_batch_rows": 128,
        "ood": True,
    },
    "full": {
        "epochs": 3, "batch_size": 32, "lr": 5e-5, "warmup_ratio": 0.06, "bf16": True, "eval_every": 500,
        "patience": 3, "eval_subset": 2000, "selection_size": 1500, "max_length": 512, "head_tokens": 128,
        "eval_batch_rows": 2048, "ood": True,
    },
}

"""The translation job's config: data, model sizes, decoding limits, MC settings and what the evaluation
chooses on validation (last-k, τ, the abstain rule's quality target). Presets live in training/translation/job.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from models.core.dropout import validate_sites
from models.translation.model import PRESET_SIZES
from training.core.config import TrainConfig, validate_files
from training.translation.data import PairFiles


@dataclass
class TranslationConfig(TrainConfig):
    """Train a Marian-style English→German transformer from scratch and report its MC-dropout uncertainty."""

    data: str = field(default="bible", metadata={"help": "dataset; file: your --train-file (and --validation-file, "
                                                         "--test-file)", "choices": ("bible", "synthetic", "file")})
    train_file: str | None = field(default=None, metadata={
        "help": "file: sentence pairs, .tsv (source<TAB>target per line; a first line naming the columns is a "
                "header) or .jsonl (one object per line with the source and target keys). Splits not given are "
                "held out of it at random"})
    validation_file: str | None = field(default=None, metadata={"help": "file: validation pairs (same format)"})
    test_file: str | None = field(default=None, metadata={"help": "file: test pairs, read once for the report"})
    source_column: str = field(default="source", metadata={"help": "file: the JSONL key (TSV header) of the source"})
    source_language: str = field(default="en", metadata={"help": "the source language's code, recorded in the "
                                                                 "manifest (bible: en)"})
    target_language: str = field(default="de", metadata={"help": "the target language's code, recorded in the "
                                                                 "manifest (bible: de)"})
    target_column: str = field(default="target", metadata={"help": "file: the JSONL key (TSV header) of the target"})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "file: share of --train-file held out for validation when no --validation-file"})
    test_fraction: float = field(default=0.1, metadata={
        "help": "file: share of --train-file held out for test when no --test-file"})
    model: str = field(default="quick", metadata={"help": "architecture sizes", "choices": tuple(PRESET_SIZES)})
    arch: str = field(default="transformer", metadata={
        "help": "transformer: Marian-style; rnn: bidirectional recurrent encoder, attention decoder, variational "
                "dropout (models/translation/rnn.py); sizes from --model's preset unless the rnn_* fields",
        "choices": ("transformer", "rnn")})
    rnn_cell: str = field(default="gru", metadata={"help": "rnn: recurrent cell", "choices": ("gru", "lstm")})
    rnn_hidden: int | None = field(default=None, metadata={"help": "rnn: hidden size (even; the encoder has half "
                                                                   "per direction; none: the preset's)"})
    rnn_layers: int | None = field(default=None, metadata={"help": "rnn: layers of encoder and of decoder (none: "
                                                                   "the preset's)"})
    rnn_embed: int | None = field(default=None, metadata={"help": "rnn: embedding size, shared by source, target "
                                                                  "and output (none: the preset's)"})
    rnn_recurrent_dropout: float | None = field(default=None, metadata={
        "help": "rnn: variational dropout on the recurrent state; none = dropout"})
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
    token_dropout: float = field(default=0.0, metadata={
        "help": "training: share of source subword tokens replaced by <unk> (token dropout; Sennrich & Zhang 2019's "
                "word dropout per subword), drawn per batch from (seed, epoch, batch)"})
    bpe_dropout: float = field(default=0.0, metadata={
        "help": "training: BPE-dropout (Provilkov et al. 2020), the chance each merge is skipped when a batch's "
                "source and target are segmented afresh; evaluation and serving segment without it. The tokenizer "
                "draws from its own generator, so runs with it are not bit-reproducible"})
    curve_pairs: int = field(default=100, metadata={
        "help": "periodic-validation pairs decoded greedily at each validation for the chrF learning curve (0: off)"})
    max_input_tokens: int = field(default=128, metadata={"help": "source tokens incl. </s> (training cuts, serving "
                                                                 "and evaluation refuse longer)"})
    max_new_tokens: int = field(default=160, metadata={"help": "cap on generated tokens"})
    max_target_tokens: int = field(default=160, metadata={"help": "training: target tokens incl. </s>"})
    num_beams: int = field(default=4, metadata={"help": "beam size of the beam-search evaluation"})
    mc_samples: int = field(default=10, metadata={"help": "T: MC samples at serving and evaluation"})
    mc_last_k: int | None = field(default=None, metadata={
        "help": "stochastic top layers, decoder first, then encoder (none: chosen on validation among "
                "compare_last_k and all layers, the whole model)"})
    mc_sites: tuple[str, ...] = field(default=("hidden",), metadata={"help": "dropouts live at MC time"})
    sampling_samples: int = field(default=5,
                                  metadata={"help": "sampling-mode decodes per input in evaluation (0: off)"})
    sampling_limit: int | None = field(default=48, metadata={"help": "sampling mode: test inputs (and a third as many "
                                                                     "per probe kind) it runs on (none: all)"})
    bad_chrf: float = field(default=20.0, metadata={"help": "a translation with sentence chrF below this is bad"})
    target_risk: float = field(default=0.15, metadata={"help": "abstain rule: largest share of bad translations "
                                                             "among the kept ones (on validation)"})
    compare_last_k: tuple[int, ...] = field(default=(1, 2), metadata={
        "help": "last-k candidates scored on validation besides the whole model (mc_last_k none: the choice)"})
    last_k_tolerance: float = field(default=0.02, metadata={
        "help": "choose the smallest last-k whose best validation PRR is within this of the best one's"})
    calibration_size: int = field(default=300, metadata={
        "help": "validation verses (not in periodic validation) for last-k, τ and the abstain rule"})
    eval_batch_size: int = field(default=32, metadata={"help": "sentences per decoding batch"})
    eval_dtype: str = field(default="auto", metadata={"help": "float32|bfloat16|auto (as the service resolves it)"})
    device: str = field(default="auto", metadata={"help": "cpu|cuda|auto"})
    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {"test_limit", "probes_per_kind", "num_beams", "mc_samples", "mc_last_k", "mc_sites", "sampling_samples",
         "sampling_limit", "bad_chrf", "target_risk", "compare_last_k", "last_k_tolerance", "calibration_size",
         "eval_batch_size", "eval_dtype", "device"})

    def validate(self) -> None:
        super().validate()
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2 for MC uncertainty, got {self.mc_samples}")
        if min(self.max_input_tokens, self.max_new_tokens, self.max_target_tokens) < 2:
            raise ValueError("max_input_tokens, max_new_tokens and max_target_tokens must be >= 2")
        validate_sites(self.mc_sites)
        if self.arch == "rnn" and (self.base_model or set(self.mc_sites) != {"hidden"}):
            raise ValueError("--arch rnn trains from scratch (no --base-model) and has only the hidden MC sites")
        if not (0.0 <= self.token_dropout < 1.0 and 0.0 <= self.bpe_dropout < 1.0) or self.curve_pairs < 0:
            raise ValueError("token_dropout and bpe_dropout must be in [0, 1) and curve_pairs >= 0, got "
                             f"{self.token_dropout}, {self.bpe_dropout}, {self.curve_pairs}")
        if not 0.0 < self.target_risk < 1.0:
            raise ValueError(f"target_risk must be in (0, 1), got {self.target_risk}")
        validate_files(self)
        positions = PRESET_SIZES[self.model].max_positions
        needed = max(self.max_input_tokens, self.max_target_tokens, self.max_new_tokens + 1)
        if self.base_model is None and needed > positions:
            raise ValueError("max_input_tokens/max_target_tokens/max_new_tokens + 1 must fit the model's "
                             f"{positions} positions")  # a --base-model's own positions: checked by the job

    def pair_files(self) -> PairFiles:
        """The `--data file` inputs (validate() made sure train_file is set)."""
        optional = lambda name: Path(name) if name else None  # noqa: E731
        return PairFiles(Path(str(self.train_file)), optional(self.validation_file), optional(self.test_file),
                         self.source_column, self.target_column, self.validation_fraction, self.test_fraction,
                         self.split_seed)

    @property
    def rates(self) -> dict[str, float]:
        """Training dropout per site: hidden (residual), attention (probabilities), activation (FFN)."""
        pick = lambda v: self.dropout if v is None else v  # noqa: E731
        return {"hidden": self.dropout, "attention": pick(self.attention_dropout),
                "activation": pick(self.activation_dropout)}

"""Calibrate a causal LM that already carries dropout without training (`python -m training.calibrate --task
generation`): a Llama checkpoint directory whose config records the dropout a fine-tune with dropout installed
(models/generation/model.py: `residual_dropout`, `attention_dropout`, `dropout_layers`; every generation artifact's
`model/` is one). A checkpoint without any dropout is refused: its MC samples would all agree, so it needs the
fine-tune of `python -m training.generation --base-model PATH` first.

Data: `--data file` reads the user's `--validation-file` (.txt or .jsonl, as the generation job reads prose), the
report's part held out of it unless `--test-file`; a built-in corpus (`--data austen|shakespeare|bible`) is cut into
the same held-out spans as the job that trained on it (training/generation/split.split_documents, same
`--split-seed`), which is how an artifact of ours is re-calibrated under new settings (a target risk, more
validation prompts) without retraining; the OOD statistics are then fitted too, as in the job. Either way
training/generation/job.finish chooses last-k, τ and the abstain rule on validation prompts (no early-stopping part:
nothing is trained) and reports on test."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.core.loading import CheckpointError
from models.generation.model import LlamaDropoutRates, dropout_layers, restore_dropout
from training.core.jobs import start_job
from training.generation.base import load_user_base
from training.generation.config import GenerationConfig
from training.generation.data import Corpus, TextFiles, load_bible_verses, load_text_files
from training.generation.evaluation import perplexity
from training.generation.job import DATASETS, eval_settings, finish, held_out_blocks
from training.generation.split import ProseSplit, chunk_token_ids, split_documents, token_stream

log = logging.getLogger(__name__)
TASK = "generation"
PRESETS: dict[str, dict[str, Any]] = {
    # No periodic validation part: every validation block is a candidate prompt for the choices. The target risk
    # is the generation job's quick one (training/generation/job.py says why).
    "quick": {"data": "file", "eval_blocks": 0, "calibration_prompts": 200, "compare_last_k": (1, 2),
              "target_risk": 0.65, "ood": True, "num_threads": 2},
    "tiny": {"data": "file", "eval_blocks": 0, "block_size": 32, "test_blocks": 8, "token_eval_blocks": 4,
             "probes_per_kind": 6, "mc_samples": 4, "max_input_tokens": 64, "max_new_tokens": 32,
             "default_max_new_tokens": 16, "eval_dtype": "float32", "compare_last_k": (1,), "progress": False,
             "num_threads": 1},
}


@dataclass
class CalibrateConfig(GenerationConfig):
    """Calibrate a causal LM with dropout (--base-model) on your validation text or a built-in corpus."""

    def validate(self) -> None:
        if not self.base_model:
            raise ValueError("calibration needs --base-model PATH (a Llama checkpoint directory with dropout)")
        if self.data == "file" and not self.validation_file:
            raise ValueError("--data file needs --validation-file FILE (your held-out text)")
        given = self.train_file
        self.train_file = given or (self.validation_file if self.data == "file" else None)
        try:  # the job's checks, with the validation file standing in for the training text it wants
            super().validate()
        finally:
            self.train_file = given


def load_model(config: CalibrateConfig, cache_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model with its recorded dropout restored, tokenizer, source record); CheckpointError without dropout."""
    model, tokenizer, source = load_user_base(str(config.base_model), cache_dir)
    rates = LlamaDropoutRates.of(restore_dropout(model))
    if not rates.any:
        raise CheckpointError(f"--base-model {config.base_model}: has no dropout, so MC dropout over it would report "
                              "zero uncertainty; fine-tune it with dropout first: python -m training.generation "
                              f"--base-model {config.base_model} --data file --train-file YOUR_TEXT")
    # The manifest's dropout record (job.build_manifest) reads these fields: they must say what the model has.
    config.dropout, config.attention_dropout = rates.hidden, rates.attention
    config.dropout_layers = dropout_layers(model)
    return model, tokenizer, {**source, "dropout": {"hidden": rates.hidden, "attention": rates.attention,
                                                    "top_layers": config.dropout_layers}}


def load_split(config: CalibrateConfig, cache_dir: Path) -> tuple[Corpus, ProseSplit]:
    """Train (the record / the OOD bank), validation and test segments (module docstring)."""
    if config.data != "file":
        corpus = DATASETS[config.data](config, cache_dir)
        return corpus, split_documents(corpus.documents, config.validation_fraction, config.test_fraction,
                                       config.split_seed)
    # The validation file plays the job's training file: the report's test part is held out of it (or given).
    val = Path(str(config.validation_file))
    corpus, split = load_text_files(TextFiles(val, None, Path(config.test_file) if config.test_file else None,
                                              config.text_key, 0.0, config.test_fraction, config.split_seed))
    train = load_text_files(TextFiles(Path(config.train_file), None, None, config.text_key, 0.0, 0.0,
                                      config.split_seed))[1].segments["train"] if config.train_file else []
    segments = {"train": train, "validation": split.segments["train"], "test": split.segments["test"]}
    method = "given files" if config.test_file else f"test held out of the validation file: {split.method}"
    return corpus, ProseSplit(segments, (), 0.0, split.test_fraction, split.seed, method)


def run(config: CalibrateConfig, preset: str, output_dir: Path, cache_dir: Path) -> Path:
    """Load, check, calibrate, report and write (module docstring); returns the artifact directory."""
    started = time.perf_counter()
    device, _ = start_job(config, TASK, preset, cache_dir, config.device)
    model, tokenizer, base = load_model(config, cache_dir)
    corpus, split = load_split(config, cache_dir)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    blocks = {name: chunk_token_ids(token_stream(split.segments[name], encode, tokenizer.eos_token_id),
                                    config.block_size) for name in ("train", "validation", "test")}
    for name in ("validation", "test"):
        if len(blocks[name]) < 1:
            raise ValueError(f"too little {name} text for one block of {config.block_size} tokens; add text or "
                             "lower --block-size")
    parts = held_out_blocks(config, blocks)
    s = eval_settings(config, device, int(config.dropout_layers or 1))
    model.to(device)
    before = perplexity(model, parts["test_perplexity"], s)
    verses = list(load_bible_verses(cache_dir).values()) if config.data not in ("synthetic", "file") else []
    history: dict[str, Any] = {"losses": [], "lrs": [], "evals": [], "summary": {
        "steps": 0, "train_blocks": 0, "note": "calibrated without training"}}
    log.info("calibrating %s (dropout %s) on %d validation prompts, reporting on %d test prompts",
             type(model).__name__, base["dropout"], len(parts["validation_calibration"]), len(parts["test_prompts"]))
    return finish(config, preset, output_dir, model, tokenizer, split, blocks, parts, before, history,
                  {"corpus": corpus.source, "base_model": base}, verses, s, started, cache_dir)

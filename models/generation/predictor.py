"""Generation predictor: a prompt in, its continuation + per-token and sequence MC-dropout uncertainty out.

Per batch (every request decodes in the same batch, each with its own parameters):
1. decode without dropout (models/generation/decode.py): KV cache, per-row temperature / top-k / top-p /
   repetition penalty / stop strings / max_new_tokens and a seeded generator; it keeps the input of
   decoder layer L − k at every position and streams text to `MCRequest.text_sink` when one is given;
2. items with T > 0: ONE teacher-forced pass of the top k layers over Σ T_i rows, each row under its own
   seeded residual-dropout masks (models/generation/mc.py), the output layer on the generated positions only,
   then token probability / entropy / MI and TP, D-TP, D-Var (models/core/sequence_uncertainty.py).
`score` runs the same pass on continuations fixed in advance (one teacher-forced forward instead of the
decode): the training evaluation's only scoring path, so its reports measure what the server returns.

Manifest sections used: `preprocessing` {"max_input_tokens", "max_new_tokens" (cap),
"default_max_new_tokens"}, `dropout` {"mc_sites", "mc_last_k"}, `calibration` {"temperature",
"abstain": {"measure", "threshold"}}. Prompts over the token limit are refused (InputError → 422).
The `seed` of a request fixes both its sampled tokens and its dropout masks.
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Hashable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from models.core.artifacts import Manifest
from models.core.base import BasePredictor
from models.core.device import autocast_context
from models.core.dropout import mix_seed
from models.core.ood import abstain_decision, pool
from models.core.padding import pad_ids, pad_states
from models.core.parameters import Parameters
from models.core.predictor import (
    GenerationPrediction,
    InputError,
    MCRequest,
    PredictorOptions,
    PreparedItem,
    ScoredOutput,
    SequenceUncertainty,
    TokenScore,
    TopToken,
    served_samples,
)
from models.core.sequence_uncertainty import sequence_measures, token_measures
from models.generation.decode import DecodedRow, DecodeResult, decode_batch, teacher_force
from models.generation.mc import SUPPORTED_SITES, capture_layer_input, positions_of, project, top_layers
from models.generation.model import LlamaDropoutRates, dropout_layers, restore_dropout
from models.generation.sampling import SamplingParams

TASK = "generation"
MAX_STOP_STRINGS, MAX_STOP_LENGTH = 4, 64
_SAMPLING_SALT = 2_000_003
_KNOWN = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "return_tokens",
          "top_logprobs")


class GenerationPredictor(BasePredictor):
    """Predictor protocol implementation for the generation task (models/core/predictor.py)."""

    task: ClassVar[str] = TASK
    model_class = LlamaForCausalLM
    default_sites = supported_sites = SUPPORTED_SITES
    # No sampling mode here, so no `sampling_chrf`: a rule on it would never fire.
    abstain_measures = frozenset(f.name for f in fields(SequenceUncertainty)) - {"sampling_chrf"}
    warmup_text = "It is a truth universally acknowledged"

    def __init__(self, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, manifest: Manifest,
                 options: PredictorOptions) -> None:
        super().__init__(model, tokenizer, manifest, options)
        # Layers without dropout would only repeat deterministic work: last-k never reaches below them.
        self.last_k = min(self.last_k, dropout_layers(self.model))
        config = self.model.config
        eos = config.eos_token_id
        self.eos_ids = frozenset(eos if isinstance(eos, list) else [eos]) | frozenset(
            [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids))
        positions = int(config.max_position_embeddings)
        pre = manifest.preprocessing or {}
        self.max_new_tokens_cap = min(int(pre.get("max_new_tokens", 256)), positions - 1)
        self.default_max_new_tokens = min(int(pre.get("default_max_new_tokens", 64)), self.max_new_tokens_cap)
        trained_max = int(pre.get("max_input_tokens", positions - self.max_new_tokens_cap))
        self.max_input_tokens = min(trained_max, options.max_input_tokens or trained_max,
                                    positions - self.max_new_tokens_cap)
        self.sampling_defaults = {"temperature": 0.8, "top_k": 0, "top_p": 0.95, "repetition_penalty": 1.1,
                                  **(pre.get("sampling_defaults") or {})}

    def _prepare_model(self, model: LlamaForCausalLM) -> LlamaForCausalLM:
        return restore_dropout(model)  # the saved config holds the rates; the hooks do not survive saving

    def _count_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _dropout_rates(self) -> LlamaDropoutRates:
        return LlamaDropoutRates.of(self.model)

    # -- Predictor protocol -------------------------------------------------------------------------

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        read = Parameters(TASK, parameters, _KNOWN)
        d = self.sampling_defaults
        sampling = SamplingParams(
            max_new_tokens=read.integer("max_new_tokens", self.default_max_new_tokens, 1, self.max_new_tokens_cap),
            temperature=read.number("temperature", d["temperature"], 0.0, 5.0),
            top_k=read.integer("top_k", d["top_k"], 0, len(self.tokenizer)),
            top_p=read.number("top_p", d["top_p"], 1e-6, 1.0),
            repetition_penalty=read.number("repetition_penalty", d["repetition_penalty"], 0.5, 2.0),
            stop=read.strings("stop", MAX_STOP_STRINGS, MAX_STOP_LENGTH),
            top_logprobs=read.integer("top_logprobs", 0, 0, len(self.tokenizer)),
        )
        # Alternatives are reported per output token, so asking for them asks for the token table.
        return_tokens = read.flag("return_tokens", False) or sampling.top_logprobs > 0
        if not text or not text.strip():
            raise InputError("text must not be empty")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_input_tokens:
            raise InputError(f"text has {len(ids)} tokens, over the generation limit of {self.max_input_tokens}")
        return PreparedItem(text=text, input_ids=tuple(ids), n_tokens=len(ids),
                            parameters={"sampling": sampling, "return_tokens": return_tokens})

    def batch_key(self, item: PreparedItem) -> Hashable:
        return TASK  # every row keeps its own decoding parameters: any requests can share a batch

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        # Prompt + generated tokens, plus the MC rows' share: the top k of L layers over the whole sequence.
        out = item.parameters["sampling"].max_new_tokens
        total = item.n_tokens + out
        return max(1, total + total * self.last_k * request.mc_samples // self.num_layers)

    def _predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[GenerationPrediction]:
        scored = [i for i, r in enumerate(requests) if r.mc_samples > 0]
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            result = decode_batch(
                self.model, self.tokenizer, [item.input_ids for item in items],
                [item.parameters["sampling"] for item in items],
                [mix_seed(r.seed, _SAMPLING_SALT) for r in requests],
                eos_ids=self.eos_ids, pad_id=self.pad_id, temperature=self.calibration.temperature,
                capture_layer=self.num_layers - self.last_k if scored else None,
                sinks=[r.text_sink for r in requests],
                feature_layers=self.ood.layers if self.ood is not None else (),
                feature_pooling=self.ood.pooling if self.ood is not None else "mean",
            )
            log_probs = self._score(result, scored, requests) if scored else {}
        outcomes = self._ood_outcomes(result.prompt_features, items)
        return [self._prediction(i, item, requests[i], result, log_probs.get(i), outcomes[i])
                for i, item in enumerate(items)]

    def score(self, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]],
              requests: Sequence[MCRequest]) -> list[ScoredOutput]:
        """Score fixed, non-empty `outputs` (token ids) after `prompts` (ids as `prepare` makes them) through
        the serving pass, under each request's T masks (T = 1 runs as 0)."""
        requests = [MCRequest(served_samples(r.mc_samples), r.seed) for r in requests]
        scored = [i for i, r in enumerate(requests) if r.mc_samples > 0]
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            result = teacher_force(self.model, prompts, outputs, eos_ids=self.eos_ids, pad_id=self.pad_id,
                                   temperature=self.calibration.temperature,
                                   capture_layer=self.num_layers - self.last_k if scored else None)
            log_probs = self._score(result, scored, requests) if scored else {}
        out = []
        for i, row in enumerate(result.rows):
            summary, _ = self._measures(row, log_probs.get(i))
            out.append(ScoredOutput(det_log_probs=row.log_probs, det_top=row.top_tokens,
                                    det_top_log_probs=row.top_log_probs, det_entropies=row.entropies,
                                    mc_log_probs=log_probs.get(i),
                                    uncertainty=SequenceUncertainty(**summary) if summary else None,
                                    abstain=self.calibration.abstains(summary) if summary else False))
        return out

    def _score(self, result: DecodeResult, chosen: list[int], requests: Sequence[MCRequest]) -> dict[int, torch.Tensor]:
        """One pass of the top k layers for the T_i rows of every chosen item; returns per item the
        temperature-scaled log-distributions [T_i, n_i, V] at its generated positions.

        The decode's left-padded states are re-packed right-padded first, so a row's positions (and so its
        seeded dropout masks, which are laid out by position) do not depend on what else was in the batch."""
        assert result.hidden is not None
        sequences, prompts, lengths = [], [], []
        for i in chosen:
            real = result.mask[i].bool()
            n = len(result.rows[i].tokens)
            prompt = int(real[: result.prompt_width].sum())
            sequences.append(result.hidden[i][real][: prompt + n - 1])  # prompt + generated tokens but the last
            prompts.append(prompt)
            lengths.append(n)
        hidden, mask = pad_states(sequences)
        counts = [requests[i].mc_samples for i in chosen]
        seeds = [mix_seed(requests[i].seed, t) for i in chosen for t in range(requests[i].mc_samples)]
        states = top_layers(self.model, hidden, mask, seeds, counts, self.last_k)
        # The output at position prompt − 1 + j predicts generated token j: project only those.
        packed = torch.cat([rows[:, p - 1: p - 1 + n].reshape(-1, rows.shape[-1])
                            for rows, p, n in zip(torch.split(states, counts), prompts, lengths, strict=True)])
        flat = torch.log_softmax(project(self.model, packed) / self.calibration.temperature, dim=-1)
        sizes = [count * n for count, n in zip(counts, lengths, strict=True)]
        return {i: part.view(count, n, -1)
                for i, part, count, n in zip(chosen, torch.split(flat, sizes), counts, lengths, strict=True)}

    def _measures(self, row: DecodedRow, log_probs: torch.Tensor | None) -> tuple[dict[str, Any] | None, tuple]:
        """(sequence measures, None without MC rows; per-token probability, entropy, MI lists) of one row."""
        det = torch.tensor(row.log_probs, dtype=torch.float64)
        if log_probs is None:
            return None, (det.exp().tolist(), row.entropies, [None] * len(row.tokens))
        measures = token_measures(log_probs, torch.tensor(row.tokens, device=log_probs.device))
        return sequence_measures(det, measures), (measures.probability.tolist(), measures.predictive_entropy.tolist(),
                                                  measures.mutual_information.tolist())

    def _alternatives(self, row: DecodedRow, log_probs: torch.Tensor | None,
                      k: int) -> list[tuple[TopToken, ...] | None]:
        """Per output token its `k` most likely tokens: from the MC mean distribution log p̄ = logsumexp_t −
        log T when MC rows were scored (the distribution `probability` comes from), else the decode's own."""
        if k <= 0:
            return [None] * len(row.tokens)
        if log_probs is not None:
            mean = torch.logsumexp(log_probs.float(), dim=0) - math.log(log_probs.shape[0])  # [n, V]
            best, best_ids = mean.topk(min(k, mean.shape[-1]), dim=-1)
            steps = [list(zip(i, v, strict=True)) for i, v in zip(best_ids.tolist(), best.tolist(), strict=True)]
        else:
            steps = row.alternatives
        return [tuple(TopToken(self.tokenizer.decode([t]), float(v)) for t, v in step) for step in steps]

    def _prediction(self, i: int, item: PreparedItem, request: MCRequest, result: DecodeResult,
                    log_probs: torch.Tensor | None, outcome: tuple[float | None, bool]) -> GenerationPrediction:
        row = result.rows[i]
        summary, (probability, entropy, mutual) = self._measures(row, log_probs)
        tokens = None
        if item.parameters["return_tokens"]:
            alternatives = self._alternatives(row, log_probs, item.parameters["sampling"].top_logprobs)
            tokens = [TokenScore(self.tokenizer.decode([t]), float(p), float(h), None if mi is None else float(mi), top)
                      for t, p, h, mi, top in zip(row.tokens, probability, entropy, mutual, alternatives, strict=True)]
        ood_score, out_of_distribution = outcome
        uncertain = self.calibration.abstains(summary) if summary else False
        abstain, reason = abstain_decision(out_of_distribution, uncertain)
        return GenerationPrediction(
            text=row.text, uncertainty=SequenceUncertainty(**summary) if summary else None, tokens=tokens,
            finish_reason=row.finish_reason, input_tokens=item.n_tokens, output_tokens=len(row.tokens),
            first_token_seconds=row.first_token_seconds, decode_seconds=row.seconds,
            abstain=abstain, output_ids=tuple(row.tokens), ood_score=ood_score,
            out_of_distribution=out_of_distribution, abstain_reason=reason,
        )

    def _warmup_parameters(self) -> dict[str, Any]:
        return {"max_new_tokens": min(4, self.max_new_tokens_cap), "return_tokens": True}

    # -- OOD features (models/core/ood.py): the prompt's hidden states in the decode's first forward ----------

    def ood_feature_layers(self) -> int:
        return self.num_layers + 1  # the input of layer 0 (embeddings) .. of the final norm

    def ood_features(self, items: Sequence[PreparedItem], layers: Sequence[int],
                     pooling: str = "mean") -> dict[int, torch.Tensor]:
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype), ExitStack() as stack:
            ids, mask = pad_ids([item.input_ids for item in items], self.pad_id, self.device, left=True)
            captured = {layer: stack.enter_context(capture_layer_input(self.model, layer)) for layer in layers}
            self.model.model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask), use_cache=False)
            return {layer: pool(chunks[0], mask, pooling) for layer, chunks in captured.items()}

    def _task_facts(self) -> dict[str, Any]:
        parameter_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return {
            "vocab_size": len(self.tokenizer),
            "decoding": {"max_new_tokens_cap": self.max_new_tokens_cap, "default_max_new_tokens":
                         self.default_max_new_tokens, "sampling_defaults": self.sampling_defaults,
                         "kv_cache": True, "max_stop_strings": MAX_STOP_STRINGS, "streaming": True},
            "memory": {"parameter_bytes": parameter_bytes, **process_memory()},
        }


def process_memory() -> dict[str, int]:
    """Resident memory of this process now and at its peak, in bytes (the model loads once per process,
    so this is what one more model costs). Current RSS from /proc where there is one."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"process_peak_rss_bytes": int(peak if sys.platform == "darwin" else peak * 1024)}
    statm = Path("/proc/self/statm")
    if statm.is_file():
        out["process_rss_bytes"] = int(statm.read_text().split()[1]) * resource.getpagesize()
    return out

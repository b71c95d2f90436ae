"""Translation predictor: English text in, German translation + sequence MC-dropout uncertainty out.

Per batch (items share decoding parameters, see `batch_key`):
1. decode once without dropout: `model.generate` (greedy or beam, KV cache) in eval mode;
2. score that output under T dropout masks in ONE teacher-forced forward (models/translation/mc.py): per item
   one deterministic row (TP and, at T = 0, the token table) plus T seeded rows; token probability,
   entropy and MI, TP, D-TP, D-Var (models/core/sequence_uncertainty.py);
3. `"uncertainty_mode": "sampling"` also runs T stochastic greedy decodes (same masks machinery, seeded per
   row) and reports their mean pairwise chrF (`sampling_chrf`, D-Lex-Sim style; high = samples agree).
`score` runs step 2 alone on given outputs (a reference, or a decode to re-score under other MC settings):
the training evaluation's only scoring path, so its reports measure what the server returns.
One code path serves both architectures: what differs (encoder, decoders, the scoring pass, what last-k counts) is
the ops object of the model's type (models/translation/ops.py: Marian, the recurrent model). In both, last-k counts
decoder then encoder layers: k ≤ decoder layers keeps the encoder once per item without dropout (k = decoder layers is
"decoder-full"), a larger k drops out in the top encoder layers too, run per MC row, and k = all layers is
"whole-model" (`describe` names the mode).

Manifest sections used: `preprocessing` {"max_input_tokens", "max_new_tokens" (cap), "default_max_new_tokens"},
`dropout` {"mc_sites", "mc_last_k"}, `calibration` {"temperature", "abstain": {"measure", "threshold"}}.
Inputs over the token limit are refused (InputError → 422), never truncated: a cut sentence would get a
confident translation of half of it. Scored tokens include `</s>` when the decode ended with it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import fields
from typing import Any, ClassVar

import torch
from transformers import AutoModelForSeq2SeqLM, MarianMTModel, PreTrainedModel, PreTrainedTokenizerBase

from models.core.artifacts import Manifest
from models.core.base import BasePredictor
from models.core.device import autocast_context
from models.core.dropout import mix_seed
from models.core.ood import abstain_decision
from models.core.padding import pad_ids
from models.core.parameters import Parameters
from models.core.predictor import (
    InputError,
    MCRequest,
    PredictorOptions,
    PreparedItem,
    ScoredOutput,
    SequenceUncertainty,
    TokenScore,
    TranslationPrediction,
    served_samples,
)
from models.translation.measures import measures_of, scored_output
from models.translation.ops import Encoded, ops_for
from models.translation.rnn import RnnMTModel

TASK = "translation"
MODES = ("scoring", "sampling")
MAX_BEAMS = 8
_SAMPLING_SALT = 1_000_003


class TranslationPredictor(BasePredictor):
    """Predictor protocol implementation for the translation task (models/core/predictor.py)."""

    task: ClassVar[str] = TASK
    model_class = (MarianMTModel, RnnMTModel)
    load_class = AutoModelForSeq2SeqLM  # the config's model_type picks the class (rnn.py registers its own)
    default_sites = frozenset({"hidden"})
    abstain_measures = frozenset(f.name for f in fields(SequenceUncertainty))
    layers_word = "decoder-layers"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, manifest: Manifest,
                 options: PredictorOptions) -> None:
        self.ops = ops_for(model)  # before the base class counts layers and checks the sites
        self.supported_sites = self.ops.supported_sites  # type: ignore[misc]
        super().__init__(model, tokenizer, manifest, options)
        config = self.model.config
        self.pad_id, self.eos_id = int(config.pad_token_id), int(config.eos_token_id)
        self.start_id = int(config.decoder_start_token_id)
        positions = int(config.max_position_embeddings)
        pre = manifest.preprocessing or {}
        trained_max = int(pre.get("max_input_tokens", positions))
        self.max_input_tokens = min(trained_max, options.max_input_tokens or trained_max, positions)
        # The decoder reads <s> + the output: max_new_tokens + 1 positions.
        self.max_new_tokens_cap = min(int(pre.get("max_new_tokens", positions - 1)), positions - 1)
        self.default_max_new_tokens = min(int(pre.get("default_max_new_tokens", self.max_new_tokens_cap)),
                                          self.max_new_tokens_cap)

    def _count_layers(self) -> int:
        return self.ops.num_layers(self.model)

    def _dropout_rates(self) -> Any:
        return self.ops.rates(self.model)

    # -- parameters ---------------------------------------------------------------------------------

    def _parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        read = Parameters(TASK, parameters, {"max_new_tokens", "num_beams", "uncertainty_mode", "return_tokens"})
        return {
            "max_new_tokens": read.integer("max_new_tokens", self.default_max_new_tokens, 1, self.max_new_tokens_cap),
            "num_beams": read.integer("num_beams", 1, 1, MAX_BEAMS),
            "uncertainty_mode": read.choice("uncertainty_mode", "scoring", MODES),
            "return_tokens": read.flag("return_tokens", False),
        }

    # -- Predictor protocol -------------------------------------------------------------------------

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        chosen = self._parameters(parameters)
        if not text or not text.strip():
            raise InputError("text must not be empty")
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) > self.max_input_tokens:
            raise InputError(f"text has {len(ids)} tokens, over the translation limit of {self.max_input_tokens}")
        return PreparedItem(text=text, input_ids=tuple(ids), n_tokens=len(ids), parameters=chosen)

    def batch_key(self, item: PreparedItem) -> Hashable:
        p = item.parameters
        return (p["max_new_tokens"], p["num_beams"], p["uncertainty_mode"])

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        # Encoder tokens + decoder tokens (beams) + the scoring rows' share: the decoder's top min(k, D) of D layers
        # per output token, and, when k reaches the encoder, its live k − D of E layers per source token and row.
        out = item.parameters["max_new_tokens"]
        samples = request.mc_samples
        enc, dec = self.ops.layer_counts(self.model)
        k = min(self.last_k, enc + dec)
        scoring = 0
        if samples:
            scoring = out * (dec + min(k, dec) * samples) // dec + item.n_tokens * max(0, k - dec) * samples // enc
        sampling = out * samples if item.parameters["uncertainty_mode"] == "sampling" else 0
        return max(1, item.n_tokens + out * item.parameters["num_beams"] + scoring + sampling)

    def _predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[TranslationPrediction]:
        keys = {self.batch_key(item) for item in items}
        if len(keys) != 1:
            raise ValueError(f"a batch mixes decoding parameters {sorted(keys)}")
        max_new_tokens, num_beams, mode = keys.pop()
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            input_ids, mask = pad_ids([item.input_ids for item in items], self.pad_id, self.device)
            layers = list(self.ood.layers) if self.ood is not None else []
            enc, features = self.ops.encode(self.model, input_ids, mask, layers,
                                            self.ood.pooling if self.ood is not None else "mean")
            outcomes = self._ood_outcomes(features if layers else None, items)
            outputs = [tokens or [self.eos_id]
                       for tokens in self.ops.decode(self.model, enc, max_new_tokens, num_beams)]
            wanted = [i for i, (item, r) in enumerate(zip(items, requests, strict=True))
                      if r.mc_samples > 0 or item.parameters["return_tokens"]]
            scored = self._score(requests, enc, outputs, wanted)
            samples = self._sample(requests, enc, max_new_tokens) if mode == "sampling" else [None] * len(items)
        return [
            self._prediction(item, request, output, score, sampled, outcome)
            for item, request, output, score, sampled, outcome in zip(items, requests, outputs, scored, samples,
                                                                       outcomes, strict=True)
        ]

    def score(self, sources: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]],
              requests: Sequence[MCRequest]) -> list[ScoredOutput]:
        """Score fixed `outputs` (token ids, `</s>` included where they end) of `sources` (ids as `prepare`
        makes them) teacher-forced in the serving pass, under each request's T masks (T = 1 runs as 0)."""
        requests = [MCRequest(served_samples(r.mc_samples), r.seed) for r in requests]
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            input_ids, mask = pad_ids(sources, self.pad_id, self.device)
            enc, _ = self.ops.encode(self.model, input_ids, mask)
            scored = self._score(requests, enc, [list(o) for o in outputs], list(range(len(sources))))
        out = []
        for request, score in zip(requests, scored, strict=True):
            assert score is not None  # every item was chosen
            out.append(scored_output(score, request.mc_samples, self.calibration))
        return out

    def _score(
        self,
        requests: Sequence[MCRequest],
        enc: Encoded,
        outputs: list[list[int]],
        chosen: list[int],
    ) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """One teacher-forced forward: per chosen item a deterministic row and T seeded rows.
        Returns per item (log-probs [1 + T, n, V], targets [n]), None for items not chosen."""
        result: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(requests)
        if not chosen:
            return result
        seeds: list[int | None] = []
        counts = []
        for i in chosen:
            seeds.append(None)
            seeds.extend(mix_seed(requests[i].seed, t) for t in range(requests[i].mc_samples))
            counts.append(1 + requests[i].mc_samples)
        decoder_inputs, _ = pad_ids([[self.start_id, *outputs[i][:-1]] for i in chosen], self.pad_id, self.device)
        index = torch.tensor(chosen, device=self.device)
        hidden = self.ops.hidden(self.model, enc.select(index), decoder_inputs, seeds, counts, self.last_k, self.sites)
        # Project only the real positions of each item's rows, packed: no vocabulary work on padding.
        lengths = [len(outputs[i]) for i in chosen]
        packed = torch.cat([rows[:, :n].reshape(-1, rows.shape[-1])
                            for rows, n in zip(torch.split(hidden, counts), lengths, strict=True)])
        # Stays on the model's device: the [rows, n, V] reductions run there (models/core/sequence_uncertainty.py).
        log_probs_all = torch.log_softmax(self.ops.project(self.model, packed) / self.calibration.temperature, dim=-1)
        sizes = [count * n for count, n in zip(counts, lengths, strict=True)]
        for i, flat, count, n in zip(chosen, torch.split(log_probs_all, sizes), counts, lengths, strict=True):
            result[i] = (flat.view(count, n, -1), torch.tensor(outputs[i], device=self.device))
        return result

    def _sample(self, requests: Sequence[MCRequest], enc: Encoded, max_new_tokens: int) -> list[list[str] | None]:
        chosen = [i for i, r in enumerate(requests) if r.mc_samples > 0]
        result: list[list[str] | None] = [None] * len(requests)
        if not chosen:
            return result
        seeds: list[int | None] = []
        counts = []
        for i in chosen:
            seeds.extend(mix_seed(requests[i].seed, _SAMPLING_SALT + t) for t in range(requests[i].mc_samples))
            counts.append(requests[i].mc_samples)
        index = torch.tensor(chosen, device=self.device)
        decoded = self.ops.sample(self.model, enc.select(index), seeds, counts, self.last_k, self.sites,
                                  max_new_tokens)
        start = 0
        for i, count in zip(chosen, counts, strict=True):
            rows = decoded[start: start + count]
            start += count
            result[i] = [self.tokenizer.decode(row, skip_special_tokens=True) for row in rows]
        return result

    def _prediction(self, item: PreparedItem, request: MCRequest, output: list[int],
                    score: tuple[torch.Tensor, torch.Tensor] | None,
                    sampled: list[str] | None, outcome: tuple[float | None, bool]) -> TranslationPrediction:
        summary, tokens = None, None
        if score is not None:
            summary, (probability, entropy, mutual) = measures_of(score, request.mc_samples, sampled)
            if item.parameters["return_tokens"]:
                tokens = [TokenScore(self.tokenizer.decode([t]), float(p), float(h), None if mi is None else float(mi))
                          for t, p, h, mi in zip(output, probability, entropy, mutual, strict=True)]
        ood_score, out_of_distribution = outcome
        uncertain = self.calibration.abstains(summary) if summary else False
        abstain, reason = abstain_decision(out_of_distribution, uncertain)
        return TranslationPrediction(
            translation=self.tokenizer.decode(output, skip_special_tokens=True),
            uncertainty=SequenceUncertainty(**summary) if summary else None,
            tokens=tokens,
            finish_reason="eos" if output[-1] == self.eos_id else "length",
            input_tokens=item.n_tokens,
            output_tokens=len(output),
            abstain=abstain,
            output_ids=tuple(output),
            ood_score=ood_score,
            out_of_distribution=out_of_distribution,
            abstain_reason=reason,
        )

    def ood_feature_layers(self) -> int:  # OOD features (models/core/ood.py): the encoder's states of the source
        return self.ops.feature_layers(self.model)

    def _ood_feature_dim(self) -> int:
        return self.ops.feature_dim(self.model)

    def ood_features(self, items: Sequence[PreparedItem], layers: Sequence[int],
                     pooling: str = "mean") -> dict[int, torch.Tensor]:
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            input_ids, mask = pad_ids([item.input_ids for item in items], self.pad_id, self.device)
            return self.ops.encode(self.model, input_ids, mask, layers, pooling)[1]

    def _warmup_parameters(self) -> dict[str, Any]:
        return {"max_new_tokens": min(8, self.max_new_tokens_cap), "return_tokens": True}

    def _task_facts(self) -> dict[str, Any]:
        return {
            **self.ops.facts(self.model, self.last_k),  # architecture, num_layers, mc scope and mode
            "vocab_size": len(self.tokenizer),
            "decoding": {"max_new_tokens_cap": self.max_new_tokens_cap, "default_max_new_tokens":
                         self.default_max_new_tokens, "max_num_beams": MAX_BEAMS, "uncertainty_modes": list(MODES)},
        }

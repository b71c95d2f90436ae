"""Next-token choice for one row of a batched decode, and stop-string handling.

`SamplingParams` are validated per request; `choose_token` applies, in this order, the repetition
penalty (CTRL: a seen token's logit is divided by the penalty when positive, multiplied when negative),
temperature (0 = greedy argmax), top-k, top-p (the smallest set of tokens whose probability reaches p,
the most likely token always kept) and draws from the row's own seeded generator, so a row's tokens do
not depend on the other rows in its batch.

`StopText` tracks a row's decoded text: it finds the earliest stop string, and says how much text is safe
to stream (text that could still turn out to be the start of a stop string is held back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters of one request (validated by the predictor)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # not a decoding choice: how many alternatives per step the decode records


def choose_token(logits: torch.Tensor, params: SamplingParams, history: torch.Tensor,
                 generator: torch.Generator | None) -> int:
    """The next token id from one row's logits [V] (float32), its context ids `history` [n] (for the
    repetition penalty) and its generator (unused when greedy)."""
    scores = logits.float()
    if params.repetition_penalty != 1.0 and history.numel():
        seen = history.unique()
        picked = scores[seen]
        scores = scores.clone()
        scores[seen] = torch.where(picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty)
    if params.temperature <= 0.0:
        return int(scores.argmax())
    # In float64 and shifted so the best score is 0: a tiny temperature (a fuzzer sent 5.8e-187, which float32
    # rounds to 0) then sends the others towards -inf, which softmax takes, instead of 0 / 0 = NaN.
    scores = (scores.double() - scores.max()) / params.temperature
    if 0 < params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the strictly more likely tokens
        drop = before >= params.top_p
        drop[0] = False
        probs = probs.clone()
        probs[order[drop]] = 0.0
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class StopText:
    """Decoded text of one row against its stop strings (module docstring)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def find(self, text: str) -> int | None:
        """Index where the earliest stop string starts in `text`, or None."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def safe_length(self, text: str, finished: bool) -> int:
        """How many leading characters of `text` can be streamed now: all of it once finished, else all but
        a tail that might still begin a stop string. A trailing U+FFFD (half a UTF-8 character) is held."""
        if finished:
            return len(text)
        end = len(text)
        while end and text[end - 1] == "\ufffd":
            end -= 1
        if not self.stops:
            return end
        for cut in range(max(0, end - self.hold), end):
            tail = text[cut:end]
            if any(s.startswith(tail) for s in self.stops):
                return cut
        return end

"""The README.md of a device package: its files, the graph's inputs and outputs, and how to turn T rows of
logits into the served prediction and uncertainty (docs/architecture.md §4)."""

from __future__ import annotations

from typing import Any


def package_readme(facts: dict[str, Any]) -> str:
    """Markdown for the package described by `facts` (package.json's body)."""
    mc, pre = facts["mc"], facts["preprocessing"]
    rows = "\n".join(f"| `{io['name']}` | {io['dtype']} | [{', '.join(map(str, io['shape']))}] |"
                     for io in facts["inputs"])
    files = ", ".join(f"`{name}`" for name in facts["files"].values())
    quant = facts.get("quantization")
    quant_text = "" if not quant else (
        f"\n`model.int8.onnx` is the int8 dynamic quantisation; on {quant['items']} validation reviews at "
        f"T = {quant['mc_samples']} it changed accuracy by {quant['accuracy_change_points']:+.2f} points and ECE by "
        f"{quant['ece_change']:+.4f} (guard: refused beyond −{quant['max_accuracy_drop_points']} points).\n")
    return f"""# {facts['task']} {facts['version']} ({facts['format']})

Files: {files}, `tokenizer.json`, `tokenizer_config.json`, `package.json` (labels {facts['labels']},
preprocessing, inputs/outputs, MC settings, calibration).
{quant_text}
## Inputs and outputs

B items, L padded tokens, R rows (item i gives max(T_i, 1) rows; T = 0 is deterministic), H hidden size.

| input | dtype | shape |
|---|---|---|
{rows}
| output `logits` | float32 | [R, {len(facts['labels'])}] |

## Running MC dropout on the device

1. Tokenise with `tokenizer.json` without special tokens; keep the first {pre['head_tokens']} and the last
   {pre['max_length'] - 2 - pre['head_tokens']} ids when longer than {pre['max_length'] - 2} (head+tail), then add
   [CLS] = {pre['cls_token_id']} and [SEP] = {pre['sep_token_id']}; pad with {pre['pad_token_id']}
   (`attention_mask` 0).
2. `row_index`: item i repeated T_i times (once for T = 0). Default T = {mc['default_mc_samples']}; last-{mc['last_k']}
   of {mc['num_layers']} layers are stochastic.
3. Each `mask_*` input: for a sampled row, keep each unit with probability 1 − p and set it to 1/(1 − p), else 0;
   for a T = 0 row all ones. p = {mc['rates']['hidden']} for the layer masks, {mc['rates']['head']} for `mask_head`.
   Any RNG works on a device; the server's seeded scheme is in `package.json` (`mc.server_seeding`), and the
   same masks give the server's logits.
4. Divide the logits by τ (`calibration.temperature` for T ≥ 2, `calibration.deterministic_temperature` for
   T = 0), softmax per row, average over the item's rows: p̄. Predictive entropy H[p̄] (total), expected entropy
   mean_t H[p_t] (aleatoric), mutual information = their difference (epistemic), in nats.
5. Optional: the confidence map (`calibration.confidence_map`, piecewise-linear knots x → y of the top-label
   probability) recalibrates the served confidence; abstain when `calibration.abstain.measure` passes
   `calibration.abstain.threshold`.
"""

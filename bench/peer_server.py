"""The peer: the same sentiment model directory behind LitServe, written as a new user of LitServe would
(dynamic batching, a plain transformers forward, softmax). Answers the bench client's `POST /predict` body
(`text`; other fields ignored) with the label and probabilities; no uncertainty. `bench` extra only.

    python -m bench.peer_server --model-dir artifacts/sentiment/<version>/model --port 8100 \
        [--max-batch-size 32] [--batch-timeout-ms 5] [--dtype bfloat16|float32] [--threads 2]
"""


import argparse
import contextlib
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class SentimentAPI(ls.LitAPI):
    """LitServe's batched API: decode → batch → predict → unbatch → encode."""

    def __init__(self, model_dir: Path, dtype: str, threads: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir, self.dtype, self.threads = model_dir, dtype, threads

    def setup(self, device: str) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, local_files_only=True, use_safetensors=True).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def decode_request(self, request: dict[str, Any]) -> str:
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return inputs

    def predict(self, texts: list[str] | str) -> list[dict[str, Any]]:
        texts = [texts] if isinstance(texts, str) else texts
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.dtype == "bfloat16" \
            else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1)
        return [{"label": self.labels[int(p.argmax())], "probabilities": dict(zip(self.labels, p.tolist(),
                                                                                 strict=True))} for p in probs]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        return {"predictions": output if isinstance(output, list) else [output]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    api = SentimentAPI(args.model_dir, args.dtype, args.threads, max_batch_size=args.max_batch_size,
                       batch_timeout=args.batch_timeout_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()

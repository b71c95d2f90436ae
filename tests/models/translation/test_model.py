"""Joint tokenizer (determinism across processes, exact round-trip) and the tiny Marian model (forward,
beam/greedy generate with a KV cache, safetensors save/load round-trip)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, MarianMTModel

from models.core.tokenizers import BOS, EOS, PAD, UNK, train_joint_tokenizer
from models.translation.model import PRESET_SIZES, build_marian, build_marian_preset
from training.translation.data import load_synthetic_translation

ROOT = Path(__file__).resolve().parents[3]
_VOCAB_SCRIPT = (
    "import json, random, sys\n"
    "from training.translation.data import load_synthetic_translation\n"
    "from models.core.tokenizers import train_joint_tokenizer\n"
    "texts = [t for p in load_synthetic_translation(seed=0).splits['train'] for t in p]\n"
    "random.Random(int(sys.argv[1])).shuffle(texts)\n"
    "tok = train_joint_tokenizer(texts, 500)\n"
    "print(json.dumps([tok.get_vocab(), tok('Der König sah das Brot.')['input_ids']], sort_keys=True))\n"
)


@pytest.fixture(scope="module")
def data():
    return load_synthetic_translation(seed=0)


@pytest.fixture(scope="module")
def tokenizer(data):
    return train_joint_tokenizer([t for pair in data.splits["train"] for t in pair], 500)


def test_tokenizer_is_identical_across_processes_and_input_orders(tokenizer) -> None:
    # One other process (own hash seed, shuffled input) against this one: same vocabulary, same ids.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-c", _VOCAB_SCRIPT, "7"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    vocab, ids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert vocab == tokenizer.get_vocab() and ids == tokenizer("Der König sah das Brot.")["input_ids"]


def test_tokenizer_specials_eos_and_exact_round_trip(tokenizer) -> None:
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == [PAD, BOS, EOS, UNK]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    for text in ("Der König sah das Brot.", "Straße, Öl & 中文 — «odd»  spaces", "shuffled words king the"):
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    with pytest.raises(ValueError):
        train_joint_tokenizer([], 100)


def test_preset_sizes_and_parameter_count() -> None:
    assert set(PRESET_SIZES) == {"tiny", "quick", "full"}
    quick = build_marian_preset("quick")  # DATA.md: 7.6 M parameters at this size
    assert 7.4e6 < sum(p.numel() for p in quick.parameters()) < 7.8e6
    with pytest.raises(KeyError, match="known"):
        build_marian_preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        build_marian(100, 30, 1, 1, 4, 32)


def _batch(tokenizer, data, n: int = 4):
    pairs = data.splits["test"][:n]
    enc = tokenizer([s for s, _ in pairs], padding=True, return_tensors="pt")
    labels = tokenizer(text_target=[t for _, t in pairs], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    return enc, labels


def test_tiny_marian_shares_embeddings_and_runs_forward(tokenizer, data) -> None:
    model = build_marian_preset("tiny", vocab_size=len(tokenizer), dropout=0.2)
    shared = model.model.shared.weight
    assert model.model.encoder.embed_tokens.weight is shared and model.model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared and model.config.dropout == 0.2
    enc, labels = _batch(tokenizer, data)
    out = model(**enc, labels=labels)
    assert out.logits.shape == (*labels.shape, len(tokenizer))
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert shared.grad is not None and shared.grad.abs().sum() > 0


def test_tiny_marian_generate_greedy_and_beam_with_cache(tokenizer, data) -> None:
    model = build_marian_preset("tiny", vocab_size=len(tokenizer)).eval()
    enc, _ = _batch(tokenizer, data)
    with torch.no_grad():
        cached = model.generate(**enc, num_beams=1, do_sample=False, max_new_tokens=8, use_cache=True)
        uncached = model.generate(**enc, num_beams=1, do_sample=False, max_new_tokens=8, use_cache=False)
        beam = model.generate(**enc, num_beams=3, num_return_sequences=2, max_new_tokens=8, use_cache=True)
    assert torch.equal(cached, uncached)  # the KV cache changes speed, not the result
    assert cached.shape[0] == 4 and cached.shape[1] <= 9 and (cached[:, 0] == tokenizer.bos_token_id).all()
    assert beam.shape[0] == 8 and beam.shape[1] <= 9
    texts = tokenizer.batch_decode(beam, skip_special_tokens=True)
    assert len(texts) == 8 and all(isinstance(t, str) for t in texts)


def test_save_and_load_round_trip_with_safetensors(tokenizer, data, tmp_path: Path) -> None:
    model = build_marian_preset("tiny", vocab_size=len(tokenizer)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    loaded = MarianMTModel.from_pretrained(tmp_path, use_safetensors=True).eval()
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.shared.weight
    assert loaded.generation_config.decoder_start_token_id == tokenizer.bos_token_id
    enc, _ = _batch(tokenizer, data)
    assert loaded_tok(["Der König sah das Brot."])["input_ids"] == tokenizer(["Der König sah das Brot."])["input_ids"]
    with torch.no_grad():
        assert torch.equal(model.generate(**enc, num_beams=2, max_new_tokens=6),
                           loaded.generate(**enc, num_beams=2, max_new_tokens=6))
        for name, param in model.state_dict().items():
            assert torch.equal(param, loaded.state_dict()[name]), name

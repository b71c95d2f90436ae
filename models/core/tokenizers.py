"""The byte-level BPE tokenizer shared by the sequence tasks (translation trains one; the tiny generation
model uses one too).

Token conventions: specials `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, fixed ids independent of the corpus;
`tokenizer(text)` appends `</s>`; byte-level pre-tokenization, so every input string encodes without
`<unk>` and `decode(..., skip_special_tokens=True)` returns the text exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # list order = ids 0..3


def train_joint_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on source and target texts together (one shared vocabulary, so
    names copied from English into German share ids and the embeddings can be tied).

    Deterministic: the texts are de-duplicated and sorted before training, so the same multiset of
    texts yields the same vocabulary and ids in any process regardless of input order or hash seed.
    The resulting vocabulary may be smaller than `vocab_size` on a small corpus; use `len(tokenizer)`.
    """
    corpus = sorted(set(texts))
    if not corpus:
        raise ValueError("no texts to train the tokenizer on")
    tokenizer = Tokenizer(BPE(unk_token=UNK))
    # NFC: the same umlaut may arrive precomposed or combining; one form keeps one set of merges.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever <unk>
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    eos_id = tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, eos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )

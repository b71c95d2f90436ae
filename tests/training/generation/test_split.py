"""Contiguous, paragraph-aligned held-out spans and token packing (synthetic text, no archives)."""

import pytest
import torch

from training.generation.split import (
    SPLITS,
    chunk_token_ids,
    snap_to_paragraph,
    split_documents,
    token_stream,
)


def _document(tag: str, paragraphs: int) -> str:
    return "\n\n".join(f"{tag}p{i} says something ordinary about the weather." for i in range(paragraphs))


DOCS = {f"Novel {d}": _document(f"N{d}", 200 + 37 * d) for d in range(4)}


def test_snap_to_paragraph_picks_the_nearest_paragraph_start() -> None:
    text = "aaaa\n\nbbbbbbbbbb\n\ncc"  # paragraph starts at 0, 6, 18; end 20
    assert [snap_to_paragraph(text, p) for p in (-3, 0, 2, 3, 4, 5, 6, 8, 12, 13, 19, 20, 99)] == [
        0, 0, 0, 0, 6, 6, 6, 6, 6, 18, 18, 20, 20]  # 3 and 12 are ties: left
    assert snap_to_paragraph("no breaks at all", 5) == 0 and snap_to_paragraph("no breaks at all", 12) == 16


def test_every_paragraph_lands_in_exactly_one_split_and_held_out_is_contiguous() -> None:
    split = split_documents(DOCS, 0.1, 0.1, seed=7)
    seen: dict[str, str] = {}
    for name in SPLITS:
        for segment in split.segments[name]:
            for paragraph in segment.split("\n\n"):
                assert paragraph not in seen, f"{paragraph!r} in {seen.get(paragraph)} and {name}"
                seen[paragraph] = name
    for title, text in DOCS.items():
        roles = [seen[p] for p in text.split("\n\n")]  # in document order
        runs = [r for i, r in enumerate(roles) if i == 0 or r != roles[i - 1]]
        assert runs in (["train", "validation", "test", "train"], ["validation", "test", "train"],
                        ["train", "validation", "test"]), (title, runs)
        for name in ("validation", "test"):
            assert roles.count(name) / len(roles) == pytest.approx(0.1, abs=0.02)


def test_split_is_deterministic_per_seed_and_per_document() -> None:
    a, b = split_documents(DOCS, 0.1, 0.05, seed=3), split_documents(DOCS, 0.1, 0.05, seed=3)
    assert a == b
    assert a.spans != split_documents(DOCS, 0.1, 0.05, seed=4).spans
    fewer = split_documents({k: v for k, v in DOCS.items() if k != "Novel 0"}, 0.1, 0.05, seed=3)
    assert set(fewer.spans) == {s for s in a.spans if s.document != "Novel 0"}  # others do not move


def test_record_and_sizes_describe_the_split() -> None:
    split = split_documents(DOCS, 0.2, 0.1, seed=0)
    chars = split.chars()
    assert chars["validation"] == pytest.approx(0.2 * sum(map(len, DOCS.values())), rel=0.05)
    tokens = split.token_counts(str.split)
    record = split.record(tokens)
    assert record["splits"]["test"] == {"segments": 4, "chars": chars["test"], "tokens": tokens["test"]}
    assert tokens["train"] == sum(len(s.split()) for s in split.segments["train"])
    assert set(record["held_out_spans"]) == set(DOCS)
    start, end = record["held_out_spans"]["Novel 2"]["test"]
    assert DOCS["Novel 2"][start:end].strip("\n") in split.segments["test"]
    assert "tokens" not in split.record()["splits"]["train"]


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_bad_fractions_are_refused(fractions: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_documents(DOCS, *fractions, seed=0)
    with pytest.raises(ValueError, match="no documents"):
        split_documents({}, 0.1, 0.1, seed=0)


def test_zero_fractions_keep_everything_in_train() -> None:
    split = split_documents(DOCS, 0.0, 0.0, seed=1)
    assert split.chars()["validation"] == split.chars()["test"] == 0
    assert "".join(split.segments["train"]).replace("\n", "") == "".join(DOCS.values()).replace("\n", "")


def test_token_stream_marks_seams_and_chunks_are_full_blocks() -> None:
    ids = token_stream(["a b c", "d e"], lambda s: [ord(c) for c in s.split()], eos_id=0)
    assert ids == [97, 98, 99, 0, 100, 101, 0]
    assert token_stream(["a b"], lambda s: [1, 2], eos_id=None) == [1, 2]
    blocks = chunk_token_ids(list(range(23)), block_size=5)
    assert blocks.dtype == torch.long and blocks.shape == (4, 5)
    assert blocks[1].tolist() == [5, 6, 7, 8, 9] and blocks.flatten().tolist() == list(range(20))
    assert chunk_token_ids([1, 2, 3], block_size=4).shape == (0, 4)
    with pytest.raises(ValueError, match="block_size"):
        chunk_token_ids([1, 2, 3], block_size=1)


def test_blocks_of_one_split_never_contain_held_out_text() -> None:
    vocab: dict[str, int] = {}

    def encode(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab) + 1) for w in text.split()]

    split = split_documents(DOCS, 0.1, 0.1, seed=11)
    blocks = {name: chunk_token_ids(token_stream(split.segments[name], encode, eos_id=0), 16) for name in SPLITS}
    inverse = {i: w for w, i in vocab.items()}
    # paragraph tags ("N2p17") are unique, so a shared tag would be a held-out paragraph inside a train block
    tags = {name: {inverse[i] for i in b.flatten().tolist() if i and inverse[i][:1] == "N"}
            for name, b in blocks.items()}
    assert tags["validation"] and tags["test"] and len(tags["train"]) > 8 * len(tags["test"])
    assert not (tags["train"] & (tags["validation"] | tags["test"])) and not (tags["validation"] & tags["test"])

"""The MC-lever spec shared by the levers tools (training/core/levers.py)."""

import pytest

from training.core.levers import Lever, parse_lever, parse_levers

BASE = Lever(samples=10, last_k=1, rate=None, sites=frozenset({"hidden"}))


def test_a_spec_replaces_only_the_keys_it_names() -> None:
    assert parse_lever("", BASE) == BASE
    assert parse_lever("k=all,T=30", BASE) == Lever(30, None, None, frozenset({"hidden"}))
    assert parse_lever("rate=0.05, sites=hidden+attention", BASE) == Lever(
        10, 1, 0.05, frozenset({"hidden", "attention"}))
    assert parse_lever("rate=job", parse_lever("rate=0.2", BASE)).rate is None


@pytest.mark.parametrize("spec", ["depth=3", "T=many", "T=0", "k=0", "rate=1.5", "rate=0", "sites=hidden+ffn"])
def test_a_bad_spec_is_refused_with_the_spec_named(spec: str) -> None:
    with pytest.raises(ValueError, match="lever"):
        parse_lever(spec, BASE)


def test_lever_arguments_are_named_specs_and_default_when_absent() -> None:
    assert parse_levers([], {"served": "", "T30": "T=30"}, BASE) == {"served": BASE, "T30": parse_lever("T=30", BASE)}
    assert parse_levers(["w=k=all,rate=0.05"], {"served": ""}, BASE) == {"w": Lever(10, None, 0.05, BASE.sites)}
    for bad in (["k=all"], ["=T=3"], ["noequals"]):
        with pytest.raises(ValueError, match="NAME=SPEC|lever"):
            parse_levers(bad, {}, BASE)

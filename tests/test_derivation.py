"""Fixture derivation that survives config validators (issue 17): per-layer lists are cut to the layers kept,
found by their length (whatever their name), lists of layer indices renumbered; where a validator refuses the
shrunk values, the ones it names are put back at their defaults, and where that does not help the problem names
the field and what would fix it. Plain configs stand in for a release's, so that these hold on every version."""

from __future__ import annotations

import pytest

from moe_conformance.cases.derived import DerivationError, validated_overrides
from moe_conformance.cases.tiny_config import tiny_overrides

LAYERS = 12
# A Kolibri-1.1-like layout: an indexed layer every 4th, the others sliding; an indexed layer may read the K/V
# of the first indexed one (kv_source_layers, one entry per layer naming a layer).
KINDS = ["indexed" if i % 4 == 0 else "sliding" for i in range(LAYERS)]
SOURCES = [0 if i % 4 == 0 else i for i in range(LAYERS)]


def _defaults(**more):
    return {"num_hidden_layers": LAYERS, "hidden_size": 2048, "head_dim": 128, "num_attention_heads": 16,
            "attention_kinds": list(KINDS), "kv_source_layers": list(SOURCES), "index_layers": [0, 4, 8], **more}


def test_per_layer_lists_are_cut_by_their_length_and_layer_indices_renumbered():
    out = tiny_overrides(_defaults())
    kept = out["num_hidden_layers"]
    # a name no rule knows (attention_kinds) is cut because of its length
    assert len(out["attention_kinds"]) == kept == len(out["kv_source_layers"]) == 3
    assert out["attention_kinds"] == ["indexed", "sliding", "sliding"]
    # layer 0 is kept: its readers keep reading it (renumbered); every other layer reads itself
    assert out["kv_source_layers"] == [0, 1, 2]
    assert out["index_layers"] == [0]


def test_a_per_layer_index_list_whose_source_is_not_kept_names_the_layer_itself():
    defaults = _defaults(attention_kinds=["sliding"] + ["indexed"] * (LAYERS - 1), kv_source_layers=[0] + [1] * (LAYERS - 1))
    out = tiny_overrides(defaults)
    assert len(out["kv_source_layers"]) == 3 and all(0 <= s <= i for i, s in enumerate(out["kv_source_layers"]))


class _Validating:
    """A config whose validator refuses a head_dim that is not a multiple of 16 (Kolibri-1.1's NVFP4 rule)."""

    def __init__(self, head_dim=128, hidden_size=2048, num_attention_heads=16, **_):
        if head_dim % 16:
            raise ValueError("NVFP4 rounding needs a `head_dim` that is a multiple of 16.")


class _Refusing:
    def __init__(self, head_dim=128, **_):
        if head_dim != 96:
            raise ValueError("`head_dim` must be 96.")


def test_a_refused_shrunk_value_is_put_back_at_its_default():
    overrides = {"head_dim": 8, "hidden_size": 32, "num_attention_heads": 4}
    assert validated_overrides(_Validating, _defaults(), overrides) == {"hidden_size": 32, "num_attention_heads": 4}


def test_a_refusal_no_default_satisfies_names_the_field_and_the_fix():
    with pytest.raises(DerivationError) as error:
        validated_overrides(_Refusing, _defaults(), {"head_dim": 8, "hidden_size": 32})
    message = str(error.value)
    assert "`head_dim` must be 96" in message and "names head_dim (default 128)" in message
    assert "a hand entry must set them to values the validator accepts" in message

"""The JSON reports' text is exactly what `json.dumps(..., indent=2)` writes (the report contract's
layout), whatever the values: the faster encoder the reports use for records must not drift."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.model import Severity
from analyzer.report.json import dumps

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


def standard(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_indented_text_is_the_standard_encoders(value: Any) -> None:
    assert dumps(value, indent=2) == standard(value)


@pytest.mark.parametrize("value", [
    {1: "a", None: [1]},  # keys json turns into strings
    {"severity": Severity.ERROR},  # an int subclass
])
def test_values_outside_the_fast_path_still_encode_as_the_standard_encoder(value: Any) -> None:
    assert dumps(value, indent=2) == standard(value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"gap_s": [bad]}, indent=2)

"""The one query validator (topic, parameter, service, pipeline/CLI) and log escaping (issue 10, items 3 and 6)."""

from __future__ import annotations

import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.user_text import (
    MAX_QUERY_CHARS,
    SPECIAL_TOKENS,
    escape_for_log,
    escape_inline,
    query_problem,
    validate_query,
)
from ivlm_ros.parameters import validate_parameter


@pytest.mark.parametrize("query", ["bottle", "tennis racket", "scene", "café table", "x" * MAX_QUERY_CHARS])
def test_ordinary_object_names_pass(query: str) -> None:
    assert query_problem(query) is None
    assert validate_query(f"  {query} ") == query


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        (None, "non-empty"),
        ("x" * (MAX_QUERY_CHARS + 1), f"at most {MAX_QUERY_CHARS} characters; got {MAX_QUERY_CHARS + 1}"),
        ("a" * 200_000, "got 200000"),
        ("mug\x1b[31m", "U+001B at position 3"),
        ("mug\rscene", "U+000D at position 3"),
        ("cup\nplate", "U+000A"),
        ("cup\u202egnp", "U+202E"),  # bidi override: a format character
        ("cup\x00", "U+0000"),
    ],
)
def test_bad_queries_are_refused_with_the_reason(query: object, fragment: str) -> None:
    reason = query_problem(query)
    assert reason is not None and fragment in reason, reason
    with pytest.raises(InvalidInputError, match="object query"):
        validate_query(query)


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_each_special_token_is_refused_by_name(token: str) -> None:
    for query in (token, f"the {token} mug", f"mug {token.upper()}"):
        reason = query_problem(query)
        assert reason is not None and "special tokens" in reason and token in reason, (query, reason)


def test_the_required_tokens_are_all_listed() -> None:
    required = {"<image>", "[SEG]", "[HSEG]", "[OSEG]", "<im_start>", "<im_end>", "<s>", "</s>", "<unk>"}
    assert required <= set(SPECIAL_TOKENS)


def test_the_parameter_uses_the_same_validator() -> None:
    for bad in ("<image>", "mug\x1b[2J", "y" * 101):
        assert validate_parameter("object_query", bad) == f"parameter 'object_query' {query_problem(bad)}"


def test_escaping_makes_control_characters_visible_and_bounds_length() -> None:
    hostile = "mug\x1b[31m\r[ERROR] forged\n\u202e"
    escaped = escape_for_log(hostile)
    assert not any(c in escaped for c in "\x1b\r\n\u202e")
    assert "\\x1b" in escaped and "\\r" in escaped and "\\n" in escaped and "\\u202e" in escaped
    inline = escape_inline(hostile)
    assert inline == escaped[1:-1]
    long = escape_for_log("z" * 1000, limit=50)
    assert long.endswith("(+950 characters)") and len(long) < 100
    assert escape_inline("plain text") == "plain text"

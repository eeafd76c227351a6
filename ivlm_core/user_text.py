"""Text that comes from users (object queries, frame ids, encodings): validated before the model sees it and
escaped before it reaches a log or a diagnostic.

One query validator serves every entry point (the node's topic, parameter and service, the pipeline and the
CLIs), so a query the topic refuses cannot slip in through the service: it caps the length (a 200 kB query is
~50k tokens and holds the model for seconds), refuses control characters, and refuses the model's special
tokens (``<image>`` as a query made every frame fail; ``[SEG]`` would forge a mask request).
"""

from __future__ import annotations

import unicodedata

from ivlm_core.errors import InvalidInputError

MAX_QUERY_CHARS = 100
# Tokens the InteractVLM tokenizer treats specially (LLaVA image tokens, the mask tokens, LLaMA's control
# tokens). Matched case-insensitively: none of them belongs in an object name.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<image>", "<im_patch>", "<im_start>", "<im_end>", "[SEG]", "[HSEG]", "[OSEG]", "<s>", "</s>", "<unk>",
)  # fmt: skip
_LOG_LIMIT = 200


def query_problem(query: object, max_chars: int = MAX_QUERY_CHARS) -> str | None:
    """Why ``query`` cannot be asked (None when it can); leading/trailing whitespace does not count."""
    if not isinstance(query, str) or not query.strip():
        return "must be a non-empty object name, e.g. 'bottle' (or 'scene' for ground contact)"
    query = query.strip()
    if len(query) > max_chars:
        return f"must be a short object name of at most {max_chars} characters; got {len(query)}"
    for index, char in enumerate(query):
        if unicodedata.category(char) in ("Cc", "Cf"):
            return (
                f"must not contain control or format characters; got U+{ord(char):04X} at position {index} "
                f"in {escape_for_log(query)}"
            )
    lowered = query.lower()
    found = [token for token in SPECIAL_TOKENS if token.lower() in lowered]
    if found:
        return (
            f"must not contain the model's special tokens ({', '.join(found)}); they steer the model "
            f"instead of naming an object: {escape_for_log(query)}"
        )
    return None


def validate_query(query: object, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The stripped query, or InvalidInputError('object query ...') with the reason."""
    reason = query_problem(query, max_chars)
    if reason:
        raise InvalidInputError(f"object query {reason}")
    return str(query).strip()


def escape_for_log(text: object, limit: int = _LOG_LIMIT) -> str:
    """``repr``-style escaped text in quotes, cut to ``limit`` characters: ANSI escapes, ``\\r``, newlines and
    bidi overrides arrive as visible ``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``, so no user string can forge or
    hide log lines."""
    value = str(text)
    extra = len(value) - limit
    if extra > 0:
        return f"{value[:limit]!r}... (+{extra} characters)"
    return repr(value)


def escape_inline(text: object, limit: int = _LOG_LIMIT) -> str:
    """:func:`escape_for_log` without the quotes, for text already embedded in a message (e.g. an error)."""
    value = str(text)
    escaped = repr(value[:limit])[1:-1]
    return escaped if len(value) <= limit else f"{escaped}... (+{len(value) - limit} characters)"

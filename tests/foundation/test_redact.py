"""Secrets are masked wherever drtool writes text."""

from __future__ import annotations

from drtool.redact import MASK, redact, redact_obj, register_secret


def test_registered_secret_is_masked_everywhere_in_text() -> None:
    register_secret("hunter2-very-secret")
    assert redact("password was hunter2-very-secret, again hunter2-very-secret") == f"password was {MASK}, again {MASK}"


def test_url_password_keyvalue_and_bearer_patterns_are_masked() -> None:
    text = "postgresql://app:pa55word@db:5432/dify password=abc123 Authorization: Bearer sk-live-42 api_key='xyz'"
    out = redact(text)
    for secret in ("pa55word", "abc123", "sk-live-42", "xyz"):
        assert secret not in out
    assert "postgresql://app:***@db:5432/dify" in out


def test_nested_structures_are_redacted() -> None:
    register_secret("nested-secret-value")
    assert redact_obj({"a": ["x nested-secret-value"], "b": 3}) == {"a": [f"x {MASK}"], "b": 3}

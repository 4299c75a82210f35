"""Only ASCII digits are numbers wherever a peer's text is read: ``str.isdigit()`` is also
true of "²" (a byte 0xB2 read as Latin-1) or "١", which ``int()`` then refuses."""

from __future__ import annotations

import pytest

from tickerd.feeds.mirror_state import retry_after as _retry_after


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "\uff11", " \u00b2 ", "1\u00b2"])
def test_mirror_retry_after_ignores_non_ascii_digits(value: str) -> None:
    assert _retry_after({"Retry-After": value}) is None
    assert _retry_after({"Retry-After": " 7 "}) == 7

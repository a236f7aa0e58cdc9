"""`interp.digest.digest`: the one digest every data set and the ranks' settings check use."""

from __future__ import annotations

import hashlib

from interp.digest import digest
from interp.distributed import settings_digest


def test_digest_of_bytes_text_and_json():
    assert digest(b"abc") == hashlib.sha256(b"abc").hexdigest()[:16]
    assert digest("abc") == digest(b"abc")  # text as UTF-8
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})  # key order does not matter
    assert digest({"a": 1}) != digest({"a": 2}) and len(digest([1])) == 16
    assert settings_digest({"x": (1, 2)}) == digest({"x": [1, 2]})  # the ranks compare the same digest

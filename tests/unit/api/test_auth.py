import base64

import pytest

from api.auth import hash_token, new_token, token_from_header


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        (_basic("admin", "tok:with:colons"), "tok:with:colons"),
        (_basic("anyone", ""), None),
        ("Basic !!!notbase64", None),
        ("Bearer ", None),
        ("Token abc", None),
        ("", None),
        (None, None),
    ],
)
def test_token_from_header(header, token):
    assert token_from_header(header) == token


def test_tokens_are_long_random_and_stored_hashed():
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 43  # 32 random bytes, url-safe base64
    assert hash_token(a) != a and len(hash_token(a)) == 64

"""Signed storage URLs: valid for one path until they expire."""

from __future__ import annotations

from urllib.parse import parse_qs

from api.signing import UrlSigner


def parts(signer: UrlSigner, path: str, now: float) -> tuple[str, str]:
    query = parse_qs(signer.query(path, now=now))
    return query["expires"][0], query["signature"][0]


def test_a_signature_holds_for_its_path_until_it_expires():
    signer = UrlSigner(b"k", ttl_s=60)
    expires, signature = parts(signer, "generations/t/result.png", now=1000)
    assert expires == "1060"
    assert signer.verify("generations/t/result.png", expires, signature, now=1059)
    assert not signer.verify("generations/t/result.png", expires, signature, now=1061)
    assert not signer.verify("generations/u/result.png", expires, signature, now=1000)
    assert not signer.verify("generations/t/result.png", "1999", signature, now=1000)
    assert not signer.verify("generations/t/result.png", expires, None, now=1000)
    assert not signer.verify("generations/t/result.png", "-5", signature, now=1000)
    assert not UrlSigner(b"other").verify("generations/t/result.png", expires, signature, now=1000)


def test_instances_sharing_an_admin_token_agree():
    a = UrlSigner.for_settings(None, "admin-token")
    b = UrlSigner.for_settings(None, "admin-token")
    expires, signature = parts(a, "x/y.png", now=0)
    assert b.verify("x/y.png", expires, signature, now=0)
    assert not UrlSigner.for_settings(None, "another").verify("x/y.png", expires, signature, now=0)
    assert UrlSigner.for_settings("explicit", "admin-token").verify(
        "x/y.png", *parts(UrlSigner(b"explicit"), "x/y.png", now=0), now=0
    )

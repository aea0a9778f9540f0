"""Test vectors quoted from RFC 9421 (Appendix B) and RFC 9530, with RFC 8792 `\\` line wrapping
undone. Each constant names the section it comes from; none is computed by our code.

The B.1.4 key is checked by the vectors themselves: Ed25519 is deterministic, so the B.2.6
signature can only be reproduced with exactly this private key.
"""

from __future__ import annotations

from typing import Final

# --- RFC 9421 B.1.4: test-key-ed25519 ------------------------------------------------------------

TEST_KEY_ED25519_ID: Final = "test-key-ed25519"
TEST_KEY_ED25519_PRIVATE_PEM: Final = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
TEST_KEY_ED25519_PUBLIC_PEM: Final = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""

# --- RFC 9421 B.2: the test-request message ------------------------------------------------------

CREATED: Final = 1618884473
"""The `created` of every B.2 example."""
REQUEST_METHOD: Final = "POST"
REQUEST_AUTHORITY: Final = "example.com"
REQUEST_PATH: Final = "/foo"
REQUEST_QUERY: Final = "param=Value&Pet=dog"
REQUEST_BODY: Final = b'{"hello": "world"}'
REQUEST_HEADERS: Final = {
    "host": "example.com",
    "date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "content-type": "application/json",
    "content-digest": (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    ),
    "content-length": "18",
}

# --- RFC 9421 B.2.6: Signing a Request Using ed25519 ---------------------------------------------

B26_BASE: Final = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@method": POST\n'
    b'"@path": /foo\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    b';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE_INPUT: Final = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE: Final = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)

# --- RFC 9421 B.2.1-B.2.5: the algorithms this protocol does not accept --------------------------

B21_SIGNATURE_INPUT: Final = (
    'sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"'
)
B21_SIGNATURE: Final = (
    "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopem"
    "LJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG"
    "52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx"
    "2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6"
    "UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3"
    "+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:"
)
B22_SIGNATURE_INPUT: Final = (
    'sig-b22=("@authority" "content-digest" "@query-param";name="Pet")'
    ';created=1618884473;keyid="test-key-rsa-pss";tag="header-example"'
)
B22_SIGNATURE: Final = (
    "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQ"
    "EdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT"
    "8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SA"
    "RYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd"
    "4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoK"
    "UqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==:"
)
B23_BASE: Final = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@method": POST\n'
    b'"@path": /foo\n'
    b'"@query": ?param=Value&Pet=dog\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX'
    b"+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n"
    b'"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type"'
    b' "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"'
)
B23_SIGNATURE_INPUT: Final = (
    'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest"'
    ' "content-length");created=1618884473;keyid="test-key-rsa-pss"'
)
B23_SIGNATURE: Final = (
    "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yB"
    "iMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fU"
    "xN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1"
    "pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9"
    "bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5Z"
    "JzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:"
)
# B.2.4 signs the test-response, whose own fields are these.
RESPONSE_STATUS: Final = 200
RESPONSE_HEADERS: Final = {
    "content-type": "application/json",
    "content-digest": (
        "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"
    ),
    "content-length": "23",
}
B24_SIGNATURE_INPUT: Final = (
    'sig-b24=("@status" "content-type" "content-digest" "content-length")'
    ';created=1618884473;keyid="test-key-ecc-p256"'
)
B24_SIGNATURE: Final = (
    "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NK"
    "ocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==:"
)
B25_BASE: Final = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"@signature-params": ("date" "@authority" "content-type")'
    b';created=1618884473;keyid="test-shared-secret"'
)
B25_SIGNATURE_INPUT: Final = (
    'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
)
B25_SIGNATURE: Final = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
TEST_SHARED_SECRET_B64: Final = (
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
"""B.1.5 test-shared-secret; checked by the B.2.5 HMAC, which only this secret reproduces."""

# --- RFC 9530 ------------------------------------------------------------------------------------

HELLO_WORLD: Final = b'{"hello": "world"}'
HELLO_WORLD_SHA_256: Final = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
HELLO_WORLD_SHA_512: Final = (
    "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=="
)
HELLO_WORLD_LF_CONTENT_DIGEST: Final = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
"""RFC 9530 B.1: `{"hello": "world"}` followed by an LF."""

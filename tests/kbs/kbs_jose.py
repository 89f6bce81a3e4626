#!/usr/bin/python3
"""JWE construction as trustee's KBS does it, written with Python's
`cryptography` (an implementation independent of our C++ code): the test KBS
encrypts resources with it and the C++ unit tests use its command line as a
vector generator.

  kbs_jose.py encrypt --jwk '<public JWK JSON>' --payload-hex HEX [--alg ALG] [--enc ENC]
prints a flattened JWE JSON object. --alg overrides the header's alg (to build
hostile inputs, e.g. RSA1_5); the key management follows the JWK's kty.
"""
import argparse
import base64
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def concat_kdf(z: bytes, alg: str, bits: int = 256) -> bytes:
    """RFC 7518 §4.6.2, one round of SHA-256 (enough for 256 bits)."""
    h = hashes.Hash(hashes.SHA256())
    h.update(struct.pack(">I", 1) + z)
    h.update(struct.pack(">I", len(alg)) + alg.encode())
    h.update(struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", bits))
    return h.finalize()[: bits // 8]


def encrypt_jwe(jwk: dict, payload: bytes, alg: str | None = None, enc: str = "A256GCM") -> dict:
    cek = AESGCM.generate_key(bit_length=256)
    if jwk.get("kty") == "EC":
        alg = alg or "ECDH-ES+A256KW"
        peer = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url_decode(jwk["x"]), "big"),
            int.from_bytes(b64url_decode(jwk["y"]), "big"),
            ec.SECP256R1(),
        ).public_key()
        eph = ec.generate_private_key(ec.SECP256R1())
        z = eph.exchange(ec.ECDH(), peer)
        kek = concat_kdf(z, "ECDH-ES+A256KW")
        encrypted_key = aes_key_wrap(kek, cek)
        nums = eph.public_key().public_numbers()
        epk = {"kty": "EC", "crv": "P-256", "x": b64url(nums.x.to_bytes(32, "big")),
               "y": b64url(nums.y.to_bytes(32, "big"))}
        header = {"alg": alg, "enc": enc, "epk": epk}
    elif jwk.get("kty") == "RSA":
        alg = alg or "RSA-OAEP-256"
        pub = rsa.RSAPublicNumbers(int.from_bytes(b64url_decode(jwk["e"]), "big"),
                                   int.from_bytes(b64url_decode(jwk["n"]), "big")).public_key()
        encrypted_key = pub.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                      algorithm=hashes.SHA256(), label=None))
        header = {"alg": alg, "enc": enc}
    else:
        raise ValueError("unsupported kty")
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, payload, protected.encode())
    return {"protected": protected, "encrypted_key": b64url(encrypted_key), "iv": b64url(iv),
            "ciphertext": b64url(sealed[:-16]), "tag": b64url(sealed[-16:])}


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encrypt")
    e.add_argument("--jwk", required=True)
    e.add_argument("--payload-hex", required=True)
    e.add_argument("--alg")
    e.add_argument("--enc", default="A256GCM")
    a = p.parse_args()
    print(json.dumps(encrypt_jwe(json.loads(a.jwk), bytes.fromhex(a.payload_hex), a.alg, a.enc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

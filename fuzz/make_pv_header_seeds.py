#!/usr/bin/python3
"""Writes the seed corpus of fuzz/pv_header_fuzz.cc into corpus/pv_header/.

Seed = 8 KiB of superblock slots, a mode byte (bit 0: the harness recomputes
the LUKS2 checksums, bit 1: integrity none), a LUKS2 header image. The
slots come from guest-agent/tests/pv_golden.py (MAC'd with the harness's key).
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "guest-agent", "tests"))
sys.dont_write_bytecode = True
import pv_golden  # noqa: E402

MD, KS = 16384, 16384
UUID = "10111213-1415-1617-1819-1a1b1c1d1e1f"


def luks_json(integrity=True):
    seg = {"type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
           "encryption": "aes-xts-plain64", "sector_size": 4096}
    if integrity:
        seg["integrity"] = {"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}
    return {"keyslots": {}, "tokens": {}, "segments": {"0": seg},
            "digests": {"0": {"type": "pbkdf2", "keyslots": [], "segments": ["0"], "hash": "sha256",
                              "iterations": 1000, "salt": "IwIfVn+r6aZ3zCEVulq5shL8xjUhPyRlMuVuKPOpRgA=",
                              "digest": "0QuEDL1nRlJxnC5JFDp7XeQszjiTmZy4HJNm0ChebW8="}},
            "config": {"json_size": str(MD - 4096), "keyslots_size": str(KS)}}


def header(primary, text):
    h = bytearray(MD)
    h[0:6] = b"LUKS\xba\xbe" if primary else b"SKUL\xba\xbe"
    struct.pack_into(">HQQ", h, 6, 2, MD, 2)
    h[24:35] = b"cocostorage"
    h[72:78] = b"sha256"
    h[104:168] = os.urandom(64)
    h[168:204] = UUID.encode()
    struct.pack_into(">Q", h, 256, 0 if primary else MD)
    h[4096:4096 + len(text)] = text
    h[448:480] = hashlib.sha256(bytes(h)).digest()
    return bytes(h)


def image(integrity=True):
    text = json.dumps(luks_json(integrity), separators=(",", ":")).encode()
    return header(True, text) + header(False, text) + bytes(KS)


def main():
    out = os.path.join(HERE, "corpus", "pv_header")
    os.makedirs(out, exist_ok=True)
    _, mac, kcv = pv_golden.derive(pv_golden.ROOT, "db-1", "hmac-sha256")
    slot = pv_golden.superblock(mac, kcv)
    zero = bytes(4096)
    seeds = {
        "blank_valid_luks": zero + zero + b"\0" + image(),
        "slot_a_valid_luks": slot + zero + b"\0" + image(),
        "both_slots_none_luks": slot + slot + b"\2" + image(False),
        "slot_b_fix_checksums": zero + slot + b"\1" + image()[:MD] + image()[:MD] + bytes(KS),
        "prefix_only": slot + zero,
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

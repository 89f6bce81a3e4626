#!/usr/bin/python3
"""A test Key Broker Service that speaks trustee's KBS protocol 0.4.0 (RCAR:
auth -> attest -> resource) closely enough that our guest agent's C++ client can
be tested against it, and counted. Python stdlib + `cryptography` only.

Usage
-----
  test_kbs.py --listen 127.0.0.1:0 --port-file PATH --config CONFIG.json
              [--tls-cert PEM --tls-key PEM] [--log PATH] [--verbose]
      Binds (port 0 = ephemeral; "[::1]:0" for IPv6), then writes the bound port
      (decimal, with a newline) to PATH atomically (PATH.tmp + rename) once the
      socket is listening. With --tls-cert/--tls-key it serves HTTPS only.
      Serves until SIGTERM or SIGINT, then exits 0. A bad config or bad
      arguments exit 2 before anything is written to the port file.
      --log PATH appends one JSON object per request and line:
        {"ts": <unix time>, "method": "POST", "path": "/kbs/v0/auth",
         "status": 200, "error": null | "<error Variant>",
         "session": null | "<first 8 hex of the session id>", "reason": "..."}
      ("session": the request's kbs-session-id cookie, or for a successful auth the
      new session; "reason": why it failed, in more words than the reply's detail).
      A test counts handshakes as lines with path /kbs/v0/auth and status 200. Each
      line is written before the reply is sent, so a client that got its reply
      finds its line (and its /_test/stats count) already there.

  test_kbs.py gen-cert --out-dir DIR [--host 127.0.0.1 --host 10.0.2.2 --host name ...]
      Writes DIR/ca.pem (self-signed CA), DIR/server.pem and DIR/server.key
      (PKCS#8, unencrypted, mode 0600): an EC P-256 server certificate issued by
      that CA with one SAN per --host (IP address when it parses as one,
      otherwise a DNS name; default: 127.0.0.1 and localhost), valid 1 day in
      the past to 365 days ahead. Clients use ca.pem as their CA bundle.

Config (JSON object; every key is optional; unknown keys are an error)
----------------------------------------------------------------------
  {
    "resources": {"repo/type/tag": {"hex": "00ff.."} | {"base64": "<std b64>"} | {"text": "utf-8"}},
    "session_ttl_seconds": 300,        # number > 0; sessions (cookies) expire after it
    "token_ttl_seconds": 300,          # number > 0; the JWT's exp = ceil(now + this)
    "allowed_tees": ["sample"],        # tee names accepted by /auth
    "policy": {
      "default": "allow" | "deny",     # when no rule matches (default "allow")
      "rules": [                       # first rule whose "resource" matches decides
        {"resource": "repo/type/tag" | "repo/type/*" (fnmatch glob, case-sensitive),
         "allow": true | false,        # false: deny outright (default true)
         # with allow=true the request is allowed only if ALL of these given hold:
         "require_tee": "sample",
         "require_svn": "1",                    # the sample evidence's svn string
         "require_init_data_digest": "<hex>",   # case-insensitive; no init-data = mismatch
         "require_init_data_claims": {"key": "value"}}  # the init-data [data] table
      ]},
    "admin": false,                    # true enables the /_test/ endpoints below
    "policy_deny_status": 401,         # 401 (the reference doc) or 403 (newer trustee main)
    "resource_path_check": "early"     # "early" | "trustee", see "Resource path" below
  }
  Resource keys must be valid repo/type/tag paths (see below).

Test-control endpoints (only with "admin": true; otherwise 404; never under /kbs/)
  POST /_test/config            body: a config object; every top-level key present
                                replaces that key (so "resources" replaces the
                                whole set; "admin" cannot be changed);
                                validated like the file; 200 {"ok": true} or 400.
  POST /_test/expire-sessions   every session expires now and the token signing key
                                is rotated, so every cookie and every issued token is
                                refused from now on; 200 {"expired": <n sessions
                                that were live>}. Clients must handshake again.
  GET  /_test/stats             200 {"auth": {"<status>": n, ...}, "attest": {...},
                                "resource": {...}, "other": {...},
                                "sessions_created": n, "attested": n}.

Protocol (what it does, following trustee's kbs/src: api_server.rs,
attestation/backend.rs, attestation/session.rs, error.rs, plugins/.../resource)
---------------------------------------------------------------------------
Errors are {"type": "https://github.com/confidential-containers/kbs/errors/<Variant>",
"detail": "..."} with status 401, except InvalidRequestPath and PluginNotFound (404)
and PolicyDeny (policy_deny_status).

POST /kbs/v0/auth  {"version", "tee", "extra-params"?}
  version must parse as semver and equal 0.4.0 (trustee: VersionReq "=0.4.0");
  tee must be a known TEE name and in allowed_tees. Any failure: 401
  AttestationError, detail "Attestation error: RCAR handshake Auth failed: <why>".
  200: Set-Cookie "kbs-session-id=<32 hex>; Expires=<IMF-fixdate>" and
  {"nonce": "<std base64 of 32 random bytes>", "extra-params": ""}.
POST /kbs/v0/attest  with the cookie and
  {"init-data": null | {"format": "toml", "body": "<TOML>"},   (may be absent)
   "runtime-data": {"nonce": "<the nonce>", "tee-pubkey": <JWK>},
   "tee-evidence": {"primary_evidence": <JSON>, "additional_evidence": "<string>"}}
  Checked: cookie names a live session (an already attested one gets its old token
  back, as in trustee); the JSON shape (no missing, mistyped, duplicate or unknown
  members); nonce equals the session's; JWK members are exactly {kty,crv,alg,x,y}
  (EC, P-256, ECDH-ES+A256KW, 32-byte base64url coordinates on the curve) or
  exactly {kty,alg,n,e} (RSA >= 2048 bits, RSA-OAEP-256); RSA1_5 and every other
  alg are refused; additional_evidence must be "" (see below); the evidence is
  verified for the session's TEE (only "sample": {"svn": "<string>",
  "report_data": "<std base64>"}, other members ignored as serde does) with
  report_data == SHA-384(JCS({"additional-evidence": <additional_evidence>,
  "nonce": <nonce>, "tee-pubkey": <JWK>})); init-data (if given): format "toml",
  body parses (tomllib) with string "version", "algorithm" in sha256/sha384/sha512
  and an optional [data] table of strings; digest = that hash of the body's UTF-8
  bytes. Failure: 401 AttestationError. Success: 200 {"token": "<JWT>"} and the
  cookie again; the session is attested.
  The JWT is ES256 (P-256 key generated at start), header {"alg":"ES256","typ":"JWT"},
  claims {"iss": "test-kbs", "iat", "exp" (integer, ceil(now + token_ttl_seconds)),
  "jti", "tee", "tee-pubkey": <JWK>, "evidence": {"svn", "report_data"}, "init_data": <hex digest> | null,
  "init_data_algorithm": ... | null, "init_data_claims": {<[data] table>}}.
GET /kbs/v0/resource/<repo>/<type>/<tag>
  In trustee's order: token from the cookie's session if it is live and attested,
  else from "Authorization: Bearer <JWT>", else 401 TokenNotFound; the token's
  signature (current key) and exp are checked, else 401 TokenVerifierError; the
  policy, else PolicyDeny; the resource must exist, else 401 PluginInternalError
  (a missing resource is 401, as in trustee); 200 with a flattened JWE (A256GCM)
  of the bytes, to the token's tee-pubkey (kbs_jose.encrypt_jwe).
  Resource path: exactly three segments, each matching
  [a-zA-Z0-9_\\-]+[a-zA-Z0-9_\\-\\.]* . With "resource_path_check": "early" (the
  default, what the reference doc describes) a bad path is 404 InvalidRequestPath
  before any token check. With "trustee" it behaves as trustee's code really does:
  a bad path gets through the token and policy checks and then fails in the
  resource plugin as 401 PluginInternalError (trustee never sends
  InvalidRequestPath for a resource path).
Other /kbs/v0/<x> (GET or POST, e.g. GET /kbs/v0/auth): 404 PluginNotFound. POST
/kbs/v0/resource/...: 401 AdminAuth (trustee wants an admin token; we have none).
Other methods: 405. Paths outside /kbs/v0/ and /_test/: 404 with an empty body.

Where it is simpler than (or differs from) trustee
--------------------------------------------------
- No attestation service, RVPS or reference values: only the "sample" TEE's
  evidence is verified, and only by the report-data binding (as trustee's sample
  verifier does). Other TEEs in allowed_tees pass /auth but always fail /attest.
  allowed_tees is checked at /auth; trustee refuses a TEE later, in the AS policy.
- The sample TEE has no launch-time init-data field, so the init-data digest is
  not bound to anything in the evidence (trustee's sample verifier skips it too);
  it only feeds the policy.
- additional_evidence other than "" (trustee: a JSON map of further TEE evidence,
  each verified) is refused.
- The resource policy is the JSON rule list above, not Rego/OPA; its input is
  our own token's claims, not an EAR/CoCo-AS token.
- The token is our own ES256 JWT with the flat claims above (trustee's AS issues
  an EAR token with nested claims); it is only valid at this server.
- Strictness: trustee's serde ignores unknown JSON members and would take a JWK
  with extra members (which then breaks the report-data binding); we refuse them
  outright. The RSA-size floor (2048) is ours.
- Error details: for a failed /attest trustee sends only "Attestation error: RCAR
  handshake Attest failed" and logs the reason; we append ": <reason>". Detail
  strings for the other variants follow trustee's messages. Variant names are
  taken from trustee's kbs/src/error.rs (AttestationError, TokenNotFound,
  TokenVerifierError, PolicyDeny, PluginNotFound, PluginInternalError,
  InvalidRequestPath). "AdminAuth" is the older trustee's name (newer:
  AdminAuthAccess).
- PolicyDeny: the reference doc says 401; trustee main's error.rs now maps it to
  403 Forbidden. Hence policy_deny_status.
- The list of known TEE names is a guess spanning kbs-types versions (sample,
  sampledevice, snp, sev, sgx, tdx, cca, csv, se, hygondcu, tpm, nvidia, system,
  az-snp-vtpm / azsnpvtpm, az-tdx-vtpm / aztdxvtpm).
- TTLs are in seconds (trustee: minutes); sessions live in memory.
- The version check accepts exactly the string "0.4.0" (trustee's semver "=0.4.0"
  would also accept e.g. "0.4.0+build").
- HTTP/1.1 with keep-alive, request bodies by Content-Length or chunked, at most
  2 MiB (trustee's default payload limit).

JCS: jcs() below is an independent RFC 8785 implementation for what occurs here
(objects, arrays, strings, integers, booleans, null; members sorted by UTF-16
code units; floats refused). For these shapes (ASCII keys, no floats) it equals
json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False); the
self-test checks both against the reference doc's check value.
"""
import argparse
import base64
import binascii
import datetime
import email.utils
import fnmatch
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import tomllib
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.dont_write_bytecode = True  # run from the source tree: leave no __pycache__ there
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kbs_jose import b64url, b64url_decode, encrypt_jwe  # noqa: E402

PROTOCOL_VERSION = "0.4.0"
ERROR_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
COOKIE_NAME = "kbs-session-id"
MAX_BODY = 2 * 1024 * 1024


def dumps(v) -> bytes:
    """Compact JSON, as serde_json::to_string writes it."""
    return json.dumps(v, separators=(",", ":")).encode()
KNOWN_TEES = {"sample", "sampledevice", "snp", "sev", "sgx", "tdx", "cca", "csv", "se",
              "hygondcu", "tpm", "nvidia", "system", "az-snp-vtpm", "azsnpvtpm",
              "az-tdx-vtpm", "aztdxvtpm"}
SEGMENT_RE = re.compile(r"[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*")
B64URL_RE = re.compile(r"[A-Za-z0-9_\-]*")
INIT_DATA_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
CONFIG_KEYS = {"resources", "session_ttl_seconds", "token_ttl_seconds", "allowed_tees", "policy",
               "admin", "policy_deny_status", "resource_path_check"}
RULE_KEYS = {"resource", "allow", "require_tee", "require_svn", "require_init_data_digest",
             "require_init_data_claims"}


# ----------------------------------------------------------------------------- JCS

def _jcs_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF:
            raise ValueError("lone surrogate in string")
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value) -> str:
    """RFC 8785 canonical JSON of value (no floats)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2 ** 53:
            raise ValueError("integer outside the IEEE-754 exact range")
        return str(value)
    if isinstance(value, float):
        raise ValueError("floats are not supported by this JCS")
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value.keys(), key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError("not a JSON value: %r" % type(value))


def sample_report_data(nonce: str, jwk: dict, additional_evidence: str = "") -> bytes:
    doc = {"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": jwk}
    return hashlib.sha384(jcs(doc).encode("utf-8")).digest()


# ----------------------------------------------------------------------------- errors

class KbsError(Exception):
    def __init__(self, variant: str, detail: str, status: int = 401, reason: str = ""):
        super().__init__(detail)
        self.variant = variant
        self.detail = detail
        self.status = status
        self.reason = reason or detail


class ShapeError(ValueError):
    pass


def _loads_strict(raw: bytes):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ShapeError("duplicate member %r" % k)
            d[k] = v
        return d

    def no_const(name):
        raise ShapeError("non-JSON number %s" % name)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ShapeError("body is not UTF-8") from e
    try:
        return json.loads(text, object_pairs_hook=hook, parse_constant=no_const)
    except json.JSONDecodeError as e:
        raise ShapeError("invalid JSON: %s" % e) from e


def _expect_obj(v, what, required, optional=()):
    if not isinstance(v, dict):
        raise ShapeError("%s must be an object" % what)
    missing = [k for k in required if k not in v]
    if missing:
        raise ShapeError("%s: missing member(s) %s" % (what, ", ".join(missing)))
    extra = sorted(set(v) - set(required) - set(optional))
    if extra:
        raise ShapeError("%s: unknown member(s) %s" % (what, ", ".join(extra)))
    return v


def _expect_str(v, what):
    if not isinstance(v, str):
        raise ShapeError("%s must be a string" % what)
    return v


# ----------------------------------------------------------------------------- config

def _decode_resource(name, spec):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("resource %s: want exactly one of hex, base64, text" % name)
    (kind, val), = spec.items()
    if not isinstance(val, str):
        raise ValueError("resource %s: %s must be a string" % (name, kind))
    if kind == "hex":
        return bytes.fromhex(val)
    if kind == "base64":
        return base64.b64decode(val, validate=True)
    if kind == "text":
        return val.encode("utf-8")
    raise ValueError("resource %s: unknown encoding %r" % (name, kind))


def valid_resource_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 3 and all(SEGMENT_RE.fullmatch(p) for p in parts)


def _check_policy(policy):
    if not isinstance(policy, dict) or set(policy) - {"default", "rules"}:
        raise ValueError("policy: want an object with default and rules")
    if policy.get("default", "allow") not in ("allow", "deny"):
        raise ValueError("policy.default must be allow or deny")
    rules = policy.get("rules", [])
    if not isinstance(rules, list):
        raise ValueError("policy.rules must be a list")
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or "resource" not in r or set(r) - RULE_KEYS:
            raise ValueError("policy.rules[%d]: want resource and only %s" % (i, sorted(RULE_KEYS)))
        if not isinstance(r["resource"], str) or not isinstance(r.get("allow", True), bool):
            raise ValueError("policy.rules[%d]: resource must be a string, allow a boolean" % i)
        for k in ("require_tee", "require_svn", "require_init_data_digest"):
            if k in r and not isinstance(r[k], str):
                raise ValueError("policy.rules[%d].%s must be a string" % (i, k))
        if "require_init_data_digest" in r:
            bytes.fromhex(r["require_init_data_digest"])
        c = r.get("require_init_data_claims", {})
        if not isinstance(c, dict) or not all(isinstance(v, str) for v in c.values()):
            raise ValueError("policy.rules[%d].require_init_data_claims: want string values" % i)
    return {"default": policy.get("default", "allow"), "rules": rules}


def apply_config(base: dict, new: dict, allow_admin: bool) -> dict:
    """Validate `new` and return base with its keys replaced."""
    if not isinstance(new, dict):
        raise ValueError("config must be a JSON object")
    unknown = set(new) - CONFIG_KEYS
    if unknown:
        raise ValueError("unknown config key(s): %s" % ", ".join(sorted(unknown)))
    if "admin" in new and not allow_admin:
        raise ValueError("admin cannot be changed at runtime")
    cfg = dict(base)
    if "resources" in new:
        if not isinstance(new["resources"], dict):
            raise ValueError("resources must be an object")
        res = {}
        for name, spec in new["resources"].items():
            if not valid_resource_path(name):
                raise ValueError("resource name %r is not repo/type/tag" % name)
            res[name] = _decode_resource(name, spec)
        cfg["resources"] = res
    for k in ("session_ttl_seconds", "token_ttl_seconds"):
        if k in new:
            v = new[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError("%s must be a positive number" % k)
            cfg[k] = float(v)
    if "allowed_tees" in new:
        t = new["allowed_tees"]
        if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
            raise ValueError("allowed_tees must be a list of strings")
        cfg["allowed_tees"] = list(t)
    if "policy" in new:
        cfg["policy"] = _check_policy(new["policy"])
    if "admin" in new:
        if not isinstance(new["admin"], bool):
            raise ValueError("admin must be a boolean")
        cfg["admin"] = new["admin"]
    if "policy_deny_status" in new:
        if new["policy_deny_status"] not in (401, 403):
            raise ValueError("policy_deny_status must be 401 or 403")
        cfg["policy_deny_status"] = new["policy_deny_status"]
    if "resource_path_check" in new:
        if new["resource_path_check"] not in ("early", "trustee"):
            raise ValueError("resource_path_check must be early or trustee")
        cfg["resource_path_check"] = new["resource_path_check"]
    return cfg


DEFAULT_CONFIG = {"resources": {}, "session_ttl_seconds": 300.0, "token_ttl_seconds": 300.0,
                  "allowed_tees": ["sample"], "policy": {"default": "allow", "rules": []},
                  "admin": False, "policy_deny_status": 401, "resource_path_check": "early"}


# ----------------------------------------------------------------------------- JWK / JWT

def parse_tee_pubkey(jwk):
    """Validate the JWK strictly; return the cryptography public key."""
    if not isinstance(jwk, dict):
        raise ShapeError("tee-pubkey must be an object")
    kty = jwk.get("kty")
    if kty == "EC":
        _expect_obj(jwk, "tee-pubkey (EC)", ("kty", "crv", "alg", "x", "y"))
        if jwk["crv"] != "P-256":
            raise ShapeError("tee-pubkey: crv must be P-256")
        if jwk["alg"] != "ECDH-ES+A256KW":
            raise ShapeError("tee-pubkey: alg %r refused (want ECDH-ES+A256KW)" % jwk["alg"])
        coords = []
        for c in ("x", "y"):
            v = _expect_str(jwk[c], "tee-pubkey." + c)
            if not B64URL_RE.fullmatch(v):
                raise ShapeError("tee-pubkey.%s is not unpadded base64url" % c)
            raw = b64url_decode(v)
            if len(raw) != 32:
                raise ShapeError("tee-pubkey.%s must be 32 bytes, got %d" % (c, len(raw)))
            coords.append(int.from_bytes(raw, "big"))
        try:
            return ec.EllipticCurvePublicNumbers(coords[0], coords[1], ec.SECP256R1()).public_key()
        except ValueError as e:
            raise ShapeError("tee-pubkey: point not on P-256") from e
    if kty == "RSA":
        _expect_obj(jwk, "tee-pubkey (RSA)", ("kty", "alg", "n", "e"))
        if jwk["alg"] == "RSA1_5":
            raise ShapeError("tee-pubkey: RSA1_5 is deprecated and refused")
        if jwk["alg"] != "RSA-OAEP-256":
            raise ShapeError("tee-pubkey: alg %r refused (want RSA-OAEP-256)" % jwk["alg"])
        vals = []
        for c in ("n", "e"):
            v = _expect_str(jwk[c], "tee-pubkey." + c)
            if not v or not B64URL_RE.fullmatch(v):
                raise ShapeError("tee-pubkey.%s is not unpadded base64url" % c)
            vals.append(int.from_bytes(b64url_decode(v), "big"))
        n, e = vals
        if n.bit_length() < 2048:
            raise ShapeError("tee-pubkey: RSA modulus under 2048 bits")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as ex:
            raise ShapeError("tee-pubkey: bad RSA key: %s" % ex) from ex
    raise ShapeError("tee-pubkey: kty must be EC or RSA")


class TokenSigner:
    def __init__(self):
        self.rotate()

    def rotate(self):
        self.key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, claims: dict) -> str:
        header = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        der = self.key.sign((header + "." + body).encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return header + "." + body + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify(self, token: str) -> dict:
        """Return the claims or raise ValueError."""
        parts = token.split(".")
        if len(parts) != 3 or not all(B64URL_RE.fullmatch(p) for p in parts):
            raise ValueError("not a compact JWS")
        header = json.loads(b64url_decode(parts[0]))
        if not isinstance(header, dict) or header.get("alg") != "ES256":
            raise ValueError("alg must be ES256")
        sig = b64url_decode(parts[2])
        if len(sig) != 64:
            raise ValueError("bad signature length")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            self.key.public_key().verify(der, (parts[0] + "." + parts[1]).encode(),
                                         ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as e:
            raise ValueError("bad signature") from e
        claims = json.loads(b64url_decode(parts[1]))
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), (int, float)):
            raise ValueError("claims without exp")
        if claims["exp"] <= time.time():
            raise ValueError("token expired")
        return claims


# ----------------------------------------------------------------------------- state

class Session:
    def __init__(self, sid, tee, nonce, expires):
        self.id = sid
        self.tee = tee
        self.nonce = nonce
        self.expires = expires
        self.token = None  # set once attested

    def expired(self):
        return self.expires <= time.time()

    def cookie(self):
        return "%s=%s; Expires=%s" % (COOKIE_NAME, self.id,
                                      email.utils.formatdate(self.expires, usegmt=True))


class KbsState:
    def __init__(self, config: dict, log_path=None):
        self.lock = threading.Lock()
        self.config = config
        self.sessions = {}
        self.signer = TokenSigner()
        self.stats = {"auth": {}, "attest": {}, "resource": {}, "other": {},
                      "sessions_created": 0, "attested": 0}
        self.log_file = open(log_path, "a", buffering=1) if log_path else None

    def record(self, method, path, status, error, session, reason):
        area = "other"
        for a in ("auth", "attest", "resource"):
            if path == "/kbs/v0/" + a or path.startswith("/kbs/v0/" + a + "/"):
                area = a
        with self.lock:
            c = self.stats[area]
            c[str(status)] = c.get(str(status), 0) + 1
            if self.log_file:
                self.log_file.write(json.dumps({
                    "ts": round(time.time(), 3), "method": method, "path": path, "status": status,
                    "error": error, "session": session[:8] if session else None,
                    "reason": reason}) + "\n")


# ----------------------------------------------------------------------------- handlers

def attest_error(reason):
    return KbsError("AttestationError", "Attestation error: RCAR handshake Attest failed: " + reason,
                    reason=reason)


def auth_error(reason):
    return KbsError("AttestationError", "Attestation error: RCAR handshake Auth failed: " + reason,
                    reason=reason)


def parse_init_data(init):
    """Return (algorithm, hex digest, data table) or (None, None, {})."""
    if init is None:
        return None, None, {}
    _expect_obj(init, "init-data", ("format", "body"))
    if init["format"] != "toml":
        raise ShapeError("init-data.format must be toml")
    body = _expect_str(init["body"], "init-data.body")
    try:
        doc = tomllib.loads(body)
    except tomllib.TOMLDecodeError as e:
        raise ShapeError("init-data.body is not TOML: %s" % e) from e
    if not isinstance(doc.get("version"), str):
        raise ShapeError("init-data: version must be a string")
    alg = doc.get("algorithm")
    if alg not in INIT_DATA_HASHES:
        raise ShapeError("init-data: algorithm must be sha256, sha384 or sha512")
    data = doc.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ShapeError("init-data: [data] must map strings to strings")
    return alg, INIT_DATA_HASHES[alg](body.encode("utf-8")).hexdigest(), data


def policy_allows(policy, resource, claims):
    for rule in policy["rules"]:
        if not fnmatch.fnmatchcase(resource, rule["resource"]):
            continue
        if not rule.get("allow", True):
            return False
        if "require_tee" in rule and claims.get("tee") != rule["require_tee"]:
            return False
        if "require_svn" in rule and (claims.get("evidence") or {}).get("svn") != rule["require_svn"]:
            return False
        if "require_init_data_digest" in rule:
            have = (claims.get("init_data") or "").lower()
            if have != rule["require_init_data_digest"].lower():
                return False
        have_claims = claims.get("init_data_claims") or {}
        for k, v in rule.get("require_init_data_claims", {}).items():
            if have_claims.get(k) != v:
                return False
        return True
    return policy["default"] == "allow"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-kbs/0.4.0"
    timeout = 30

    # -- plumbing

    def setup(self):
        super().setup()
        self.tls_failed = False
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self.tls_failed = True
                if self.server.verbose:
                    sys.stderr.write("test-kbs: TLS handshake failed: %s\n" % e)

    def handle(self):
        if self.tls_failed:
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout):
            pass

    def finish(self):
        try:
            super().finish()
        except (ssl.SSLError, OSError):
            pass

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("test-kbs: %s\n" % (fmt % args))

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise KbsError("SerdeError", "payload too large", status=413)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise KbsError("SerdeError", "payload too large", status=413)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status, body: bytes = b"", ctype="application/json", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def cookie_session_id(self):
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE_NAME and value:
                    return value.strip('"')
        return None

    # -- dispatch

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def dispatch(self):
        st: KbsState = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        self.session_for_log = self.cookie_session_id()
        error, reason, headers = None, "", ()
        try:
            try:
                body = self.read_body() if self.command in ("POST", "PUT") else b""
            except ValueError:
                raise KbsError("SerdeError", "bad request body framing", status=400)
            if path.startswith("/kbs/v0/"):
                status, payload, headers = self.kbs(st, path[len("/kbs/v0/"):], body)
            elif path == "/_test" or path.startswith("/_test/"):
                with st.lock:
                    admin = st.config["admin"]
                if not admin:
                    status, payload = 404, b""
                else:
                    status, payload, headers = self.admin(st, path, body)
            else:
                status, payload = 404, b""
        except KbsError as e:
            status, error, reason, headers = e.status, e.variant, e.reason, ()
            payload = dumps({"type": ERROR_PREFIX + e.variant, "detail": e.detail})
        except Exception as e:  # a bug here must still answer
            status, error, reason, headers = 500, "Internal", repr(e), ()
            payload = dumps({"type": ERROR_PREFIX + "Internal", "detail": repr(e)})
        # counted and logged before the reply, so a client sees its own requests in both
        st.record(self.command, path, status, error, self.session_for_log, reason)
        self.send(status, payload, headers=headers)

    def kbs(self, st, rest, body):
        base, _, additional = rest.partition("/")
        m = self.command
        if m not in ("GET", "POST"):
            return 405, b"", ()
        if base == "auth" and not additional and m == "POST":
            return self.auth(st, body)
        if base == "attest" and not additional and m == "POST":
            return self.attest(st, body)
        if base == "resource":
            if m == "POST":
                raise KbsError("AdminAuth", "Admin auth error: the test KBS has no admin API")
            return self.resource(st, additional)
        raise KbsError("PluginNotFound", "Plugin %s not found" % base, status=404)

    # -- protocol

    def auth(self, st, body):
        try:
            req = _loads_strict(body)
            _expect_obj(req, "Request", ("version", "tee"), ("extra-params",))
            version = _expect_str(req["version"], "version")
            tee = _expect_str(req["tee"], "tee")
        except ShapeError as e:
            raise auth_error("deserialize Request: %s" % e)
        if tee not in KNOWN_TEES:
            raise auth_error("deserialize Request: unknown variant `%s`" % tee)
        if not re.fullmatch(r"\d+\.\d+\.\d+([-+].*)?", version):
            raise auth_error("failed to parse KBS version")
        if version != PROTOCOL_VERSION:
            raise auth_error("KBS Client Protocol Version Mismatch: expect =%s while the request is %s"
                             % (PROTOCOL_VERSION, version))
        with st.lock:
            if tee not in st.config["allowed_tees"]:
                raise auth_error("tee `%s` is not allowed by this test KBS" % tee)
            s = Session(uuid.uuid4().hex, tee, base64.b64encode(secrets.token_bytes(32)).decode(),
                        time.time() + st.config["session_ttl_seconds"])
            st.sessions[s.id] = s
            st.stats["sessions_created"] += 1
            for k in [k for k, v in st.sessions.items() if v.expired()]:
                del st.sessions[k]
        self.session_for_log = s.id
        return 200, dumps({"nonce": s.nonce, "extra-params": ""}), \
            (("Set-Cookie", s.cookie()),)

    def attest(self, st, body):
        sid = self.cookie_session_id()
        if not sid:
            raise attest_error("cookie not found")
        try:
            att = _loads_strict(body)
        except ShapeError as e:
            raise attest_error("deserialize Attestation: %s" % e)
        with st.lock:
            s = st.sessions.get(sid)
            if s is None:
                raise attest_error("No cookie found")
            if s.expired():
                raise attest_error("session expired.")
            if s.token is not None:
                return 200, dumps({"token": s.token}), (("Set-Cookie", s.cookie()),)
            tee, nonce = s.tee, s.nonce
            token_ttl = st.config["token_ttl_seconds"]
        try:
            _expect_obj(att, "Attestation", ("runtime-data", "tee-evidence"), ("init-data",))
            rd = _expect_obj(att["runtime-data"], "runtime-data", ("nonce", "tee-pubkey"))
            te = _expect_obj(att["tee-evidence"], "tee-evidence",
                             ("primary_evidence", "additional_evidence"))
            _expect_str(rd["nonce"], "runtime-data.nonce")
            add_ev = _expect_str(te["additional_evidence"], "tee-evidence.additional_evidence")
            jwk = rd["tee-pubkey"]
            parse_tee_pubkey(jwk)
            init_alg, init_digest, init_claims = parse_init_data(att.get("init-data"))
        except ShapeError as e:
            raise attest_error("deserialize Attestation: %s" % e)
        if rd["nonce"] != nonce:
            raise attest_error("the nonce in the handshake session is different from the client "
                               "side in KBS protocol's Attestation message")
        if add_ev != "":
            raise attest_error("additional_evidence is not supported by the test KBS")
        evidence = self.verify_evidence(tee, te["primary_evidence"], nonce, jwk, add_ev)
        now = time.time()
        # exp is an integer NumericDate, never earlier than now + token_ttl_seconds
        claims = {"iss": "test-kbs", "iat": int(now), "exp": math.ceil(now + token_ttl),
                  "jti": uuid.uuid4().hex, "tee": tee, "tee-pubkey": jwk, "evidence": evidence,
                  "init_data": init_digest, "init_data_algorithm": init_alg,
                  "init_data_claims": init_claims}
        with st.lock:
            token = st.signer.sign(claims)
            s = st.sessions.get(sid)
            if s is None or s.expired():
                raise attest_error("session expired.")
            if s.token is None:
                s.token = token
                st.stats["attested"] += 1
            return 200, dumps({"token": s.token}), (("Set-Cookie", s.cookie()),)

    @staticmethod
    def verify_evidence(tee, primary, nonce, jwk, add_ev):
        if tee != "sample":
            raise attest_error("verify TEE evidence failed: the test KBS verifies only sample evidence")
        if not isinstance(primary, dict):
            raise attest_error("verify TEE evidence failed: Deserialize Quote failed.")
        svn, rd = primary.get("svn"), primary.get("report_data", "")
        if not isinstance(svn, str) or not isinstance(rd, str):
            raise attest_error("verify TEE evidence failed: Deserialize Quote failed.")
        try:
            got = base64.b64decode(rd, validate=True)
        except binascii.Error:
            raise attest_error("verify TEE evidence failed: base64 decode report data for sample evidence")
        if got != sample_report_data(nonce, jwk, add_ev):
            raise attest_error("verify TEE evidence failed: REPORT_DATA is different from that in "
                               "Sample Quote")
        return {"svn": svn, "report_data": rd}

    def resource(self, st, additional):
        with st.lock:
            cfg = st.config
        if cfg["resource_path_check"] == "early" and not valid_resource_path(additional):
            raise KbsError("InvalidRequestPath",
                           "Request path /kbs/v0/resource/%s is invalid" % additional, status=404)
        token = None
        sid = self.cookie_session_id()
        with st.lock:
            s = st.sessions.get(sid) if sid else None
            if s is not None and not s.expired() and s.token is not None:
                token = s.token
        if token is None:
            auth = self.headers.get("Authorization", "")
            scheme, _, cred = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                token = cred.strip()
        if token is None:
            raise KbsError("TokenNotFound", "Attestation Token not found",
                           reason="no attested session cookie and no bearer token")
        try:
            with st.lock:
                signer = st.signer
            claims = signer.verify(token)
        except (ValueError, UnicodeDecodeError) as e:
            raise KbsError("TokenVerifierError", "Token Verifier error", reason=str(e))
        if not policy_allows(cfg["policy"], additional, claims):
            raise KbsError("PolicyDeny", "Access denied by policy", status=cfg["policy_deny_status"])
        if not valid_resource_path(additional):
            raise KbsError("PluginInternalError", "Plugin internal error",
                           reason="illegal ResourceDesc format.")
        data = cfg["resources"].get(additional)
        if data is None:
            raise KbsError("PluginInternalError", "Plugin internal error",
                           reason="resource %s not found" % additional)
        return 200, dumps(encrypt_jwe(claims["tee-pubkey"], data)), ()

    # -- test control

    def admin(self, st, path, body):
        if path == "/_test/config" and self.command == "POST":
            try:
                new = _loads_strict(body)
                with st.lock:
                    st.config = apply_config(st.config, new, allow_admin=False)
            except (ValueError, ShapeError) as e:
                return 400, dumps({"ok": False, "error": str(e)}), ()
            return 200, b'{"ok":true}', ()
        if path == "/_test/expire-sessions" and self.command == "POST":
            with st.lock:
                now = time.time()
                n = 0
                for s in st.sessions.values():
                    if not s.expired():
                        n += 1
                    s.expires = min(s.expires, now - 1)
                st.signer.rotate()
            return 200, dumps({"expired": n}), ()
        if path == "/_test/stats" and self.command == "GET":
            with st.lock:
                return 200, dumps(st.stats), ()
        return 404, b"", ()


class KbsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


# ----------------------------------------------------------------------------- gen-cert

def gen_cert(out_dir, hosts):
    os.makedirs(out_dir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-kbs CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(out_dir, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(out_dir, "server.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    key_path = os.path.join(out_dir, "server.key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


# ----------------------------------------------------------------------------- main

def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("--listen wants HOST:PORT")
    host = host.strip("[]")
    return host, int(port)


def serve(args):
    try:
        with open(args.config, "rb") as f:
            raw = _loads_strict(f.read())
        config = apply_config(DEFAULT_CONFIG, raw, allow_admin=True)
        host, port = parse_listen(args.listen)
    except (OSError, ValueError, ShapeError) as e:
        print("test_kbs: %s" % e, file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("test_kbs: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2

    class Server(KbsServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = Server((host, port), Handler)
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
    except (OSError, ssl.SSLError) as e:
        print("test_kbs: %s" % e, file=sys.stderr)
        return 2
    server.state = KbsState(config, args.log)
    server.verbose = args.verbose
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    loop.start()
    bound = server.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % bound)
    os.replace(tmp, args.port_file)
    if args.verbose:
        print("test_kbs: listening on %s:%d%s" % (host, bound, " (TLS)" if args.tls_cert else ""),
              file=sys.stderr)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "gen-cert":
        p = argparse.ArgumentParser(prog="test_kbs.py gen-cert")
        p.add_argument("--out-dir", required=True)
        p.add_argument("--host", action="append")
        a = p.parse_args(argv[1:])
        gen_cert(a.out_dir, a.host or ["127.0.0.1", "localhost"])
        return 0
    p = argparse.ArgumentParser(prog="test_kbs.py", description="test KBS (trustee protocol 0.4.0)")
    p.add_argument("--listen", required=True, help="HOST:PORT (port 0 = ephemeral)")
    p.add_argument("--port-file", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--log")
    p.add_argument("--verbose", action="store_true")
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

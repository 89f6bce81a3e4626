#!/usr/bin/python3
"""Self-test of tests/kbs/test_kbs.py: starts the server as a subprocess on an
ephemeral port and drives the KBS protocol 0.4.0 with a Python client written
here (http.client + cryptography; its JWE decryption is independent of
kbs_jose.py). Run: /usr/bin/python3 tests/kbs/test_kbs_selftest.py
"""
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "test_kbs.py")
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, HERE)
import test_kbs  # noqa: E402  (only for jcs() in the JCS test)

ERR = "https://github.com/confidential-containers/kbs/errors/"
TOML_A = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"volume" = "vol-1"\n"cdh.toml" = "x"\n'
TOML_B = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"volume" = "vol-2"\n'
TOML_384 = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"volume" = "vol-1"\n'
SECRET = bytes(range(32))


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TeeKey:
    def __init__(self, kind="ec"):
        self.kind = kind
        if kind == "ec":
            self.priv = ec.generate_private_key(ec.SECP256R1())
            n = self.priv.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
                        "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}
        else:
            self.priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            n = self.priv.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "alg": "RSA-OAEP-256",
                        "n": b64u(n.n.to_bytes(256, "big")), "e": b64u(n.e.to_bytes(3, "big"))}

    def decrypt(self, jwe: dict) -> bytes:
        assert set(jwe) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}, jwe
        header = json.loads(b64u_dec(jwe["protected"]))
        assert header["enc"] == "A256GCM"
        ek = b64u_dec(jwe["encrypted_key"])
        if self.kind == "ec":
            assert header["alg"] == "ECDH-ES+A256KW"
            epk = header["epk"]
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(b64u_dec(epk["x"]), "big"),
                                                 int.from_bytes(b64u_dec(epk["y"]), "big"),
                                                 ec.SECP256R1()).public_key()
            z = self.priv.exchange(ec.ECDH(), peer)
            alg = b"ECDH-ES+A256KW"
            kek = hashlib.sha256(struct.pack(">I", 1) + z + struct.pack(">I", len(alg)) + alg
                                 + struct.pack(">III", 0, 0, 256)).digest()
            cek = aes_key_unwrap(kek, ek)
        else:
            assert header["alg"] == "RSA-OAEP-256"
            cek = self.priv.decrypt(ek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                     algorithm=hashes.SHA256(), label=None))
        iv, tag = b64u_dec(jwe["iv"]), b64u_dec(jwe["tag"])
        assert len(iv) == 12 and len(tag) == 16
        return AESGCM(cek).decrypt(iv, b64u_dec(jwe["ciphertext"]) + tag,
                                   jwe["protected"].encode("ascii"))


def report_data(nonce, jwk, add=""):
    # The client side of the binding, written out on purpose (json.dumps is JCS here).
    doc = {"additional-evidence": add, "nonce": nonce, "tee-pubkey": jwk}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(hashlib.sha384(canon.encode()).digest()).decode()


class Server:
    def __init__(self, config, tls_dir=None, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="kbs-selftest-")
        self.cfg_path = os.path.join(self.dir, "config.json")
        self.port_file = os.path.join(self.dir, "port")
        self.log = os.path.join(self.dir, "log.jsonl")
        with open(self.cfg_path, "w") as f:
            json.dump(config, f)
        args = [sys.executable, SERVER, "--listen", "127.0.0.1:0", "--port-file", self.port_file,
                "--config", self.cfg_path, "--log", self.log, *extra_args]
        self.ctx = None
        if tls_dir:
            args += ["--tls-cert", os.path.join(tls_dir, "server.pem"),
                     "--tls-key", os.path.join(tls_dir, "server.key")]
            self.ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen(args, stderr=self.stderr)
        deadline = time.time() + 10
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stderr.seek(0)
                raise RuntimeError("server did not start: %s" % self.stderr.read())
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())

    def conn(self, ctx=None):
        if self.ctx or ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx or self.ctx,
                                               timeout=10)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        raw = r.read()
        if conn is None:
            c.close()
        try:
            js = json.loads(raw) if raw else None
        except ValueError:
            js = raw
        return r.status, r, js

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
            self.stderr.seek(0)
            err = self.stderr.read()
            if err:
                sys.stderr.write("[test_kbs stderr]\n" + err)
        finally:
            self.stderr.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    # -- protocol helpers

    def auth(self, tee="sample", version="0.4.0", conn=None):
        st, r, js = self.request("POST", "/kbs/v0/auth",
                                 {"version": version, "tee": tee,
                                  "extra-params": {"supported-hash-algorithms": ["sha384"]}},
                                 conn=conn)
        cookie = None
        if st == 200:
            sc = r.getheader("Set-Cookie")
            cookie = sc.split(";")[0]
        return st, js, cookie

    def attest(self, cookie, key, nonce, init_toml=None, rd=None, svn="1", mutate=None, conn=None):
        body = {"init-data": None if init_toml is None else {"format": "toml", "body": init_toml},
                "runtime-data": {"nonce": nonce, "tee-pubkey": key.jwk},
                "tee-evidence": {"primary_evidence": {"svn": svn,
                                                      "report_data": rd or report_data(nonce, key.jwk)},
                                 "additional_evidence": ""}}
        if mutate:
            mutate(body)
        headers = {"Cookie": cookie} if cookie else {}
        return self.request("POST", "/kbs/v0/attest", body, headers, conn=conn)

    def handshake(self, key, init_toml=None, svn="1"):
        st, js, cookie = self.auth()
        assert st == 200, (st, js)
        st, _, js = self.attest(cookie, key, js["nonce"], init_toml=init_toml, svn=svn)
        assert st == 200, (st, js)
        return cookie, js["token"]

    def get(self, path, cookie=None, token=None, conn=None):
        headers = {}
        if cookie:
            headers["Cookie"] = cookie
        if token:
            headers["Authorization"] = "Bearer " + token
        st, _, js = self.request("GET", "/kbs/v0/resource/" + path, headers=headers, conn=conn)
        return st, js

    def log_lines(self):
        with open(self.log) as f:
            return [json.loads(line) for line in f]


MAIN_CONFIG = {
    "resources": {"default/key/ec": {"hex": SECRET.hex()},
                  "default/key/secret": {"text": "nope"},
                  "default/key/init": {"base64": base64.b64encode(b"init-key").decode()},
                  "default/key/claims": {"text": "claims-key"},
                  "default/key/svn2": {"text": "svn2"},
                  "other/key/x": {"text": "x"}},
    "allowed_tees": ["sample", "tdx"],
    "policy": {"default": "deny", "rules": [
        {"resource": "default/key/secret", "allow": False},
        {"resource": "default/key/init",
         "require_init_data_digest": hashlib.sha256(TOML_A.encode()).hexdigest().upper()},
        {"resource": "default/key/claims", "require_init_data_claims": {"volume": "vol-1"}},
        {"resource": "default/key/svn2", "require_svn": "2"},
        {"resource": "default/*/*", "require_tee": "sample"}]},
    "admin": True,
}


class KbsProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(MAIN_CONFIG)

    @classmethod
    def tearDownClass(cls):
        assert cls.srv.stop() == 0

    def assertError(self, st, js, status, variant):
        self.assertEqual(st, status, js)
        self.assertEqual(js["type"], ERR + variant, js)
        self.assertIsInstance(js["detail"], str)

    def test_jcs_check_value(self):
        v = {"b": 1, "a": "test", "c": {"d": "e"}}
        want = "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
        self.assertEqual(hashlib.sha384(test_kbs.jcs(v).encode()).hexdigest(), want)
        jwk = TeeKey().jwk
        doc = {"additional-evidence": "", "nonce": "n+/=", "tee-pubkey": jwk}
        self.assertEqual(test_kbs.jcs(doc), json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                                       ensure_ascii=False))
        # UTF-16 ordering (RFC 8785 §3.2.3) and escapes
        self.assertEqual(test_kbs.jcs({"\U0001F600": 1, "\uFB33": 2}), '{"\U0001F600":1,"\uFB33":2}')
        self.assertEqual(test_kbs.jcs("\u000f\n\"\u2028"), '"\\u000f\\n\\"\u2028"')

    def test_happy_path_ec(self):
        key = TeeKey("ec")
        c = self.srv.conn()  # one keep-alive connection for the whole exchange
        st, r, js = self.srv.request("POST", "/kbs/v0/auth",
                                     {"version": "0.4.0", "tee": "sample", "extra-params": ""}, conn=c)
        self.assertEqual(st, 200)
        sc = r.getheader("Set-Cookie")
        self.assertRegex(sc, r"^kbs-session-id=[0-9a-f]{32}; Expires=\w{3}, \d{2} \w{3} \d{4} "
                             r"\d{2}:\d{2}:\d{2} GMT$")
        self.assertEqual(set(js), {"nonce", "extra-params"})
        self.assertEqual(js["extra-params"], "")
        self.assertEqual(len(base64.b64decode(js["nonce"], validate=True)), 32)
        cookie = sc.split(";")[0]
        st, r, tok = self.srv.attest(cookie, key, js["nonce"], conn=c)
        self.assertEqual(st, 200, tok)
        self.assertTrue(r.getheader("Set-Cookie").startswith(cookie + ";"))
        h, claims, sig = tok["token"].split(".")
        self.assertEqual(json.loads(b64u_dec(h))["alg"], "ES256")
        self.assertEqual(len(b64u_dec(sig)), 64)
        claims = json.loads(b64u_dec(claims))
        self.assertEqual(claims["tee-pubkey"], key.jwk)
        self.assertEqual(claims["tee"], "sample")
        self.assertEqual(claims["evidence"]["svn"], "1")
        self.assertIsNone(claims["init_data"])
        self.assertGreater(claims["exp"], time.time() + 200)
        st, jwe = self.srv.get("default/key/ec", cookie=cookie, conn=c)
        self.assertEqual(st, 200, jwe)
        self.assertEqual(key.decrypt(jwe), SECRET)
        c.close()

    def test_happy_path_rsa(self):
        key = TeeKey("rsa")
        cookie, _ = self.srv.handshake(key)
        st, jwe = self.srv.get("default/key/ec", cookie=cookie)
        self.assertEqual(st, 200, jwe)
        self.assertEqual(key.decrypt(jwe), SECRET)

    def test_reattest_returns_same_token(self):
        key = TeeKey()
        st, js, cookie = self.srv.auth()
        nonce = js["nonce"]
        _, _, t1 = self.srv.attest(cookie, key, nonce)
        st, _, t2 = self.srv.attest(cookie, TeeKey(), "whatever")
        self.assertEqual(st, 200)
        self.assertEqual(t1, t2)

    def test_bearer_token(self):
        key = TeeKey()
        _, token = self.srv.handshake(key)
        st, jwe = self.srv.get("default/key/ec", token=token)
        self.assertEqual(st, 200, jwe)
        self.assertEqual(key.decrypt(jwe), SECRET)
        h, c, s = token.split(".")
        forged = json.loads(b64u_dec(c))
        forged["tee"] = "sample"
        forged["exp"] += 1
        st, js = self.srv.get("default/key/ec", token=h + "." + b64u(json.dumps(forged).encode()) + "." + s)
        self.assertError(st, js, 401, "TokenVerifierError")
        st, js = self.srv.get("default/key/ec", token="garbage")
        self.assertError(st, js, 401, "TokenVerifierError")
        st, js = self.srv.get("default/key/ec")
        self.assertError(st, js, 401, "TokenNotFound")
        # an authenticated but not attested session is no token
        _, _, cookie = self.srv.auth()
        st, js = self.srv.get("default/key/ec", cookie=cookie)
        self.assertError(st, js, 401, "TokenNotFound")
        # an unknown cookie falls back to the bearer token
        st, jwe = self.srv.get("default/key/ec", cookie="kbs-session-id=" + "0" * 32, token=token)
        self.assertEqual(st, 200)

    def test_wrong_nonce(self):
        key = TeeKey()
        _, js, cookie = self.srv.auth()
        other = base64.b64encode(os.urandom(32)).decode()
        st, _, js = self.srv.attest(cookie, key, other)
        self.assertError(st, js, 401, "AttestationError")
        self.assertIn("nonce", js["detail"])

    def test_tampered_report_data(self):
        key = TeeKey()
        _, js, cookie = self.srv.auth()
        nonce = js["nonce"]
        good = base64.b64decode(report_data(nonce, key.jwk))
        bad = base64.b64encode(bytes([good[0] ^ 1]) + good[1:]).decode()
        st, _, js = self.srv.attest(cookie, key, nonce, rd=bad)
        self.assertError(st, js, 401, "AttestationError")
        self.assertIn("REPORT_DATA", js["detail"])
        # report_data bound to another key
        st, _, js = self.srv.attest(cookie, key, nonce, rd=report_data(nonce, TeeKey().jwk))
        self.assertError(st, js, 401, "AttestationError")
        # the session is still usable after failures
        st, _, js = self.srv.attest(cookie, key, nonce)
        self.assertEqual(st, 200, js)

    def test_wrong_version(self):
        for v in ("0.3.0", "0.4.1", "1.0.0", "0.4", "v0.4.0"):
            st, js, _ = self.srv.auth(version=v)
            self.assertError(st, js, 401, "AttestationError")
        st, _, js = self.srv.request("POST", "/kbs/v0/auth", {"tee": "sample"})
        self.assertError(st, js, 401, "AttestationError")
        st, _, js = self.srv.request("POST", "/kbs/v0/auth", b"{not json")
        self.assertError(st, js, 401, "AttestationError")

    def test_tee(self):
        st, js, _ = self.srv.auth(tee="no-such-tee")
        self.assertError(st, js, 401, "AttestationError")
        st, js, _ = self.srv.auth(tee="snp")  # known, not allowed
        self.assertError(st, js, 401, "AttestationError")
        st, js, cookie = self.srv.auth(tee="tdx")  # allowed, but only sample is verifiable
        self.assertEqual(st, 200)
        st, _, js = self.srv.attest(cookie, TeeKey(), js["nonce"])
        self.assertError(st, js, 401, "AttestationError")

    def test_strict_shapes(self):
        def run(mutate, key=None):
            key = key or TeeKey()
            _, js, cookie = self.srv.auth()
            nonce = js["nonce"]

            def m(body):
                mutate(body)
                body["tee-evidence"]["primary_evidence"]["report_data"] = \
                    report_data(nonce, body["runtime-data"]["tee-pubkey"])
            return self.srv.attest(cookie, key, nonce, mutate=m)

        cases = {
            "extra jwk member": lambda b: b["runtime-data"]["tee-pubkey"].update(kid="1"),
            "RSA1_5": None,
            "EC alg": lambda b: b["runtime-data"]["tee-pubkey"].update(alg="ECDH-ES"),
            "short x": lambda b: b["runtime-data"]["tee-pubkey"].update(x=b64u(b"\1" * 31)),
            "padded x": lambda b: b["runtime-data"]["tee-pubkey"].update(
                x=b["runtime-data"]["tee-pubkey"]["x"] + "="),
            "P-384": lambda b: b["runtime-data"]["tee-pubkey"].update(crv="P-384"),
            "extra top member": lambda b: b.update(extra=1),
            "missing tee-evidence": lambda b: b.pop("tee-evidence") and b.update(
                {"tee-evidence": {"primary_evidence": {"svn": "1"}}}),
            "init-data format": lambda b: b.update({"init-data": {"format": "json", "body": "{}"}}),
            "init-data algorithm": lambda b: b.update(
                {"init-data": {"format": "toml", "body": 'version="0.1.0"\nalgorithm="md5"\n'}}),
            "additional evidence": lambda b: b["tee-evidence"].update(additional_evidence="{}"),
            "svn not a string": lambda b: b["tee-evidence"]["primary_evidence"].update(svn=1),
        }
        for name, mutate in cases.items():
            with self.subTest(name):
                if name == "RSA1_5":
                    key = TeeKey("rsa")
                    key.jwk["alg"] = "RSA1_5"
                    st, _, js = run(lambda b: None, key)
                else:
                    st, _, js = run(mutate)
                self.assertError(st, js, 401, "AttestationError")
        # init-data may be absent altogether
        st, _, js = run(lambda b: b.pop("init-data"))
        self.assertEqual(st, 200, js)
        # no cookie at all
        st, _, js = self.srv.attest(None, TeeKey(), "x")
        self.assertError(st, js, 401, "AttestationError")

    def test_policy(self):
        key = TeeKey()
        cookie, _ = self.srv.handshake(key)
        st, js = self.srv.get("default/key/secret", cookie=cookie)
        self.assertError(st, js, 401, "PolicyDeny")
        st, js = self.srv.get("other/key/x", cookie=cookie)  # no rule: default deny
        self.assertError(st, js, 401, "PolicyDeny")
        st, js = self.srv.get("default/key/svn2", cookie=cookie)
        self.assertError(st, js, 401, "PolicyDeny")
        cookie2, _ = self.srv.handshake(key, svn="2")
        st, jwe = self.srv.get("default/key/svn2", cookie=cookie2)
        self.assertEqual((st, key.decrypt(jwe)), (200, b"svn2"))

    def test_missing_resource_is_401(self):
        cookie, _ = self.srv.handshake(TeeKey())
        st, js = self.srv.get("default/key/missing", cookie=cookie)
        self.assertError(st, js, 401, "PluginInternalError")

    def test_invalid_path_is_404(self):
        cookie, _ = self.srv.handshake(TeeKey())
        for p in ("default/key", "default/key/ec/more", ".default/key/ec", "default/.key/ec",
                  "default/key/", "default//ec", "de fault/key/ec", ""):
            with self.subTest(p):
                st, js = self.srv.get(p.replace(" ", "%20"), cookie=cookie)
                self.assertError(st, js, 404, "InvalidRequestPath")
        st, _, js = self.srv.request("GET", "/kbs/v0/nosuchplugin/x")
        self.assertError(st, js, 404, "PluginNotFound")
        st, _, js = self.srv.request("GET", "/kbs/v0/auth")
        self.assertError(st, js, 404, "PluginNotFound")
        st, _, _ = self.srv.request("GET", "/elsewhere")
        self.assertEqual(st, 404)
        # trailing dots are legal, as in trustee's ResourceDesc tests
        st, js = self.srv.get("1.ok/2ok./3...", cookie=cookie)
        self.assertError(st, js, 401, "PolicyDeny")

    def test_init_data_policy(self):
        key = TeeKey()
        cookie, token = self.srv.handshake(key, init_toml=TOML_A)
        claims = json.loads(b64u_dec(token.split(".")[1]))
        self.assertEqual(claims["init_data"], hashlib.sha256(TOML_A.encode()).hexdigest())
        self.assertEqual(claims["init_data_claims"]["volume"], "vol-1")
        st, jwe = self.srv.get("default/key/init", cookie=cookie)
        self.assertEqual((st, key.decrypt(jwe)), (200, b"init-key"))
        st, jwe = self.srv.get("default/key/claims", cookie=cookie)
        self.assertEqual((st, key.decrypt(jwe)), (200, b"claims-key"))

        cookie, _ = self.srv.handshake(key, init_toml=TOML_B)
        for path in ("default/key/init", "default/key/claims"):
            st, js = self.srv.get(path, cookie=cookie)
            self.assertError(st, js, 401, "PolicyDeny")
        cookie, _ = self.srv.handshake(key)  # no init-data
        st, js = self.srv.get("default/key/init", cookie=cookie)
        self.assertError(st, js, 401, "PolicyDeny")
        _, token = self.srv.handshake(key, init_toml=TOML_384)
        claims = json.loads(b64u_dec(token.split(".")[1]))
        self.assertEqual(claims["init_data"], hashlib.sha384(TOML_384.encode()).hexdigest())
        self.assertEqual(claims["init_data_algorithm"], "sha384")
        st, jwe = self.srv.get("default/key/claims", token=token)
        self.assertEqual(st, 200)


class KbsLifecycleTest(unittest.TestCase):
    def test_session_and_token_ttl(self):
        srv = Server({"resources": {"a/b/c": {"text": "v"}}, "session_ttl_seconds": 2,
                      "token_ttl_seconds": 2})
        try:
            key = TeeKey()
            cookie, token = srv.handshake(key)
            self.assertEqual(srv.get("a/b/c", cookie=cookie)[0], 200)
            _, js, late = srv.auth()
            time.sleep(3.1)  # token exp = ceil(iat + 2) <= iat + 3
            st, js2 = srv.get("a/b/c", cookie=cookie)
            self.assertEqual((st, js2["type"]), (401, ERR + "TokenNotFound"))
            st, js2 = srv.get("a/b/c", token=token)
            self.assertEqual((st, js2["type"]), (401, ERR + "TokenVerifierError"))
            st, _, js2 = srv.attest(late, key, js["nonce"])
            self.assertEqual((st, js2["type"]), (401, ERR + "AttestationError"))
            self.assertIn("expired", js2["detail"])
            cookie, _ = srv.handshake(key)  # the client handshakes again
            st, jwe = srv.get("a/b/c", cookie=cookie)
            self.assertEqual((st, key.decrypt(jwe)), (200, b"v"))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_admin_endpoints_and_log(self):
        srv = Server({"resources": {"a/b/c": {"text": "v"}}, "admin": True,
                      "policy": {"rules": [{"resource": "a/b/deny", "allow": False}]}})
        try:
            key = TeeKey()
            cookie, token = srv.handshake(key)
            cookie2, _ = srv.handshake(key)
            self.assertEqual(srv.get("a/b/c", cookie=cookie)[0], 200)
            st, _, js = srv.request("POST", "/_test/expire-sessions", b"")
            self.assertEqual((st, js), (200, {"expired": 2}))
            st, js = srv.get("a/b/c", cookie=cookie)
            self.assertEqual((st, js["type"]), (401, ERR + "TokenNotFound"))
            st, js = srv.get("a/b/c", token=token)
            self.assertEqual((st, js["type"]), (401, ERR + "TokenVerifierError"))
            cookie, token = srv.handshake(key)
            self.assertEqual(srv.get("a/b/c", token=token)[0], 200)

            # runtime config: new resources and policy knobs
            st, _, js = srv.request("POST", "/_test/config",
                                    {"resources": {"a/b/new": {"hex": "0102"}, "a/b/deny": {"hex": "00"}},
                                     "policy_deny_status": 403})
            self.assertEqual(st, 200, js)
            st, jwe = srv.get("a/b/new", cookie=cookie)
            self.assertEqual((st, key.decrypt(jwe)), (200, b"\1\2"))
            st, js = srv.get("a/b/c", cookie=cookie)  # replaced resource set
            self.assertEqual((st, js["type"]), (401, ERR + "PluginInternalError"))
            st, js = srv.get("a/b/deny", cookie=cookie)
            self.assertEqual((st, js["type"]), (403, ERR + "PolicyDeny"))
            st, _, js = srv.request("POST", "/_test/config", {"resource_path_check": "trustee"})
            self.assertEqual(st, 200)
            st, js = srv.get("a/b", cookie=cookie)
            self.assertEqual((st, js["type"]), (401, ERR + "PluginInternalError"))
            st, js = srv.get("a/b")
            self.assertEqual((st, js["type"]), (401, ERR + "TokenNotFound"))
            for bad in ({"admin": False}, {"nope": 1}, {"session_ttl_seconds": 0},
                        {"resources": {"a/b": {"hex": "00"}}}, {"policy": {"default": "maybe"}}):
                st, _, js = srv.request("POST", "/_test/config", bad)
                self.assertEqual(st, 400, bad)

            st, _, stats = srv.request("GET", "/_test/stats")
            self.assertEqual(st, 200)
            self.assertEqual(stats["auth"], {"200": 3})
            self.assertEqual(stats["attest"], {"200": 3})
            self.assertEqual(stats["attested"], 3)
            self.assertEqual(stats["resource"]["200"], 3)
            self.assertEqual(stats["resource"]["401"], 5)
            self.assertEqual(stats["resource"]["403"], 1)

            log = srv.log_lines()
            auths = [l for l in log if l["path"] == "/kbs/v0/auth" and l["status"] == 200]
            self.assertEqual(len(auths), 3)
            self.assertTrue(all(re.fullmatch("[0-9a-f]{8}", l["session"]) for l in auths))
            self.assertEqual(cookie.split("=")[1][:8], auths[-1]["session"])
            denied = [l for l in log if l["error"] == "PolicyDeny"]
            self.assertEqual([(l["method"], l["path"], l["status"]) for l in denied],
                             [("GET", "/kbs/v0/resource/a/b/deny", 403)])
            self.assertEqual(log[-1]["path"], "/_test/stats")
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_bad_config_exits_2(self):
        d = tempfile.mkdtemp(prefix="kbs-selftest-")
        try:
            cfg = os.path.join(d, "c.json")
            with open(cfg, "w") as f:
                json.dump({"resources": {"a/b": {"hex": "00"}}}, f)
            pf = os.path.join(d, "port")
            rc = subprocess.run([sys.executable, SERVER, "--listen", "127.0.0.1:0", "--port-file", pf,
                                 "--config", cfg], capture_output=True, timeout=20).returncode
            self.assertEqual(rc, 2)
            self.assertFalse(os.path.exists(pf))
        finally:
            shutil.rmtree(d)


class KbsTlsTest(unittest.TestCase):
    def test_https_with_gen_cert_ca(self):
        d = tempfile.mkdtemp(prefix="kbs-selftest-tls-")
        try:
            subprocess.run([sys.executable, SERVER, "gen-cert", "--out-dir", d, "--host", "127.0.0.1",
                            "--host", "10.0.2.2", "--host", "kbs.test"], check=True, timeout=30)
            self.assertEqual(os.stat(os.path.join(d, "server.key")).st_mode & 0o777, 0o600)
            srv = Server({"resources": {"a/b/c": {"text": "tls"}}}, tls_dir=d)
            try:
                key = TeeKey()
                cookie, _ = srv.handshake(key)
                st, jwe = srv.get("a/b/c", cookie=cookie)
                self.assertEqual((st, key.decrypt(jwe)), (200, b"tls"))
                # admin endpoints are off by default
                self.assertEqual(srv.request("GET", "/_test/stats")[0], 404)
                # the system trust store does not know our CA
                with self.assertRaises(ssl.SSLCertVerificationError):
                    srv.request("GET", "/kbs/v0/auth", conn=srv.conn(ssl.create_default_context()))
                # plain HTTP to the TLS port does not work
                c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
                with self.assertRaises((http.client.HTTPException, OSError)):
                    c.request("GET", "/kbs/v0/auth")
                    c.getresponse().read()
                c.close()
                # and the server still serves afterwards
                self.assertEqual(srv.auth()[0], 200)
            finally:
                self.assertEqual(srv.stop(), 0)
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main(verbosity=2)

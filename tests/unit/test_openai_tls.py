"""The OpenAI front over TLS: the real app under uvicorn with a CA, server and client
certificates made here; its connection options to Triton; no key in its options' repr."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tritonllm.cli import main
from tritonllm.errors import ConfigError
from tritonllm.openai.server import FrontOptions, make_app, uvicorn_options
from tritonllm.security import INFERENCE_KEY_ENV, Secret

UNUSED_TRITON = "127.0.0.1:1"  # /v1/models answers without Triton


# --- certificates -----------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(key: ec.EllipticCurvePrivateKey, cn: str, issuer_key: ec.EllipticCurvePrivateKey,
          issuer: str, usage: x509.ObjectIdentifier | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = usage is None
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False))
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # a CA that signed nothing here
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")

    def write(name: str, obj: Any) -> Path:
        path = d / name
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "other", "srv", "cli")}
    return Pki(
        ca=write("ca.pem", _cert(keys["ca"], "test CA", keys["ca"], "test CA", None)),
        other_ca=write("other.pem", _cert(keys["other"], "other CA", keys["other"], "other CA",
                                          None)),
        server_cert=write("server.pem", _cert(keys["srv"], "localhost", keys["ca"], "test CA",
                                              ExtendedKeyUsageOID.SERVER_AUTH)),
        server_key=write("server.key", keys["srv"]),
        client_cert=write("client.pem", _cert(keys["cli"], "client", keys["ca"], "test CA",
                                              ExtendedKeyUsageOID.CLIENT_AUTH)),
        client_key=write("client.key", keys["cli"]))


# --- the front under uvicorn ------------------------------------------------------------------

@contextmanager
def serving(options: FrontOptions) -> Iterator[int]:
    """The real app on a free port (uvicorn in a thread); yields the port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(make_app(options),
                                           **uvicorn_options(options, "critical")))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def _tls(pki: Pki, *, ca: Path | None = None, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca))
    if cert:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
    return ctx


def _get(url: str, verify: ssl.SSLContext | bool = True) -> httpx.Response:
    with httpx.Client(verify=verify, timeout=10) as http:
        return http.get(url)


def _options(pki: Pki, **kw: Any) -> FrontOptions:
    return FrontOptions(url=UNUSED_TRITON, host="127.0.0.1", port=0, tls_cert=pki.server_cert,
                        tls_key=pki.server_key, **kw)


def test_https_with_the_ca_others_fail_and_it_keeps_serving(pki: Pki) -> None:
    with serving(_options(pki)) as port:
        url = f"https://127.0.0.1:{port}/v1/models"
        assert _get(url, _tls(pki)).status_code == 200
        assert _get(f"https://localhost:{port}/v1/models", _tls(pki)).status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
            _get(f"http://127.0.0.1:{port}/v1/models")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(url, _tls(pki, ca=pki.other_ca))
        r = _get(url, _tls(pki))
        assert r.status_code == 200 and r.json()["data"], r.text


def test_client_certificates_required_with_tls_ca(pki: Pki) -> None:
    with serving(_options(pki, tls_ca=pki.ca)) as port:
        url = f"https://127.0.0.1:{port}/v1/models"
        with pytest.raises(httpx.TransportError):  # no client certificate
            _get(url, _tls(pki))
        assert _get(url, _tls(pki, cert=True)).status_code == 200
        with pytest.raises(httpx.TransportError):
            _get(url, _tls(pki))
        assert _get(url, _tls(pki, cert=True)).status_code == 200


def test_tls_options_go_together_and_bad_files_are_one_line(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        FrontOptions(tls_cert=pki.server_cert)
    with pytest.raises(ConfigError, match="--tls-ca needs --tls-cert"):
        FrontOptions(tls_ca=pki.ca)
    with pytest.raises(ConfigError, match="--tls-cert"):  # a key that is not the cert's
        uvicorn_options(FrontOptions(tls_cert=pki.server_cert, tls_key=pki.client_key))
    for args, words in [(["--tls-cert", str(pki.server_cert)], ["--tls-cert", "--tls-key"]),
                        (["--tls-key", str(pki.server_key)], ["--tls-key", "--tls-cert"]),
                        (["--tls-ca", str(pki.ca)], ["--tls-ca", "--tls-cert"])]:
        r = CliRunner().invoke(main, ["openai", *args])
        assert r.exit_code == 2 and all(w in r.output for w in words), r.output


def test_front_options_repr_shows_no_key() -> None:
    o = FrontOptions(api_keys=(b"sk-front-secret-0001",),
                     triton_inference_key=Secret("t" * 24, f"${INFERENCE_KEY_ENV}"))
    text = repr(o)
    assert "sk-front-secret-0001" not in text and "t" * 24 not in text
    assert f"Secret(${INFERENCE_KEY_ENV})" in text


def test_the_fronts_triton_key_and_ca_reach_its_client(pki: Pki, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    made: list[dict[str, Any]] = []

    class FakeAsyncClient:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs)

        async def close(self) -> None:
            pass

    monkeypatch.setattr("tritonllm.client.AsyncLLMClient", FakeAsyncClient)
    key = Secret("k" * 20, "test")
    with TestClient(make_app(FrontOptions(triton_inference_key=key, triton_ca=pki.ca))):
        pass
    assert made[-1]["inference_key"] is key
    assert made[-1]["ssl"] is True and made[-1]["root_certificates"] == str(pki.ca)


def test_cli_reads_the_triton_key_and_says_https(pki: Pki, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[FrontOptions] = []
    monkeypatch.setattr("tritonllm.openai.server.run",
                        lambda o, log_level="warning": runs.append(o))
    monkeypatch.delenv(INFERENCE_KEY_ENV, raising=False)
    monkeypatch.delenv("TRITONLLM_OPENAI_API_KEYS", raising=False)
    key_file = tmp_path / "triton-key"
    key_file.write_text("triton-inference-key-0001\n")
    r = CliRunner().invoke(main, ["openai", "--tls-cert", str(pki.server_cert), "--tls-key",
                                  str(pki.server_key), "--tls-ca", str(pki.ca),
                                  "--triton-inference-key-file", str(key_file),
                                  "--triton-ca", str(pki.ca)])
    assert r.exit_code == 0, r.output
    o = runs[-1]
    assert o.triton_inference_key is not None
    assert o.triton_inference_key.reveal() == "triton-inference-key-0001"
    assert o.tls_ca == pki.ca and o.triton_ca == pki.ca
    assert "https://127.0.0.1:9000/v1" in r.output and "client certificates" in r.output
    assert "triton-inference-key-0001" not in r.output
    short = tmp_path / "short"
    short.write_text("abc\n")
    r = CliRunner().invoke(main, ["openai", "--triton-inference-key-file", str(short)])
    assert r.exit_code == 1 and "--triton-inference-key-file" in r.output

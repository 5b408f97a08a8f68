"""Keys and TLS on the real tritonserver (tritonllm serve's policy), over gRPC and HTTP.

Every restricted endpoint group x {no key, wrong key, right key}, with the official tritonclient
(gRPC), plain HTTP requests and our client; health stays open. TLS with a CA, server and client
certificates made here with ``cryptography``. No key may appear in the server's log, the
launcher's messages or any repr.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonllm import security as S

pytestmark = pytest.mark.integration
ADMIN = "admin-key-for-tests-0123456789"  # test keys, not secrets
INFER = "inference-key-for-tests-98765"
WRONG = "wrong-key-for-tests-000000000"
MODEL = "ensemble"


@pytest.fixture(scope="module")
def secured(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    where = tmp_path_factory.mktemp("secured")
    repo = where / "repo"
    render_repository(cpu_engine, repo, RepoSettings())
    said: list[str] = []
    policy = S.AccessPolicy(admin_key=S.Secret(ADMIN, "test"),
                            inference_key=S.Secret(INFER, "test"))
    options = ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                            host="127.0.0.1", managed=True, access=policy,
                            startup_timeout=300, log_file=where / "tritonserver.log")
    with TritonServer(options, say=said.append) as srv:
        srv.said = said
        yield srv


def _grpc(srv: Any, key: str | None, header: str) -> Any:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(srv.grpc_address)
    headers = {S.GRPC_HEADER_PREFIX + header: key} if key else None
    return client, headers


#: group -> (header, a gRPC call, an HTTP (method, path, body)) that the group guards.
CALLS: dict[str, tuple[str, Callable[[Any, Any], Any], tuple[str, str, Any]]] = {
    "model-repository": (S.ADMIN_HEADER, lambda c, h: c.get_model_repository_index(headers=h),
                         ("POST", "/v2/repository/index", {})),
    "shared-memory": (S.ADMIN_HEADER,
                      lambda c, h: c.get_system_shared_memory_status(headers=h),
                      ("GET", "/v2/systemsharedmemory/status", None)),
    "statistics": (S.ADMIN_HEADER, lambda c, h: c.get_inference_statistics(headers=h),
                   ("GET", "/v2/models/stats", None)),
    "trace": (S.ADMIN_HEADER, lambda c, h: c.get_trace_settings(headers=h),
              ("GET", "/v2/trace/setting", None)),
    "logging": (S.ADMIN_HEADER, lambda c, h: c.get_log_settings(headers=h),
                ("GET", "/v2/logging", None)),
    "metadata": (S.INFERENCE_HEADER, lambda c, h: c.get_model_metadata(MODEL, headers=h),
                 ("GET", f"/v2/models/{MODEL}", None)),
    "model-config": (S.INFERENCE_HEADER, lambda c, h: c.get_model_config(MODEL, headers=h),
                     ("GET", f"/v2/models/{MODEL}/config", None)),
    # gRPC: a unary inference (the decoupled ensemble needs a stream: our client's, below)
    "inference": (S.INFERENCE_HEADER,
                  lambda c, h: c.infer("preprocessing", _inputs(), headers=h),
                  ("POST", f"/v2/models/{MODEL}/generate",
                   {"text_input": "hi", "max_tokens": 2})),
}


def _inputs() -> list[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    a = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
    a.set_data_from_numpy(np.array([[b"hi"]], dtype=object))
    b = grpcclient.InferInput("REQUEST_OUTPUT_LEN", [1, 1], "INT32")
    b.set_data_from_numpy(np.array([[2]], dtype=np.int32))
    return [a, b]


def _http(srv: Any, method: str, path: str, body: Any, header: str, key: str | None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url_http + path, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **({header: key} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.parametrize("group", sorted(CALLS))
def test_every_restricted_group_needs_its_key_over_grpc_and_http(secured: Any,
                                                                 group: str) -> None:
    from tritonclient.utils import InferenceServerException

    header, grpc_call, (method, path, body) = CALLS[group]
    right = ADMIN if header == S.ADMIN_HEADER else INFER
    for key in (None, WRONG, INFER if right == ADMIN else ADMIN):  # the other key is wrong too
        client, headers = _grpc(secured, key, header)
        with pytest.raises(InferenceServerException) as e:
            grpc_call(client, headers)
        assert "restricted" in str(e.value) or "header" in str(e.value), (group, str(e.value))
        status = _http(secured, method, path, body, header, key)
        assert status in (401, 403), (group, key, status)
    client, headers = _grpc(secured, right, header)
    grpc_call(client, headers)  # no exception
    assert _http(secured, method, path, body, header, right) == 200, group


def test_health_stays_open(secured: Any) -> None:
    import tritonclient.grpc as grpcclient

    assert grpcclient.InferenceServerClient(secured.grpc_address).is_server_ready()
    with urllib.request.urlopen(secured.url_http + "/v2/health/ready", timeout=10) as r:
        assert r.status == 200


def test_our_client_is_unauthorized_without_the_key_and_served_with_it(secured: Any) -> None:
    from tritonllm.client import LLMClient, Unauthorized

    with LLMClient(secured.grpc_address, MODEL) as c, pytest.raises(Unauthorized):
        c.generate("hi", 2)
    with LLMClient(secured.grpc_address, MODEL, inference_key=WRONG) as c, \
            pytest.raises(Unauthorized):
        c.generate("hi", 2)
    with LLMClient(secured.grpc_address, MODEL, inference_key=INFER) as c:
        assert c.generate("hi", 4).text is not None
        with pytest.raises(Unauthorized):
            c.models()  # the repository index is an admin endpoint
        assert INFER not in repr(c)
    with LLMClient(secured.url_http, MODEL, inference_key=INFER, admin_key=ADMIN) as c:
        assert c.generate("hi", 2).text is not None
        assert any(m.name == MODEL for m in c.models())


def test_no_key_in_the_log_the_launcher_output_or_a_repr(secured: Any) -> None:
    log = Path(secured.log_path).read_text(errors="replace")
    assert log, "the server wrote no log"
    for key in (ADMIN, INFER):
        assert key not in log
        assert not any(key in line for line in secured.said)
        assert key not in repr(secured.options)
        assert key not in secured.options.access.describe()


# ---- TLS ------------------------------------------------------------------------------------

def _certs(where: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a second
    CA that signed neither (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: Any, cert: Any) -> None:
        (where / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (where / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ca(cn: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, issuer: tuple[Any, Any], server: bool) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer[1].subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1)))
        if server:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return key, b.sign(issuer[0], hashes.SHA256())

    root = ca("tritonllm test CA")
    write("ca", *root)
    write("server", *leaf("localhost", root, True))
    write("client", *leaf("tritonllm test client", root, False))
    write("other-ca", *ca("another CA"))
    return {n: where / n for n in ("ca.crt", "server.crt", "server.key", "client.crt",
                                   "client.key", "other-ca.crt")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _certs(tmp_path_factory.mktemp("certs"))


def _tls_server(engine: Path, where: Path, certs: dict[str, Path], mutual: bool) -> Any:
    from tritonllm.builders.repository import render_repository
    from tritonllm.server import ServerOptions, TritonServer
    from tritonllm.settings import RepoSettings

    repo = where / "repo"
    # the fewest Python stubs (the quickest start): these servers only answer a few requests
    render_repository(engine, repo, RepoSettings(preprocessing_instance_count=1,
                                                 bls_instance_count=1))
    tls = S.TlsSettings(certs["server.crt"], certs["server.key"],
                        certs["ca.crt"] if mutual else None)
    return TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                      host="127.0.0.1", tls=tls, startup_timeout=300,
                                      log_file=where / "tritonserver.log"))


def test_grpc_tls_with_a_ca(cpu_engine: Path, tmp_path: Path, certs: dict[str, Path]) -> None:
    from tritonllm.client import ClientError, LLMClient

    with _tls_server(cpu_engine, tmp_path, certs, mutual=False) as srv:
        url = f"grpcs://{srv.grpc_address}"
        with LLMClient(url, MODEL, root_certificates=str(certs["ca.crt"]), timeout=30) as c:
            assert c.generate("hi", 2).text is not None
        with LLMClient(srv.grpc_address, MODEL, timeout=10) as plain, \
                pytest.raises(ClientError):
            plain.generate("hi", 2)  # plaintext to a TLS port
        with LLMClient(url, MODEL, root_certificates=str(certs["other-ca.crt"]),
                       timeout=10) as wrong, pytest.raises(ClientError):
            wrong.generate("hi", 2)  # a CA that did not sign the server's certificate
        with LLMClient(url, MODEL, root_certificates=str(certs["ca.crt"]), timeout=30) as c:
            assert c.generate("again", 2).text is not None  # it kept serving


def test_grpc_mutual_tls_needs_a_client_certificate(cpu_engine: Path, tmp_path: Path,
                                                    certs: dict[str, Path]) -> None:
    from tritonllm.client import ClientError, LLMClient

    with _tls_server(cpu_engine, tmp_path, certs, mutual=True) as srv:
        url = f"grpcs://{srv.grpc_address}"
        ca = str(certs["ca.crt"])
        with LLMClient(url, MODEL, root_certificates=ca, timeout=10) as anon, \
                pytest.raises(ClientError):
            anon.generate("hi", 2)
        with LLMClient(url, MODEL, root_certificates=ca, timeout=30,
                       certificate_chain=str(certs["client.crt"]),
                       private_key=str(certs["client.key"])) as c:
            assert c.generate("hi", 2).text is not None

"""Mutual TLS between the feature party and the label party (certificates made here with openssl)."""

import shutil
import subprocess

import grpc
import pytest

from conftest import small_config
from party_feature.link import GrpcLink
from party_feature.party import build_feature_party

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=splitleak-test-ca",
        cwd=d,
    )
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            "/CN=localhost",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


def test_mutual_tls_run_and_a_client_without_a_certificate_is_refused(tmp_path, certs, label_server):
    server_cfg = small_config(
        tmp_path,
        transport={
            "tls": {"cert": str(certs / "server.pem"), "key": str(certs / "server.key"), "ca": str(certs / "ca.pem")}
        },
    )
    server = label_server(server_cfg)
    client_cfg = small_config(
        tmp_path,
        transport={
            "tls": {"cert": str(certs / "client.pem"), "key": str(certs / "client.key"), "ca": str(certs / "ca.pem")}
        },
        feature_party={"label_party_address": f"localhost:{server.port}", "retry_s": 0, "deadline_s": 10},
    )
    report = build_feature_party(client_cfg).run(GrpcLink(client_cfg))
    assert report.finish.test_samples > 0

    # Same CA, but no client certificate: the handshake fails and the call never reaches the service.
    anonymous = small_config(
        tmp_path,
        transport={"tls": {"ca": str(certs / "ca.pem")}},
        feature_party={"label_party_address": f"localhost:{server.port}", "retry_s": 0, "deadline_s": 5},
    )
    with pytest.raises(grpc.RpcError) as err:
        build_feature_party(anonymous).hello(GrpcLink(anonymous))
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

"""HTTPS through uvicorn's own TLS: the docs' commands (docs/api.md#https) run against a real
``govern serve`` with a self-signed certificate made here with ``cryptography``; the same from
settings (``ssl_certfile``/``ssl_keyfile`` in govern.yaml)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shlex
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.gateway import World, free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, as PEM files in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    crt, pem = folder / "gateway.crt", folder / "gateway.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def doc_commands() -> list[str]:
    section = DOC.read_text().split("## HTTPS", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for line in block.splitlines() if line.strip()]


def serve(world: World, args: list[str]) -> subprocess.Popen:
    log = (world.directory / "https.log").open("w")
    return subprocess.Popen([str(Path(sys.executable).parent / "govern"), *args, "--pg-port", "0",
                             "--flight-port", "0"], cwd=world.directory, stdout=log, stderr=subprocess.STDOUT)


def wait_https(url: str, cert: Path, proc: subprocess.Popen, world: World) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        assert proc.poll() is None, (world.directory / "https.log").read_text()
        try:
            if httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the HTTPS gateway did not start:\n" + (world.directory / "https.log").read_text())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_the_docs_https_commands(world) -> None:
    cert, _ = self_signed(world.directory / "tls")
    serve_line, curl_line = doc_commands()
    port = free_port()
    args = shlex.split(serve_line.replace("8443", str(port)))
    assert args[:2] == ["govern", "serve"]
    proc = serve(world, args[1:])
    try:
        url = f"https://localhost:{port}"
        wait_https(url, cert, proc, world)
        curl = subprocess.run(shlex.split(curl_line.replace("8443", str(port))), cwd=world.directory,
                              capture_output=True, text=True, timeout=30)
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout.strip() == '{"status":"ok"}'
        bob = {**world.auth("bob"), "X-Purpose": "research"}
        r = httpx.get(url + "/v1/datasets/patients/rows", headers=bob, params={"limit": 3, "format": "jsonl"},
                      verify=ssl.create_default_context(cafile=str(cert)), timeout=30)
        assert r.status_code == 200 and len(r.text.splitlines()) == 3
        try:  # plain HTTP to the TLS port gets nothing useful
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert plain.status_code != 200
        except httpx.HTTPError:
            pass
    finally:
        stop(proc)


def test_https_from_settings(world) -> None:
    self_signed(world.directory / "tls")
    with world.config.open("a") as f:
        f.write("\nssl_certfile: tls/gateway.crt\nssl_keyfile: tls/gateway.key\n")
    port = free_port()
    proc = serve(world, ["serve", "--config", str(world.config), "--port", str(port)])
    try:
        wait_https(f"https://127.0.0.1:{port}", world.directory / "tls" / "gateway.crt", proc, world)
    finally:
        stop(proc)


def test_half_a_tls_configuration_is_refused(world) -> None:
    self_signed(world.directory / "tls")
    proc = serve(world, ["serve", "--config", str(world.config), "--port", str(free_port()),
                         "--ssl-certfile", "tls/gateway.crt"])
    assert proc.wait(timeout=60) != 0
    assert "both ssl_certfile and ssl_keyfile" in (world.directory / "https.log").read_text()

"""A local stand-in for Google Cloud Storage that every client of the project reaches, for tests on gs://.

`gcs_emulator(directory)` starts this file as a process: `gcp-storage-emulator` in memory plus an HTTPS proxy,
and yields a `GcsEmulator` whose `env` is what each process of a test needs in its environment *before*
Python starts (TensorFlow reads it once). Which client honours what (../shared/GCS-EMULATION.md):
- google-cloud-storage and Beam's GCS IO: STORAGE_EMULATOR_HOST; pyarrow: CLOUD_STORAGE_EMULATOR_ENDPOINT
  and a service-account file (a fake one here, its token answered by the proxy);
- TensorFlow's built-in gs:// (tf.io.gfile, TFRecordDataset, SavedModel, TFX's file layer) has no endpoint
  setting, only https_proxy and CURL_CA_BUNDLE: the proxy answers TLS for *.googleapis.com with a
  certificate of a throwaway test CA and relays the decrypted bytes to the emulator.

Four gaps of the emulator with TF's client are patched when the process starts (the package is not edited):
an empty media upload (TF's directory markers) arrives as None; resumable-upload Location URLs must stay
https so the next request goes through the proxy again; a body sent with both Content-Length and
`Transfer-Encoding: chunked` is chunked (HTTP/1.1), not Content-Length bytes of chunk framing; a bucket's
`storageLayout` (which TF asks for before renaming a directory, as tf.Transform does to publish its output)
answers "no hierarchical namespace" instead of 404.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import select
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

PROXIED_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
TOKEN_HOST = "oauth2.googleapis.com"
FAKE_TOKEN = "fake-token"
CA_FILE, CERT_FILE, KEY_FILE, CREDENTIALS_FILE = "ca.pem", "proxy-cert.pem", "proxy-key.pem", "sa.json"
DEFAULT_BUCKET = "yt8m-test"
_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class GcsEmulator:
    """A running emulator: `env` for the processes of a test, and a bucket that exists in it."""

    env: dict[str, str]
    bucket: str
    endpoint: str  # http://127.0.0.1:PORT of the emulator itself

    def url(self, *parts: str) -> str:
        """gs://<bucket>/<parts joined by '/'>."""
        return "/".join([f"gs://{self.bucket}", *parts])

    def client(self):
        """A google-cloud-storage client of the emulator (no environment needed in this process)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Name -> content of every object of the bucket under `prefix`."""
        client = self.client()
        bucket = client.bucket(self.bucket)
        # a fresh blob: a listed one would download from its mediaLink, the proxied host
        return {
            blob.name: bucket.blob(blob.name).download_as_bytes()
            for blob in client.list_blobs(self.bucket, prefix=prefix)
        }


@contextlib.contextmanager
def gcs_emulator(directory: str | Path, bucket: str = DEFAULT_BUCKET) -> Iterator[GcsEmulator]:
    """Start the emulator and proxy (keys and certificates go to `directory`); stop them on exit."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "emulator.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, str(directory), bucket], stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT_S)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the GCS emulator did not start; see {directory / 'emulator.log'}")
        ports = json.loads(line)
        yield GcsEmulator(
            env=emulator_env(directory, ports["emulator"], ports["proxy"]),
            bucket=bucket,
            endpoint=f"http://127.0.0.1:{ports['emulator']}",
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def emulator_env(directory: Path, emulator_port: int, proxy_port: int) -> dict[str, str]:
    """The variables by which every client library of the project reaches the emulator."""
    emulator, ca = f"http://127.0.0.1:{emulator_port}", str(directory / CA_FILE)
    return {
        "STORAGE_EMULATOR_HOST": emulator,
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": emulator,
        "https_proxy": f"http://127.0.0.1:{proxy_port}",
        "no_proxy": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": ca,
        "REQUESTS_CA_BUNDLE": ca,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": FAKE_TOKEN,
        "GOOGLE_APPLICATION_CREDENTIALS": str(directory / CREDENTIALS_FILE),
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
    }


# ---- the emulator process (this file run as a script) ----


def write_keys(directory: Path) -> None:
    """A test CA, a certificate for the proxied hosts signed by it, and a fake service-account file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem(private_key) -> bytes:
        return private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, public_key, issuer: str, signing_key, ca: bool, extensions=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, proxy_key, account_key = key(), key(), key()
    ca_cert = certificate("yt8m test CA", ca_key.public_key(), "yt8m test CA", ca_key, ca=True)
    proxy_cert = certificate(
        PROXIED_HOSTS[0],
        proxy_key.public_key(),
        "yt8m test CA",
        ca_key,
        ca=False,
        extensions=[
            x509.SubjectAlternativeName([x509.DNSName(host) for host in PROXIED_HOSTS]),
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
        ],
    )
    (directory / CA_FILE).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / CERT_FILE).write_bytes(proxy_cert.public_bytes(serialization.Encoding.PEM))
    (directory / KEY_FILE).write_bytes(pem(proxy_key))
    account = {
        "type": "service_account",
        "project_id": "yt8m-test",
        "private_key_id": "test",
        "private_key": pem(account_key).decode(),
        "client_email": "tests@yt8m-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"https://{TOKEN_HOST}/token",
    }
    (directory / CREDENTIALS_FILE).write_text(json.dumps(account))


def patch_emulator() -> None:
    """The four start-up patches (see the module docstring)."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    media_upload = objects._media_upload

    def media_upload_of_empty_body(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    objects._media_upload = media_upload_of_empty_body

    request_init = server.Request.__init__

    def https_behind_the_proxy(self, request_handler, method):
        request_init(self, request_handler, method)
        host = (request_handler.headers.get("Host") or "").split(":")[0]
        if host.endswith(".googleapis.com"):
            self._base_url = f"https://{host}"
            self._full_url = self._base_url + self._path
            self._parsed_url = server.urlparse(self._full_url)

    server.Request.__init__ = https_behind_the_proxy

    read_raw_data = server._read_raw_data

    def chunked_before_length(request_handler):
        if (request_handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            del request_handler.headers["Content-Length"]
        return read_raw_data(request_handler)

    server._read_raw_data = chunked_before_length

    def storage_layout(request, response, storage, *args, **kwargs):
        name = request.params.get("bucket_name")
        response.json(
            {"kind": "storage#storageLayout", "bucket": name, "hierarchicalNamespace": {"enabled": False}}
        )

    layout_route = (
        r"^(/storage/v1)?/b/(?P<bucket_name>[-.\w]+)/storageLayout$",
        {server.GET: storage_layout},
    )
    server.HANDLERS = (layout_route, *server.HANDLERS)


def _pipe(client: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Relay bytes both ways until either side closes (TLS may hold decrypted bytes select does not see)."""
    while True:
        readable = [client] if client.pending() else select.select([client, upstream], [], [], 300)[0]
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (upstream if source is client else client).sendall(data)


class _TokenHandler(BaseHTTPRequestHandler):
    """oauth2.googleapis.com/token: a fake access token for any (service-account) grant."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"access_token": FAKE_TOKEN, "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def proxy_handler(tls: ssl.SSLContext, emulator_port: int) -> type[BaseHTTPRequestHandler]:
    class ConnectProxy(BaseHTTPRequestHandler):
        """CONNECT host:443 of a proxied host: TLS with the test certificate, then the emulator (or a fake
        token); any other host is refused (nothing leaves this machine)."""

        def do_CONNECT(self) -> None:  # noqa: N802 (http.server API)
            host = self.path.split(":")[0]
            if host not in PROXIED_HOSTS:
                self.send_error(403, f"{host} is not emulated")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            client = tls.wrap_socket(self.connection, server_side=True)
            try:
                if host == TOKEN_HOST:
                    _TokenHandler(client, self.client_address, self.server)
                else:
                    with socket.create_connection(("127.0.0.1", emulator_port)) as upstream:
                        _pipe(client, upstream)
            finally:
                client.close()
                self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    return ConnectProxy


def serve(directory: Path, bucket: str) -> None:
    """Start the emulator and the proxy on free loopback ports, print them as one JSON line, serve."""
    from gcp_storage_emulator.handlers.buckets import create_bucket
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)  # it warns on every response
    write_keys(directory)
    patch_emulator()
    storage = Storage(use_memory_fs=True)
    create_bucket(bucket, storage)
    emulator = HTTPServer(("127.0.0.1", 0), lambda *args: RequestHandler(storage, *args))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler(tls, emulator.server_address[1]))
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    print(json.dumps({"emulator": emulator.server_address[1], "proxy": proxy.server_address[1]}), flush=True)
    emulator.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])

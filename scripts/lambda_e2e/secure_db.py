"""lambda-e2e, the database as on AWS: TLS verify-full, a migrator and an application role whose
credentials live in Secrets Manager, and the application's password rotated mid-run.

  TlsCluster   a private PostgreSQL cluster (initdb into a temporary directory, a free loopback
               port) that refuses connections without TLS — like RDS with rds.force_ssl — and
               serves a certificate for `localhost` signed by a CA made here with openssl.
  scenario     run.py's run_secure_database: a consumer given another CA, and one given an IP
               address the certificate does not name, both fail their init; the consumer Lambda with the
               right CA applies the migrations as the migrator and creates the application's
               role at init; half the batches; the application password rotated in PostgreSQL and
               in moto's Secrets Manager and its open connections closed; the other half, each
               failed batch redelivered from its reported record as the event source mapping
               does; the compactor after another rotation; then counts exact in PostgreSQL,
               DynamoDB and the lake.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pylib import HOST, run, wait_until

from . import events
from .functions import Emulator, Function, free_port

DATABASE = "analytics"
MIGRATOR = "analytics_migrator"
APPLICATION = "analytics_app"
# What the binaries log when a refused password makes them read the secret again
# (service_kit::postgres::Database::renew_credentials_if_refused).
RENEWED = "the database refused the password; read the secret again"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"{name} not found: PostgreSQL's server binaries are needed (scripts/local-stack.sh "
                           "installs them)")
    return found[-1]


def _openssl(*args: str) -> None:
    out = run(["openssl", *args])
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])}: {out.stderr.strip()}")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (P-256, valid one day): (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN=lambda-e2e {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path], dns_name: str) -> tuple[Path, Path]:
    """A server certificate for `dns_name` only (no IP address), signed by `ca`."""
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={dns_name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "1", "-out", str(cert), "-extfile", str(ext))
    return cert, key


class TlsCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port> that accepts only TLS logins with
    SCRAM passwords (the superuser `postgres` may log in over its Unix socket, for set-up)."""

    def __init__(self, log_copy: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="lambda-e2e-pg-"))
        self.port = free_port()
        self.log_copy = log_copy
        # initdb and postgres refuse to run as root: as root, the cluster belongs to `postgres`.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        tls = self.dir / "tls"
        tls.mkdir()
        self.ca = make_ca(tls, "ca")
        self.other_ca = make_ca(tls, "other-ca")
        cert, key = make_server_cert(tls, self.ca, "localhost")
        data = self.dir / "data"
        if self.as_owner:
            self.dir.chmod(0o755)
            tls.chmod(0o755)
            shutil.chown(key, "postgres")
            shutil.chown(self.dir, "postgres")
        key.chmod(0o600)
        out = run([*self.as_owner, _bin("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                   "--auth-host=reject", "--no-sync"])
        if out.returncode != 0:
            raise RuntimeError(f"initdb: {out.stderr.strip()}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{HOST}'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                       f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
                       "password_encryption = 'scram-sha-256'\nfsync = off\nmax_connections = 60\n")
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            f"hostssl all all {HOST}/32 scram-sha-256\n"
            f"hostnossl all all {HOST}/32 reject\n")
        self.log = self.dir / "postgres.log"
        out = run([*self.as_owner, _bin("pg_ctl"), "-D", str(data), "-l", str(self.log), "-w", "-t", "60", "start"])
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {out.stderr.strip()} {self._log_tail()}")
        self.data = data

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-10:])
        except OSError:
            return ""

    def admin(self, sql: str, database: str = "postgres") -> str:
        """SQL as the superuser over the Unix socket (set-up and checks only)."""
        out = run(["psql", "-w", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-X",
                   "-v", "ON_ERROR_STOP=1", "-Atqc", sql, database])
        if out.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def login(self, user: str, password: str, sql: str) -> subprocess.CompletedProcess:
        """SQL as `user` over TLS with verify-full against the CA, the way the binaries connect."""
        dsn = (f"host=localhost port={self.port} dbname={DATABASE} user={user} sslmode=verify-full "
               f"sslrootcert={self.ca[0]}")
        return run(["psql", "-w", "-X", "-v", "ON_ERROR_STOP=1", "-Atqc", sql, dsn], env={**os.environ, "PGPASSWORD": password})

    def url(self, user: str, password: str) -> str:
        return (f"postgres://{user}:{password}@localhost:{self.port}/{DATABASE}"
                f"?sslmode=verify-full&sslrootcert={self.ca[0]}")

    def stop(self) -> None:
        run([*self.as_owner, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        try:
            shutil.copyfile(self.log, self.log_copy)
        except OSError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def secret_text(user: str, password: str, port: int) -> str:
    # The shape AWS's rotation functions keep (engine/host/port/dbname beside the credentials);
    # RDS's own master secret holds only username and password.
    return json.dumps({"engine": "postgres", "host": "localhost", "port": port, "dbname": DATABASE,
                       "username": user, "password": password})


def deliver(emu: Emulator, function: str, batch: list[dict], check) -> int:
    """Invokes with `batch`, then — as the event source mapping does with ReportBatchItemFailures —
    again from each reported record until the batch succeeds; returns the redeliveries."""
    records, redeliveries = batch, 0
    while True:
        status, body, _ = emu.invoke(function, events.kinesis_event(records))
        check(status == 200 and isinstance(body, dict) and "batchItemFailures" in body, f"invoke: {status} {body}")
        failures = body["batchItemFailures"]
        if not failures:
            return redeliveries
        check(len(failures) == 1, f"more than one reported failure: {failures}")
        ids = [r["kinesis"]["sequenceNumber"] for r in records]
        check(failures[0]["itemIdentifier"] in ids, f"reported record {failures[0]} is not in the batch")
        records = records[ids.index(failures[0]["itemIdentifier"]):]
        redeliveries += 1
        check(redeliveries <= 3, f"batch still failing after {redeliveries} redeliveries: {body}")
        time.sleep(0.2)


def rotate(cluster: TlsCluster, secrets_client, arn: str) -> tuple[str, int]:
    """What a rotation does to the application's login: a new password in PostgreSQL and in the
    secret. Then closes the role's open connections — on AWS they would outlive the rotation until
    the pool recycles them; here the next batch must log in anew, now. Returns (password, closed)."""
    password = secrets.token_urlsafe(18)
    cluster.admin(f"ALTER ROLE {APPLICATION} PASSWORD '{password}'")
    secrets_client.put_secret_value(SecretId=arn, SecretString=secret_text(APPLICATION, password, cluster.port))
    closed = int(cluster.admin(
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{APPLICATION}'"))
    return password, closed

"""The wal source's replication connection (connector/readers/replication.py) over real
authentication: SCRAM-SHA-256 passwords over TLS (sslmode=require and verify-full), the
password from PGPASSWORD, and refusals (a wrong password, an untrusted CA) as one line that
holds no password - on a throwaway cluster whose pg_hba.conf lets the role in over hostssl
with scram-sha-256 only. The other connections (asyncpg, connector/db.py) read the same DSNs
the same way."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector import db
from connector.db import DatabaseError
from connector.readers import pgoutput
from connector.readers.replication import ReplicationStream
from connector.vocabulary import PostgresConfig

ROLE, PASSWORD, DBNAME = "r", "S3cret-pw", "authdb"
WRONG = "Wr0ng-pw-42"
PUBLICATION = "auth_pub"

# The role gets in only over TLS with SCRAM; anything else over TCP is rejected. The
# superuser uses the Unix socket (trust). A logical replication connection (the wal source's)
# names its database and matches `all` like any session; the `replication` keyword matches
# only physical replication, so it is not needed here.
HBA = f"""\
local all all trust
hostssl all {ROLE} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 reject
"""


@dataclass(frozen=True)
class Server:
    port: int
    socket_dir: str  # the superuser's way in (trust over the Unix socket)
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not
    log: Path

    def dsn(self, *, password: str | None = PASSWORD, **query: str) -> str:
        auth = ROLE + (":" + quote(password, safe="") if password is not None else "")
        q = "&".join(f"{k}={quote(v, safe='/')}" for k, v in query.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{DBNAME}" + (f"?{q}" if q else "")

    @contextlib.contextmanager
    def admin(self, dbname: str = DBNAME) -> Iterator[psycopg2.extensions.cursor]:
        """A superuser cursor (autocommit) over the Unix socket; closed after."""
        c = psycopg2.connect(host=self.socket_dir, port=self.port, user="postgres",
                             dbname=dbname)
        c.autocommit = True
        try:
            with c.cursor() as cur:
                yield cur
        finally:
            c.close()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_certificates(directory: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate it signs for 127.0.0.1 (an IP SAN: verify-full checks it),
    and an unrelated CA: (server.crt, server.key, ca.crt, other-ca.crt)."""
    ca_key, ca = _ca("pgconnector test CA")
    _, other = _ca("pgconnector other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "server.crt", directory / "server.key", directory / "ca.crt",
             directory / "other-ca.crt")
    paths[0].write_bytes(_pem(cert))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(_pem(ca))
    paths[3].write_bytes(_pem(other))
    os.chmod(paths[1], 0o600)  # PostgreSQL refuses a key others can read
    return paths


def _give_to_server(cluster_user: str | None, *paths: Path) -> None:
    if cluster_user is None:
        return
    user = pwd.getpwnam(cluster_user)
    for p in paths:
        os.chown(p, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    from bench.cluster import PostgresCluster

    # The certificates live in the cluster's directory (owned by the server's user when we
    # are root), so they go with it.
    cluster = PostgresCluster("wal_level=logical", "max_replication_slots=10",
                              "max_wal_senders=10", "ssl=on", "log_connections=on",
                              "password_encryption=scram-sha-256")
    try:
        crt, key, ca, other_ca = write_certificates(cluster.dir)
        cluster.settings += (f"ssl_cert_file={crt}", f"ssl_key_file={key}")
        cluster.init()
        hba = cluster.data / "pg_hba.conf"
        hba.write_text(HBA)
        _give_to_server("postgres" if os.geteuid() == 0 else None, crt, key, ca, other_ca, hba)
        cluster.start()
        s = Server(cluster.port, str(cluster.dir), ca, other_ca, cluster.logfile)
        with s.admin("postgres") as cur:
            cur.execute(f"CREATE ROLE {ROLE} LOGIN REPLICATION PASSWORD %s", (PASSWORD,))
            cur.execute(f"CREATE DATABASE {DBNAME} OWNER {ROLE}")
        with s.admin() as cur:
            cur.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
            cur.execute(f"ALTER TABLE t OWNER TO {ROLE}")
            cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE t")
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,))
            stored = cur.fetchone()
            assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")  # not md5
        yield s
    finally:
        cluster.remove()


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test gives: no PGPASSWORD, passfile or PGSSL* from the environment."""
    for var in ("PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGCHANNELBINDING", "PGHOST",
                "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.fixture
def slot(server: Server) -> Iterator[str]:
    """A pgoutput slot of its own (it sees only what is written after it); dropped after."""
    name = f"auth_{uuid.uuid4().hex[:12]}"
    with server.admin() as cur:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    try:
        yield name
    finally:
        deadline = time.monotonic() + 10
        while True:  # the walsender may outlive close() by a moment
            try:
                with server.admin() as cur:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                break
            except psycopg2.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _insert(server: Server, first: int, n: int) -> None:
    with server.admin() as cur:
        cur.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(%s, %s) g",
                    (first, first + n - 1))


async def _read_inserts(s: ReplicationStream, n: int, within: float = 10.0
                        ) -> tuple[list[bytes], int | None]:
    decoder = pgoutput.Decoder()
    ids: list[bytes] = []
    committed: int | None = None
    deadline = time.monotonic() + within
    while len(ids) < n or committed is None:  # the commit may come in a later read
        assert time.monotonic() < deadline, f"only {len(ids)} inserts arrived"
        batch = await s.read(1000, 0.2)
        changes, end = decoder.feed((m.lsn, m.payload) for m in batch)
        ids += [c.new[0] for c in changes if c.op == "insert" and c.new is not None]
        committed = end if end is not None else committed
    return ids, committed


async def _stream_round_trip(server: Server, pg: PostgresConfig, slot: str, first: int
                             ) -> tuple[ReplicationStream, int]:
    """Open a stream, insert three rows, read them back, confirm; the open stream and the
    walsender's pid (found by application name)."""
    s = ReplicationStream(pg, slot, PUBLICATION, status_interval=0.2)
    await s.open()
    try:
        _insert(server, first, 3)
        ids, committed = await _read_inserts(s, 3)
        assert ids == [str(i).encode() for i in range(first, first + 3)]
        assert committed is not None
        s.confirm(committed)
        with server.admin() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' "
                        "AND application_name = %s", (pg.application_name,))
            rows = cur.fetchall()
        assert len(rows) == 1, rows
    except BaseException:
        await s.close()
        raise
    return s, rows[0][0]


def _ssl_of(server: Server, pid: int) -> tuple[bool, str | None, str]:
    with server.admin() as cur:
        cur.execute("SELECT s.ssl, s.version, a.usename FROM pg_stat_ssl s "
                    "JOIN pg_stat_activity a USING (pid) WHERE pid = %s", (pid,))
        row = cur.fetchone()
    assert row is not None
    return row


def _authenticated_with_scram(server: Server, application: str) -> None:
    """log_connections: the walsender with this application name logged in with SCRAM."""
    deadline = time.monotonic() + 5
    while True:
        log = server.log.read_text(errors="replace")
        authorized = [line for line in log.splitlines()
                      if "replication connection authorized" in line and application in line]
        if authorized:
            break
        assert time.monotonic() < deadline, "no 'replication connection authorized' logged"
        time.sleep(0.05)
    assert "SSL enabled" in authorized[-1], authorized[-1]
    # The 'authenticated' line precedes it; with the default log_line_prefix (%m [%p]) both
    # carry the walsender's pid.
    pid = re.search(r"\[(\d+)\]", authorized[-1])
    assert pid is not None, authorized[-1]
    ours = [line for line in log.splitlines() if f"[{pid.group(1)}]" in line
            and "connection authenticated" in line]
    assert ours and f'identity="{ROLE}" method=scram-sha-256' in ours[-1], ours


def _one_line_without_passwords(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    assert PASSWORD not in text and WRONG not in text, text
    assert quote(PASSWORD, safe="") not in text and quote(WRONG, safe="") not in text, text
    return text


def _application() -> str:
    return f"auth-test-{uuid.uuid4().hex[:8]}"


async def test_scram_over_tls_with_sslmode_require(server: Server, slot: str) -> None:
    pg = PostgresConfig(dsn=server.dsn(sslmode="require"), application_name=_application())
    s, pid = await _stream_round_trip(server, pg, slot, 1)
    try:
        is_ssl, version, user = _ssl_of(server, pid)
        assert is_ssl and version and version.startswith("TLS") and user == ROLE
        _authenticated_with_scram(server, pg.application_name or "")
    finally:
        await s.close()


async def test_sslmode_verify_full_checks_the_servers_certificate(
        server: Server, slot: str) -> None:
    pg = PostgresConfig(dsn=server.dsn(sslmode="verify-full", sslrootcert=str(server.ca)),
                        application_name=_application())
    s, pid = await _stream_round_trip(server, pg, slot, 100)
    try:
        assert _ssl_of(server, pid)[0]
    finally:
        await s.close()

    untrusted = PostgresConfig(dsn=server.dsn(sslmode="verify-full",
                                              sslrootcert=str(server.other_ca)))
    with pytest.raises(DatabaseError) as exc:
        await ReplicationStream(untrusted, slot, PUBLICATION).open()
    text = _one_line_without_passwords(exc.value)
    assert text.startswith(f"replication from {ROLE}@127.0.0.1:{server.port}/{DBNAME}: ")
    assert "certificate verify failed" in text, text


async def test_the_password_from_pgpassword(server: Server, slot: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    pg = PostgresConfig(dsn=server.dsn(password=None, sslmode="require"),
                        application_name=_application())
    s, pid = await _stream_round_trip(server, pg, slot, 200)
    try:
        assert _ssl_of(server, pid)[0]
    finally:
        await s.close()


@pytest.mark.parametrize("how", ["wrong password", "wrong PGPASSWORD", "no password"])
async def test_a_refused_password_is_one_line_without_it(
        server: Server, slot: str, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "wrong password":
        dsn = server.dsn(password=WRONG, sslmode="require")
    else:
        dsn = server.dsn(password=None, sslmode="require")
        if how == "wrong PGPASSWORD":
            monkeypatch.setenv("PGPASSWORD", WRONG)
    with pytest.raises(DatabaseError) as exc:
        await ReplicationStream(PostgresConfig(dsn=dsn), slot, PUBLICATION).open()
    text = _one_line_without_passwords(exc.value)
    assert text.startswith(f"replication from {ROLE}@127.0.0.1:{server.port}/{DBNAME}: ")
    expected = ("no password supplied" if how == "no password"
                else f'password authentication failed for user "{ROLE}"')
    assert expected in text, text

    # asyncpg (connector/db.py) refuses the same DSN the same way
    with pytest.raises(DatabaseError) as exc:
        await db.connect(PostgresConfig(dsn=dsn))
    text = _one_line_without_passwords(exc.value)
    if how != "no password":
        assert "rejected the credentials" in text and expected in text, text


async def test_without_tls_the_role_is_rejected(server: Server, slot: str) -> None:
    """The pg_hba.conf really requires TLS for the role: the tests above did not pass on a
    rule that would have let a plain connection in."""
    dsn = server.dsn(sslmode="disable")
    with pytest.raises(DatabaseError) as exc:
        await ReplicationStream(PostgresConfig(dsn=dsn), slot, PUBLICATION).open()
    text = _one_line_without_passwords(exc.value)
    assert "no encryption" in text or "rejects" in text, text


@pytest.mark.parametrize("how", ["require", "verify-full", "PGPASSWORD"])
async def test_asyncpg_reads_the_same_dsn(server: Server, monkeypatch: pytest.MonkeyPatch,
                                          how: str) -> None:
    if how == "require":
        dsn = server.dsn(sslmode="require")
    elif how == "verify-full":
        dsn = server.dsn(sslmode="verify-full", sslrootcert=str(server.ca))
    else:
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        dsn = server.dsn(password=None, sslmode="require")
    c = await db.connect(PostgresConfig(dsn=dsn))
    try:
        row = await c.fetchrow("SELECT s.ssl, current_user AS u FROM pg_stat_ssl s "
                               "WHERE s.pid = pg_backend_pid()")
        assert row is not None and row["ssl"] and row["u"] == ROLE
    finally:
        await c.close()


async def test_asyncpg_refuses_an_untrusted_ca_in_one_line(server: Server) -> None:
    dsn = server.dsn(sslmode="verify-full", sslrootcert=str(server.other_ca))
    with pytest.raises(DatabaseError) as exc:
        await db.connect(PostgresConfig(dsn=dsn))
    _one_line_without_passwords(exc.value)

"""A team's MLflow server on PostgreSQL: ``make server`` / ``make server-stop``
(``python -m ohlora_eval.tracking.server start|stop``), and the tests' team server.

What it guarantees (docs/scaling.md, "A team server"):

- **Only what it started answers.** Both ports must be free before anything starts (else
  one line naming the port and what holds it, exit 2); the MLflow server counts as up only
  while the process started here is alive and answering, so another program on the port
  is never mistaken for it.
- **No trust.** The database cluster is initialised with scram-sha-256 for every
  connection, socket and TCP (no ``trust``, no ``peer``); its superuser's password and the
  MLflow role's password are generated here and kept in 0600 files under ``<dir>/secrets``
  (a folder of mode 0700). The MLflow role owns the ``mlflow`` database and nothing else:
  not a superuser, cannot create databases or roles, cannot connect elsewhere. The MLflow
  server reads its password from a ``PGPASSFILE``, never from its command line (``ps``
  shows no password).
- **127.0.0.1 only**, both PostgreSQL and the MLflow server.
- **Stopping waits** until both ports are free again.

As root, PostgreSQL (which refuses to run as root) runs as an ordinary user (``pg_user``,
made if missing), which owns the data folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "ohlora_admin"
ROLE = "ohlora"
DATABASE = "mlflow"
HOST = "127.0.0.1"


class ServerError(Exception):
    """A server that cannot be started or stopped: the message says why and what to do."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A child of this process that has ended is reaped
    here (until then it is a zombie that ``kill(pid, 0)`` still finds: stopping a server this
    process started would wait for it in vain)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        ended, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: kill(pid, 0) said enough
        return True
    return ended != pid


def port_holder(port: int) -> str | None:
    """What listens on ``port`` of 127.0.0.1 (a command line when it can be found), or None
    when the port is free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return None
        except OSError:
            pass
    who = _listener(port)
    return who or "another program"


def _listener(port: int) -> str | None:
    """The process listening on ``port`` (Linux: /proc/net/tcp -> socket inode -> pid)."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                    inodes.add(parts[9])
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    return f"pid {pid}: {cmd.decode(errors='replace').strip()[:120]}"
    except OSError:
        return None
    return None


def _write_secret(path: Path, text: str, owner_uid: int | None = None) -> None:
    """A file only its owner can read (0600), written without a moment of wider access."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
    if owner_uid is not None:
        os.chown(path, owner_uid, -1)


@dataclass
class TeamServer:
    """PostgreSQL in ``<folder>/pg`` and ``mlflow server`` on it, both on 127.0.0.1."""

    folder: Path
    port: int = 5000
    pg_port: int = 5433
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")
    pg_user: str = "ohlora-pg"
    mlflow: Path = field(default_factory=lambda: Path(sys.executable).with_name("mlflow"))
    workers: int = 2

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.pg_bin = Path(self.pg_bin)

    # --- paths --------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.folder / "pg"

    @property
    def secrets(self) -> Path:
        return self.folder / "secrets"

    @property
    def pgpass(self) -> Path:
        """libpq's password file for the MLflow role (``PGPASSFILE`` of the server)."""
        return self.secrets / "mlflow.pgpass"

    @property
    def admin_password_file(self) -> Path:
        return self.secrets / "admin.password"

    @property
    def pid_file(self) -> Path:
        return self.folder / "mlflow.pid"

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_url(self) -> str:
        """The backend store URI: no password in it (libpq reads ``PGPASSFILE``)."""
        return f"postgresql+psycopg2://{ROLE}@{HOST}:{self.pg_port}/{DATABASE}"

    # --- PostgreSQL -------------------------------------------------------------------------
    def _os_user(self) -> tuple[str | None, int | None]:
        """As root, the ordinary user that runs PostgreSQL (made if missing)."""
        if os.geteuid() != 0:
            return None, None
        try:
            pwd.getpwnam(self.pg_user)
        except KeyError:
            subprocess.run(["useradd", "-r", "-m", self.pg_user], check=True, capture_output=True)
        return self.pg_user, pwd.getpwnam(self.pg_user).pw_uid

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user, _ = self._os_user()
        cmd = [str(self.pg_bin / args[0]), *args[1:]]
        if user is not None:
            cmd = ["runuser", "-u", user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and done.returncode != 0:
            raise ServerError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return done

    def _pg_running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and (
            self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0
        )

    def _init_cluster(self) -> None:
        """A new cluster whose every connection needs a password (scram-sha-256)."""
        _, uid = self._os_user()
        self.data.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            os.chown(self.data, uid, -1)
        os.chmod(self.data, 0o700)
        admin_pw = secrets.token_urlsafe(32)
        _write_secret(self.admin_password_file, admin_pw + "\n")
        # initdb reads the password as the PostgreSQL user: a file only it can read, then gone.
        pwfile = self.data.parent / ".initdb.pw"
        _write_secret(pwfile, admin_pw + "\n", uid)
        try:
            self._pg(
                "initdb", "-D", str(self.data), "-U", ADMIN, "-E", "UTF8",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "# ohlora_eval team server: a password for everyone, 127.0.0.1 only\n"
            "local   all   all                  scram-sha-256\n"
            "host    all   all   127.0.0.1/32   scram-sha-256\n"
        )
        if uid is not None:
            os.chown(hba, uid, -1)

    def _start_postgres(self) -> None:
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"),
            "-o", f"-h {HOST} -p {self.pg_port} -k {self.data}", "-w", "start",
        )  # fmt: skip

    def _connect(self, user: str = ADMIN, password: str | None = None, dbname: str = "postgres"):
        """A connection to the cluster (autocommit), as the superuser by default."""
        import psycopg2

        if password is None:
            password = self.admin_password_file.read_text().strip()
        conn = psycopg2.connect(
            host=HOST, port=self.pg_port, user=user, password=password, dbname=dbname
        )
        conn.autocommit = True
        return conn

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        """Run ``query`` in the mlflow database as the MLflow role (what the server can do)."""
        password = self.pgpass.read_text().strip().rsplit(":", 1)[1]
        with contextlib.closing(self._connect(ROLE, password, DATABASE)) as conn:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []

    def _ensure_role_and_database(self) -> None:
        """The MLflow role (a fresh password each start) owning the mlflow database only."""
        from psycopg2 import sql

        password = secrets.token_urlsafe(32)
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
            verb = "ALTER" if cur.fetchall() else "CREATE"
            cur.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    " NOBYPASSRLS PASSWORD %s"
                ).format(sql.SQL(verb), sql.Identifier(ROLE)),
                [password],
            )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if not cur.fetchall():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DATABASE), sql.Identifier(ROLE)
                    )
                )
            # Nobody but the owner connects to mlflow; the MLflow role connects nowhere else.
            for db in ("postgres", "template1", DATABASE):
                cur.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db))
                )
        _write_secret(self.pgpass, f"{HOST}:{self.pg_port}:{DATABASE}:{ROLE}:{password}\n")

    # --- MLflow -----------------------------------------------------------------------------
    def _mlflow_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _start_mlflow(self, wait_s: float) -> None:
        log = self.folder / "mlflow.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PGPASSFILE=str(self.pgpass))
        proc = subprocess.Popen(
            [str(self.mlflow), "server", "--host", HOST, "--port", str(self.port),
             "--workers", str(self.workers), "--backend-store-uri", self.db_url,
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text()[-1500:].strip().splitlines()[-3:]
                raise ServerError(
                    f"mlflow server on port {self.port} exited at start (status"
                    f" {proc.returncode}): {' | '.join(tail)}; its log: {log}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200 and proc.poll() is None:
                        return
            except OSError:
                time.sleep(0.3)
        self._stop_mlflow()
        raise ServerError(
            f"mlflow server did not answer on {self.uri} in {wait_s:.0f} s; log {log}"
        )

    def _stop_mlflow(self) -> None:
        pid = self._mlflow_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                if self._mlflow_pid() is None:
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    # --- the two commands -------------------------------------------------------------------
    def start(self, wait_s: float = 120) -> str:
        """Start what is not running; return the line to print. ServerError when it cannot."""
        if not (self.pg_bin / "initdb").exists():
            raise ServerError(
                f"no PostgreSQL in {self.pg_bin} (apt-get install postgresql, or PG_BIN=...)"
            )
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ServerError("psycopg2 missing: pip install -e '.[scale]'") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)  # PostgreSQL's user must reach its data folder
        self.secrets.mkdir(exist_ok=True)
        os.chmod(self.secrets, 0o700)
        running = self._mlflow_pid()
        if running is not None:
            return f"mlflow server already running (pid {running}): {self.uri}"
        for port, what in ((self.pg_port, "PostgreSQL (PG_PORT)"), (self.port, "MLflow (PORT)")):
            if what.startswith("PostgreSQL") and self._pg_running():
                continue
            holder = port_holder(port)
            if holder:
                raise ServerError(
                    f"port {port} for {what} is taken by {holder}; stop it or choose another"
                    f" port, e.g. make server {what.split('(')[1][:-1]}={port + 1}"
                )
        if not (self.data / "PG_VERSION").exists():
            self._init_cluster()
        if not self._pg_running():
            self._start_postgres()
        self._ensure_role_and_database()
        self._start_mlflow(wait_s)
        return (
            f"team server: {self.uri} (PostgreSQL on {HOST}:{self.pg_port}, database"
            f" {DATABASE} owned by role {ROLE}; artifacts {self.folder / 'artifacts'})\n"
            f"use it:      export MLFLOW_TRACKING_URI={self.uri}"
        )

    def stop(self, wait_s: float = 30) -> str:
        """Stop both and wait until their ports are free."""
        said = []
        if self._mlflow_pid() is not None:
            self._stop_mlflow()
            said.append("mlflow server stopped")
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
            said.append("PostgreSQL stopped")
        deadline = time.monotonic() + wait_s
        busy = [self.port, self.pg_port]
        while busy and time.monotonic() < deadline:
            busy = [p for p in busy if port_holder(p)]
            if busy:
                time.sleep(0.2)
        if busy and said:
            said.append(f"port(s) {busy} still taken after {wait_s:.0f} s")
        return "; ".join(said) or "nothing was running"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ohlora_eval.tracking.server",
        description="A team's MLflow server on PostgreSQL, both on 127.0.0.1 (make server).",
    )
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--dir", type=Path, default=Path(".server"), help="its folder (.server)")
    p.add_argument("--port", type=int, default=5000, help="the MLflow server's port (5000)")
    p.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (5433)")
    p.add_argument("--pg-bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    p.add_argument("--pg-user", default="ohlora-pg", help="runs PostgreSQL when we are root")
    args = p.parse_args(argv)
    server = TeamServer(args.dir, args.port, args.pg_port, args.pg_bin, args.pg_user)
    try:
        print(server.start() if args.action == "start" else server.stop())
    except ServerError as exc:
        print(f"ohlora_eval.server: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

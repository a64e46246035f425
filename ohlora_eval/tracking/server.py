"""A team's MLflow server on PostgreSQL: ``make server`` / ``make server-stop``
(``python -m ohlora_eval.tracking.server start|stop|add-user``), and the tests' team server.

What it guarantees (docs/scaling.md, "A team server"):

- **Only what it started answers.** Both ports must be free before anything starts (else
  one line naming the port and what holds it, exit 2); the MLflow server counts as up only
  while the process started here is alive and answering, so another program on the port
  is never mistaken for it; ``stop`` stops only a process it can show is that server (its
  command line names ``mlflow server`` and this port), whatever ``mlflow.pid`` says.
- **A login for everyone.** MLflow's basic-auth app: every request needs a user and a
  password (an admin, made at the first start, and one account per teammate,
  ``add-user``); the passwords are written 0600 for whoever started the server.
- **Artifacts stay in the store.** The app (``tracking/server_app.py``) refuses artifact
  locations outside the proxied store and never serves or writes a run's files from anywhere
  else, so no request reaches the server's own files.
- **No trust in the database.** The cluster is initialised with scram-sha-256 for every
  connection, socket and TCP (no ``trust``, no ``peer``). Its superuser's password exists only
  while the cluster is set up, then the password is removed (nobody can log in as the
  superuser afterwards; nothing stores it). The MLflow role owns the ``mlflow`` database and
  nothing else (not a superuser, cannot create databases or roles, cannot connect elsewhere);
  the server reads its password from a ``PGPASSFILE``, never from its command line.
- **Files it can trust.** The server's folder must belong to whoever starts it and be
  writable by nobody else; secrets are created in a 0700 folder, 0600, never through a link.
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
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ohlora_eval.tracking.ports import HOST, listener, port_holder

ADMIN = "ohlora_admin"
ROLE = "ohlora"
DATABASE = "mlflow"
MLFLOW_ADMIN = "admin"  # the MLflow server's admin account (basic auth)
APP_NAME = "ohlora-team"  # tracking/server_app.py, an mlflow.app entry point


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


def _write_secret(path: Path, text: str, owner_uid: int | None = None) -> None:
    """A file only its owner can read (0600), written without a moment of wider access and
    never through a link (a link planted where the file goes is refused, not followed)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ServerError(f"cannot write {path} ({exc.strerror}): is it a link?") from None
    try:
        os.fchmod(fd, 0o600)
        if owner_uid is not None:
            os.fchown(fd, owner_uid, -1)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _own_folder(path: Path, mode: int) -> None:
    """``path`` is a real folder (not a link) owned by this user and writable by nobody else,
    made with ``mode`` if missing: else a ServerError (another user could redirect what the
    server writes there)."""
    if path.is_symlink():
        raise ServerError(f"{path} is a link; give the server a folder of its own")
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.geteuid():
        owner = _user_name(st.st_uid)
        raise ServerError(
            f"{path} belongs to {owner}, not to you ({_user_name(os.geteuid())}): the server's"
            " files must be in a folder of yours (SERVER_DIR=...)"
        )
    if st.st_mode & 0o022:
        raise ServerError(
            f"{path} can be written by other users (mode {st.st_mode & 0o777:o}); chmod go-w it"
            " or give SERVER_DIR another folder"
        )
    os.chmod(path, mode)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


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
    def auth_config(self) -> Path:
        """MLflow's basic-auth settings (``MLFLOW_AUTH_CONFIG_PATH``): its user database."""
        return self.secrets / "basic_auth.ini"

    @property
    def flask_key_file(self) -> Path:
        return self.secrets / "flask.key"

    def password_file(self, user: str) -> Path:
        """An MLflow account's password, readable by whoever started the server."""
        return self.secrets / "users" / f"{user}.password"

    @property
    def credentials(self) -> tuple[str, str]:
        """The MLflow admin's user name and password (for ``MLFLOW_TRACKING_USERNAME`` and
        ``MLFLOW_TRACKING_PASSWORD``)."""
        return MLFLOW_ADMIN, self.password_file(MLFLOW_ADMIN).read_text().strip()

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

    def _init_cluster(self) -> str:
        """A new cluster whose every connection needs a password (scram-sha-256); returns the
        superuser's password, which is kept nowhere (``_set_up`` removes it when done)."""
        _, uid = self._os_user()
        self.data.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            os.chown(self.data, uid, -1)
        os.chmod(self.data, 0o700)
        admin_pw = secrets.token_urlsafe(32)
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
        hba.unlink()
        _write_secret(
            hba,
            "# ohlora_eval team server: a password for everyone, 127.0.0.1 only\n"
            "local   all   all                  scram-sha-256\n"
            "host    all   all   127.0.0.1/32   scram-sha-256\n",
            uid,
        )
        return admin_pw

    def _start_postgres(self) -> None:
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"),
            "-o", f"-h {HOST} -p {self.pg_port} -k {self.data}", "-w", "start",
        )  # fmt: skip

    def _connect(self, user: str, password: str, dbname: str = "postgres"):
        """A connection to the cluster (autocommit)."""
        import psycopg2

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

    def _set_up(self, admin_pw: str) -> None:
        """The MLflow role owning the mlflow database only, then the superuser's password
        removed: from now on nobody logs in as the superuser (nothing stores its password)."""
        from psycopg2 import sql

        password = secrets.token_urlsafe(32)
        with contextlib.closing(self._connect(ADMIN, admin_pw)) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    " NOBYPASSRLS PASSWORD %s"
                ).format(sql.Identifier(ROLE)),
                [password],
            )
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
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(ADMIN)))

    def _new_cluster(self) -> None:
        """Initialise, start and set up a cluster; a failure part way leaves none behind (the
        next start begins again: nothing half made needs the superuser later)."""
        try:
            admin_pw = self._init_cluster()
            self._start_postgres()
            self._set_up(admin_pw)
        except BaseException:
            if (self.data / "postmaster.pid").exists():
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
            import shutil

            shutil.rmtree(self.data, ignore_errors=True)
            self.pgpass.unlink(missing_ok=True)
            raise

    # --- MLflow -----------------------------------------------------------------------------
    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is this server: an ``mlflow server`` on this port (a pid file can
        name any process: a stale one after a reboot, or one written by someone else)."""
        cmd = _cmdline(pid).split()
        return (
            _alive(pid)
            and "server" in cmd
            and any(Path(c).name == "mlflow" or c.endswith("/mlflow") for c in cmd)
            and "--port" in cmd
            and cmd[cmd.index("--port") + 1 : cmd.index("--port") + 2] == [str(self.port)]
        )

    def _mlflow_pid(self) -> int | None:
        """The running server's pid: the pid file's, if that process is this server."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _write_auth_config(self) -> dict[str, str]:
        """MLflow's basic-auth settings and secrets (made at the first start, kept after);
        the environment the server needs for them."""
        users = self.secrets / "users"
        _own_folder(users, 0o700)
        if not self.password_file(MLFLOW_ADMIN).exists():
            _write_secret(self.password_file(MLFLOW_ADMIN), secrets.token_urlsafe(24) + "\n")
        if not self.flask_key_file.exists():
            _write_secret(self.flask_key_file, secrets.token_hex(32) + "\n")
        _write_secret(
            self.auth_config,
            "[mlflow]\n"
            "# every teammate may read and log runs; creating accounts and permissions is the\n"
            "# admin's (python -m ohlora_eval.tracking.server add-user --name <who>)\n"
            "default_permission = EDIT\n"
            f"database_uri = sqlite:///{self.secrets / 'basic_auth.db'}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.flask_key_file.read_text().strip(),
            # read once, when the admin is made at the first start; ignored afterwards
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.credentials[1],
        }

    def _start_mlflow(self, wait_s: float) -> None:
        log = self.folder / "mlflow.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PGPASSFILE=str(self.pgpass))
        env.update(self._write_auth_config())
        log.unlink(missing_ok=True)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        proc = subprocess.Popen(
            [str(self.mlflow), "server", "--host", HOST, "--port", str(self.port),
             "--workers", str(self.workers), "--backend-store-uri", self.db_url,
             "--artifacts-destination", str(self.folder / "artifacts"),
             "--app-name", APP_NAME],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(out)
        self.pid_file.unlink(missing_ok=True)
        _write_secret(self.pid_file, f"{proc.pid}\n")
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
        """Stop the server's process group, if the pid file names this server; else the
        server found on this port, if it is one (never another process)."""
        pid = self._mlflow_pid()
        if pid is None:
            pid = self._server_on_port()
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

    def _server_on_port(self) -> int | None:
        """The group leader of an ``mlflow server`` of this port's listener, if that is one."""
        who = listener(self.port)
        if not who or not who.startswith("pid "):
            return None
        pid = int(who.split(":", 1)[0][4:])
        for candidate in (pid, os.getpgid(pid) if _alive(pid) else pid):
            if self._is_ours(candidate):
                return candidate
        return None

    def add_user(self, name: str) -> str:
        """A teammate's MLflow account with a generated password (0600, for whoever started
        the server); returns the lines to print."""
        import base64
        import json

        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ServerError(f"--name {name!r}: use letters, digits, '-', '_' or '.'")
        if self._mlflow_pid() is None:
            raise ServerError("the server is not running: make server first")
        password = secrets.token_urlsafe(18)
        user, admin_pw = self.credentials
        auth = base64.b64encode(f"{user}:{admin_pw}".encode()).decode()
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/users/create",
            data=json.dumps({"username": name, "password": password}).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            why = exc.read().decode(errors="replace")[:200]
            raise ServerError(f"the server refused the account {name!r}: {why}") from None
        _write_secret(self.password_file(name), password + "\n")
        return (
            f"account {name!r} made; its password is in {self.password_file(name)} (0600).\n"
            f"give it to {name}, who then uses: export MLFLOW_TRACKING_URI={self.uri}"
            f" MLFLOW_TRACKING_USERNAME={name} MLFLOW_TRACKING_PASSWORD=<the password>"
        )

    # --- the commands -------------------------------------------------------------------------
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
        _own_folder(self.folder, 0o755)  # PostgreSQL's user must reach its data folder
        _own_folder(self.secrets, 0o700)
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
            self._new_cluster()
        elif not self.pgpass.exists():
            raise ServerError(
                f"{self.pgpass} is gone and no superuser password is kept to make a new one:"
                f" stop the server, delete {self.data} (the runs in it) and start again"
            )
        if not self._pg_running():
            self._start_postgres()
        self._start_mlflow(wait_s)
        user = self.credentials[0]
        return (
            f"team server: {self.uri} (PostgreSQL on {HOST}:{self.pg_port}, database"
            f" {DATABASE} owned by role {ROLE}; artifacts {self.folder / 'artifacts'})\n"
            f"use it:      export MLFLOW_TRACKING_URI={self.uri} MLFLOW_TRACKING_USERNAME={user}"
            f' MLFLOW_TRACKING_PASSWORD="$(cat {self.password_file(user)})"\n'
            "teammates:   python -m ohlora_eval.tracking.server add-user --name <who>"
            " (one account each)"
        )

    def stop(self, wait_s: float = 30) -> str:
        """Stop both and wait until their ports are free."""
        said = []
        if self._mlflow_pid() is not None or self._server_on_port() is not None:
            self._stop_mlflow()
            said.append("mlflow server stopped")
        elif self.pid_file.exists():
            self.pid_file.unlink()
            said.append(f"{self.pid_file.name} named no server of port {self.port}: removed")
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
    p.add_argument("action", choices=["start", "stop", "add-user"])
    p.add_argument("--name", help="add-user: the teammate's account name")
    p.add_argument("--dir", type=Path, default=Path(".server"), help="its folder (.server)")
    p.add_argument("--port", type=int, default=5000, help="the MLflow server's port (5000)")
    p.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (5433)")
    p.add_argument("--pg-bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    p.add_argument("--pg-user", default="ohlora-pg", help="runs PostgreSQL when we are root")
    args = p.parse_args(argv)
    server = TeamServer(args.dir, args.port, args.pg_port, args.pg_bin, args.pg_user)
    try:
        if args.action == "add-user":
            if not args.name:
                raise ServerError("add-user needs --name <who>")
            print(server.add_user(args.name))
        else:
            print(server.start() if args.action == "start" else server.stop())
    except ServerError as exc:
        print(f"ohlora_eval.server: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

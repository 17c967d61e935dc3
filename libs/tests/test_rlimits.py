"""Services raise their open-files limit themselves: a fanout node must not stop at a
default soft limit of 1,024 sockets when the hard limit allows more."""

import resource
import subprocess
import sys


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    script = (
        "import resource; from confab.rlimits import raise_open_files; "
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; "
        "print(before, raise_open_files(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], preexec_fn=lower, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    before, returned, after = map(int, done.stdout.split())
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert (before, returned, after) == (low, expected, expected)

"""scripts/setup.sh chooses torch's source once, by pip's configuration, without retry loops.

``scripts/torch_source.py`` is run as setup.sh runs it, with pip's configuration files
switched off (``PIP_CONFIG_FILE`` = the null device) and the sources given as PIP_*
variables, so the machine's own pip configuration does not leak in.
"""
from __future__ import annotations

import functools
import http.server
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = "torch==9.9.9+cpu"  # a version no real folder holds
TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
WHEEL = f"torch-9.9.9+cpu-{TAG}-{TAG}-manylinux_2_28_{platform.machine()}.whl"


def source(index: str, **pip_env: str) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, **pip_env)
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "torch_source.py"), SPEC, index], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    return out, time.monotonic() - start


@pytest.fixture()
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_configured_wheel_folder_is_used_without_asking_the_index(tmp_path, closed_port):
    (tmp_path / WHEEL).write_bytes(b"")
    assert source(f"http://127.0.0.1:{closed_port}", PIP_FIND_LINKS=str(tmp_path))[0] == "configured"


def test_a_configured_file_index_listing_the_wheel_is_used(tmp_path, closed_port):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text(f'<a href="../../f/{WHEEL.replace("+", "%2B")}">'
                                                   f'{WHEEL.replace("+", "%2B")}</a>')
    got = source(f"http://127.0.0.1:{closed_port}", PIP_EXTRA_INDEX_URL=f"file://{tmp_path}")
    assert got[0] == "configured"


def test_a_wheel_for_another_python_is_not_taken(tmp_path, closed_port):
    (tmp_path / WHEEL.replace(TAG, "cp27")).write_bytes(b"")
    assert source(f"http://127.0.0.1:{closed_port}", PIP_FIND_LINKS=str(tmp_path))[0] == "none"


def test_the_cpu_index_is_used_when_it_answers(tmp_path):
    (tmp_path / "torch").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert source(f"http://127.0.0.1:{server.server_port}", PIP_FIND_LINKS=str(tmp_path))[0] == "cpu-index"
    finally:
        server.shutdown()
        server.server_close()


def test_an_index_that_never_answers_is_given_up_after_one_short_probe(tmp_path):
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        got, seconds = source(f"http://127.0.0.1:{silent.getsockname()[1]}", PIP_FIND_LINKS=str(tmp_path))
    assert got == "none" and seconds < 12  # one 5 s probe (plus start-up on a loaded machine)


def test_setup_script_retries_network_indexes_once_and_pins_torch():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'NET=(--retries 1 --timeout 15)' in text
    assert text.count('install "${NET[@]}"') == 3 and '--constraint "$pin"' in text
    assert "--no-index" not in text  # the old first try, whose failure fell back to retry loops


def test_make_test_fast_skips_slow_tests_and_sets_up_only_the_test_extra():
    fast = subprocess.run(["make", "-n", "-C", str(ROOT), "test-fast"], capture_output=True, text=True,
                          check=True).stdout
    full = subprocess.run(["make", "-n", "-C", str(ROOT), "test"], capture_output=True, text=True,
                          check=True).stdout
    assert [ln for ln in fast.splitlines() if not ln.startswith("make")] == [
        "bash scripts/setup.sh test", '.venv/bin/python -m pytest -q -m "not slow"']
    assert ".venv/bin/python -m pytest -q\n" in full and "not slow" not in full

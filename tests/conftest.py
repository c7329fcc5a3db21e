"""Shared fixtures: the real server (`pbx_server` factory, `shared_pbx`) and peer plumbing.

The tests directory is put on sys.path so tests import the drivers as ``peers.*`` and the
server fixture as ``integration.server_fixture``.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from integration.rtpengine_fixture import media_engine, private_rtpengine, rtpengine  # noqa: E402, F401
from integration.server_fixture import PbxServer, start_pbx  # noqa: E402
from peers import baresip  # noqa: E402

_SERVERS = pytest.StashKey[list]()


def _remember(request: pytest.FixtureRequest, server: PbxServer) -> None:
    node = request.node
    node.stash.setdefault(_SERVERS, []).append(server)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        # CI must run everything: a skip there hides a missing peer or service. Under xdist
        # this runs in the worker, and the controller receives the failed report.
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true forbids skips): {reason}"
    if report.failed:
        for server in item.stash.get(_SERVERS, []):
            state = "running" if server.alive() else f"exited {server.process.returncode}"
            report.sections.append(
                (f"pbx server log tail ({server.log_path}, {state})", server.log_tail(80)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Where the results gather (the xdist controller, or a serial run): skips the hook above
    # cannot turn into failures, such as a whole module skipped at collection, fail CI too.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if IN_CI and skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        reporter.write_line(f"CI=true forbids skips: {len(skipped)} skipped", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


HEAVY = "heavy"


@pytest.fixture(autouse=True)
def _heavy_tests_run_alone(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under xdist, a test marked ``xdist_group("heavy")`` (500-call runs, bursts, kill -9
    under load, deadlines) runs with no other test of the run beside it, so it is never
    starved by neighbours; the others share. The gate lets a heavy test in before tests
    that arrive after it (flock alone would let shared holders starve it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    group = request.node.get_closest_marker("xdist_group")
    heavy = group is not None and HEAVY in (*group.args, *group.kwargs.values())
    folder = tmp_path_factory.getbasetemp().parent  # the run's, shared by its workers
    with open(folder / "tests-gate.lock", "a") as gate, \
            open(folder / "tests-running.lock", "a") as running:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(running, fcntl.LOCK_EX if heavy else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(running, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _no_phone_outlives_its_test():
    """A test that fails before stopping its baresip phones leaves none running."""
    yield
    for phone in list(baresip.RUNNING):
        phone.stop()


@pytest.fixture
def pbx_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``server = pbx_server(config_yaml=None, extra_args=(), sip_trace=False)``.

    Every server started is stopped (SIGTERM, then SIGKILL of its process group) when the
    test ends; its log tail is attached to the report if the test fails.
    """
    started: list[PbxServer] = []

    def start(config_yaml: str | None = None, *, extra_args: tuple[str, ...] = (),
              sip_trace: bool = False, env: dict[str, str] | None = None) -> PbxServer:
        workdir = tmp_path_factory.mktemp("pbx")
        server = start_pbx(workdir, config_yaml=config_yaml, extra_args=extra_args,
                           sip_trace=sip_trace, env=env)
        started.append(server)
        _remember(request, server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def _shared_pbx_process(tmp_path_factory: pytest.TempPathFactory):
    server = start_pbx(tmp_path_factory.mktemp("pbx-shared"), sip_trace=True)
    yield server
    server.stop()


@pytest.fixture
def shared_pbx(request: pytest.FixtureRequest, _shared_pbx_process: PbxServer) -> PbxServer:
    """The session's default-config server, for the many small tests that share one."""
    if not _shared_pbx_process.alive():
        pytest.fail(f"the shared pbx server died (exit {_shared_pbx_process.process.returncode});"
                    f" log tail:\n{_shared_pbx_process.log_tail()}")
    _remember(request, _shared_pbx_process)
    return _shared_pbx_process

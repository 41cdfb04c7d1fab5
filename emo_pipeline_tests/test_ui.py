"""The Dagster UI as a user meets it: `dagster dev` on a demo world, driven in headless Chromium.

The test starts the server the way `make ui` does (bound to 127.0.0.1 only), checks the asset groups
on the lineage page, launches the `raw` group with the group page's "Materialize all" button, waits
for the run through the GraphQL API, and opens the plot that `emotion6_labels` carries in its
metadata. Screenshots of each page stay under the test's tmp_path.

Playwright drives Debian's Chromium (`make browser` installs it); it never downloads a browser of its
own. Without /usr/bin/chromium the test is skipped, with the reason `make browser` gives (it installs
Chromium only as root). The test is marked `ui`: `make test-fast` leaves it out, `make test` runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from emo_pipeline.core.home import PROJECT_ROOT
from emo_pipeline_tests.conftest import pipeline_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
GROUPS = ("raw", "image_models", "datasets", "objects", "scenes")
RAW_ASSETS = {
    "emotion6_labels", "emotion6_rejected", "emotion6_split",
    "emotionroi_maps", "emotionroi_split", "emotionroi_rejected",
    "vg_images", "vg_objects", "vg_relationships", "vg_attributes", "vg_rejected",
}
SERVER_START_TIMEOUT_S = 240  # about 20 s on an idle 2-core machine, 50 s on a loaded one
SERVER_STOP_GRACE_S = 20
RUN_TIMEOUT_S = 300  # the raw group's 25 steps take about 1 minute idle, 2.5 minutes loaded
UI_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1600, "height": 1000}
# The server is on loopback: no proxy from the environment (a test may have set one) sits in between.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _why_no_chromium() -> str:
    """Why the UI test is skipped: the same reason `make browser` gives when it installs nothing."""
    if os.geteuid() != 0:
        return (f"no Chromium at {CHROMIUM}: installing Debian's chromium needs root and `make browser` "
                "never calls sudo (run `make browser` as root to enable the UI test)")
    if shutil.which("apt-get") is None:
        return f"no Chromium at {CHROMIUM} and no apt-get: install Chromium there to run the UI test"
    return f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium"


pytestmark = [pytest.mark.ui, pytest.mark.skipif(not CHROMIUM.is_file(), reason=_why_no_chromium())]


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as error:
            return f"(no server log: {error})"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with LOOPBACK.open(request, timeout=30) as response:
            answer = json.load(response)
        assert "errors" not in answer, f"GraphQL errors: {answer['errors']}"
        return answer["data"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_tree(pid: int) -> list:
    """The server and all its descendants as psutil processes, or [] without psutil."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    import psutil

    addresses = set()
    for process in _process_tree(pid):
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        addresses |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


def _assert_binds_loopback_only(server: Server) -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return  # `-h 127.0.0.1` is still what the server was given
    addresses = _listening_addresses(server.process.pid)
    assert ("127.0.0.1", server.port) in addresses, addresses
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in addresses), f"listening beyond loopback: {addresses}"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever is left after the grace period."""
    tree = _process_tree(process.pid)  # children that left the group are stopped too
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=SERVER_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers in the group, if any
    except ProcessLookupError:
        pass
    for child in tree[1:]:
        try:
            child.kill()
        except Exception:  # already gone
            pass
    process.wait(timeout=10)


@contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """`dagster dev` maps SIGTERM to its SIGINT handler; when pytest itself runs with SIGINT ignored
    (a background job of a non-interactive shell), the child would inherit that and ignore SIGTERM."""
    previous = signal.getsignal(signal.SIGINT)
    restore = False
    if previous is signal.SIG_IGN:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            restore = True
        except ValueError:  # not the main thread: SIGKILL after the grace period still stops it
            pass
    try:
        yield
    finally:
        if restore:
            signal.signal(signal.SIGINT, previous)


@pytest.fixture
def dagster_ui(world: Path, tmp_path: Path) -> Iterator[Server]:
    """`dagster dev` on the session's demo world with a fresh EMO_HOME and DAGSTER_HOME; stopped even when
    the test fails."""
    home = tmp_path / "emo_home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = pipeline_env(home, world, PYTHONUNBUFFERED="1")
    port = _free_port()
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "dagster_dev.log"
    with open(log, "wb") as log_file, _sigint_not_ignored():
        process = subprocess.Popen(
            [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        last_error: Exception | None = None
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited with {process.returncode} before answering:\n{server.log_tail()}")
            try:
                with LOOPBACK.open(f"{server.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError) as error:
                last_error = error
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not answer on {server.url}/server_info within "
                            f"{SERVER_START_TIMEOUT_S} s (last error: {last_error!r}; proxies: "
                            f"{urllib.request.getproxies()}):\n{server.log_tail()}")
            time.sleep(1)
        yield server
    finally:
        _stop(process)


@contextmanager
def _diagnose(page, server: Server, out: Path) -> Iterator[None]:
    """On any failure in the browser, keep what the page showed and say what the server logged."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as error:
        try:
            page.screenshot(path=str(out / "failure.png"))
            (out / "failure.html").write_text(page.content())
        except Exception:
            pass
        raise AssertionError(f"{error}\n\nat {page.url}; page saved as {out}/failure.png and failure.html\n"
                             f"server log tail:\n{server.log_tail()}") from error


def _assert_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file(), path
    assert path.stat().st_size > 20_000, f"{path} is only {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (VIEWPORT["width"], VIEWPORT["height"]), image
        low, high = image.convert("L").getextrema()
        assert high - low > 100, f"{path} is nearly blank"


def _wait_for_run(server: Server, run_id: str) -> dict:
    query = """
      query Run($runId: ID!) {
        runOrError(runId: $runId) {
          __typename
          ... on Run { runId status assetMaterializations { assetKey { path } } stepStats { stepKey status } }
          ... on PythonError { message }
        }
      }"""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = server.graphql(query, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S} s:\n{server.log_tail()}")
        time.sleep(2)


def test_ui_materializes_the_raw_group_and_shows_its_plot(dagster_ui: Server, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    server = dagster_ui
    _assert_binds_loopback_only(server)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            # A fresh instance greets a local user with a "Join the Dagster community" dialog: skip it
            # whenever it stands in the way.
            skip = page.get_by_role("dialog").get_by_role("button", name="Skip", exact=True)
            page.add_locator_handler(skip, lambda button: button.click())

            with _diagnose(page, server, tmp_path):
                # 1. The lineage page lists the asset groups.
                page.goto(f"{server.url}/asset-groups")
                expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=UI_TIMEOUT_MS)
                for group in GROUPS:
                    expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                try:  # the dialog opens a second after the first page loads
                    skip.wait_for(state="visible", timeout=5_000)
                except Exception:
                    pass
                expect(skip).to_have_count(0, timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(shots / "asset_graph.png"), animations="disabled")

                # 2. The raw group's page: "Materialize all".
                page.goto(f"{server.url}/locations/emo_pipeline/asset-groups/raw")
                expect(page.get_by_text("Never materialized").first).to_be_visible(timeout=UI_TIMEOUT_MS)
                materialize_all = page.get_by_role("button", name=re.compile(r"Materialize all$"))
                expect(materialize_all).to_be_enabled(timeout=UI_TIMEOUT_MS)
                materialize_all.click()
                launched = page.get_by_text(re.compile(r"^Launched run"))
                launchpad = page.get_by_role("dialog").get_by_role("button", name=re.compile(r"^(Materialize|Launch)"))
                expect(launched.or_(launchpad).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                if not launched.is_visible():  # the assets asked for config: launch from the launchpad
                    launchpad.first.click()
                    expect(launched).to_be_visible(timeout=UI_TIMEOUT_MS)
                page.get_by_role("link", name="View", exact=True).click()  # the toast's link to the run
                page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT_MS)
                run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)

                # 3. The run succeeds (GraphQL) and its page says so.
                run = _wait_for_run(server, run_id)
                failed_steps = [s["stepKey"] for s in run["stepStats"] if s["status"] != "SUCCESS"]
                assert run["status"] == "SUCCESS", f"run {run_id}: {run['status']}, steps {failed_steps}\n" + \
                    server.log_tail()
                expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(shots / "run.png"), animations="disabled")

                # 4. emotion6_labels: the latest materialization's `emotion_profile` renders as a PNG.
                page.goto(f"{server.url}/assets/emotion6_labels")
                page.get_by_role("tab", name="Events").click()
                row = page.locator("tr", has_text="emotion_profile")
                expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
                row.get_by_text("Show Markdown").click()
                plot = page.get_by_role("dialog").locator('img[src^="data:image/png;base64,"]').first
                expect(plot).to_be_visible(timeout=UI_TIMEOUT_MS)
                page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle(),
                                       timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(shots / "asset.png"), animations="disabled")
        finally:
            context.close()

    for name in ("asset_graph.png", "run.png", "asset.png"):
        _assert_screenshot(shots / name)

    # The run, read back: the UI launched exactly one, and it materialized the raw group.
    runs = server.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert runs == [{"runId": run_id, "status": "SUCCESS"}]
    materialized = {"/".join(m["assetKey"]["path"]) for m in run["assetMaterializations"]}
    assert materialized == RAW_ASSETS
    _assert_binds_loopback_only(server)

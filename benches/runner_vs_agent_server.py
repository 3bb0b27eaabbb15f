"""smolpaws `agent serve` and openhands-agent-server, one after the other in
one run on this machine, measured as a user of the SDK meets them: start to
healthy, idle memory, SDK `execute_command("true")` and a 1 MiB
`file_download`. Run by benches/runner_vs_agent_server.sh, which says how."""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from openhands.sdk.workspace import RemoteWorkspace

KEY = "bench-key-0123456789abcdef"
COMMANDS = int(os.environ.get("BENCH_COMMANDS", "200"))
DOWNLOADS = int(os.environ.get("BENCH_DOWNLOADS", "50"))


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    """The resident memory of `pid` and its descendants."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        pending += [int(c) for c in children]
    return total


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def measure(name, command, env, cwd, port, working_dir):
    """Starts a server, measures it, stops it."""
    # Made before the clock starts: a client's TLS set-up is no server's time.
    probe = httpx.Client(timeout=1)
    began = time.perf_counter()
    server = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if probe.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - began > 120:
                sys.exit(f"{name} did not become healthy")
            time.sleep(0.005)
        healthy = time.perf_counter() - began
        time.sleep(2)
        idle = rss_kib(server.pid)

        os.makedirs(working_dir, exist_ok=True)
        workspace = RemoteWorkspace(host=url, api_key=KEY, working_dir=working_dir)
        for _ in range(5):  # connections, caches
            workspace.execute_command("true")
        commands = []
        for _ in range(COMMANDS):
            start = time.perf_counter()
            result = workspace.execute_command("true")
            commands.append(time.perf_counter() - start)
            if result.exit_code != 0:
                sys.exit(f"{name}: true failed: {result}")
        blob = f"{working_dir}/blob.bin"
        if not workspace.file_upload(os.urandom(1 << 20), blob).success:
            sys.exit(f"{name}: the upload failed")
        downloads = []
        with tempfile.TemporaryDirectory() as local:
            for n in range(DOWNLOADS):
                start = time.perf_counter()
                got = workspace.file_download(blob, f"{local}/{n}")
                downloads.append(time.perf_counter() - start)
                if not got.success or got.file_size != 1 << 20:
                    sys.exit(f"{name}: the download failed: {got}")
        return {
            "execute_command(\"true\") p50": percentile(commands, 0.5) * 1000,
            "execute_command(\"true\") p90": percentile(commands, 0.9) * 1000,
            "1 MiB file_download p50": percentile(downloads, 0.5) * 1000,
            "start to healthy": healthy * 1000,
            "idle RSS": idle / 1024,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def main():
    smolpaws = sys.argv[1]
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        ours = measure(
            "smolpaws",
            [smolpaws, "agent", "serve", "--listen", f"127.0.0.1:{port}"],
            base | {
                "HOME": home,
                "SMOLPAWS_RUNNER_TOKEN": KEY,
                "SMOLPAWS_WORKSPACE_ROOT": f"{home}/workspaces",
                "SMOLPAWS_PERSISTENCE_DIR": f"{home}/conversations",
                "LLM_MODEL": "unused",
                "RUST_LOG": "warn",
            },
            home,
            port,
            f"{home}/workspaces/project",
        )
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        theirs = measure(
            "openhands-agent-server",
            [sys.executable, "-m", "openhands.agent_server", "--host", "127.0.0.1", "--port", str(port)],
            base | {
                "HOME": home,
                "SESSION_API_KEY": KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "OPENHANDS_SUPPRESS_BANNER": "1",
            },
            home,
            port,
            f"{home}/workspace/project",
        )
    units = {"idle RSS": "MiB"}
    load = os.getloadavg()[0]
    print(f"{COMMANDS} commands, {DOWNLOADS} downloads each, load {load:.1f} on {os.cpu_count()} CPUs; lower is better\n")
    print(f"| {'':28} | {'smolpaws':>12} | {'agent-server 1.58.2':>20} | {'agent-server / smolpaws':>24} |")
    print(f"| {'-' * 28} | {'-' * 11}: | {'-' * 19}: | {'-' * 23}: |")
    for figure, ours_value in ours.items():
        unit = units.get(figure, "ms")
        theirs_value = theirs[figure]
        ours_text, theirs_text = f"{ours_value:.1f} {unit}", f"{theirs_value:.1f} {unit}"
        print(
            f"| {figure:28} | {ours_text:>12} | {theirs_text:>20} "
            f"| {theirs_value / ours_value:23.1f}x |"
        )


main()

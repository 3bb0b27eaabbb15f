"""Drives `smolpaws agent serve` with the SDK's RemoteWorkspace and
AsyncRemoteWorkspace: every call they make, each checked for what the
agent-server would answer."""

import asyncio
import os
from pathlib import Path

import httpx

from openhands.agent_server.models import BashEventPage, BashOutput
from openhands.sdk.git.models import GitChangeStatus
from openhands.sdk.workspace import AsyncRemoteWorkspace, RemoteWorkspace

from harness import HOST, KEY, WORKDIR, check, report

BLOB = bytes(range(256)) * 4096  # 1 MiB


def commands(workspace):
    """Output, streams apart, exit codes, cwd, stop, and quick answers."""
    ran = workspace.execute_command("echo out; echo err >&2; exit 3")
    check(ran.exit_code == 3, "the exit code", ran)
    check(ran.stdout == "out\n", "stdout alone", ran.stdout)
    check(ran.stderr == "err\n", "stderr alone", ran.stderr)

    os.makedirs(f"{WORKDIR}/sub", exist_ok=True)
    where = workspace.execute_command("pwd", cwd=f"{WORKDIR}/sub")
    check(
        where.stdout.strip() == os.path.realpath(f"{WORKDIR}/sub"),
        "the command ran in its cwd",
        where.stdout,
    )

    quick = workspace.execute_command("true")
    check(quick.exit_code == 0, "true succeeds", quick)

    started = workspace.start_command("sleep 30")
    running = workspace.get_command_output(started)
    check(running is None, "a running command has no output yet", running)
    workspace.stop_command(started)
    # A 30 s command with an exit code now was stopped, not waited for.
    stopped = workspace.get_command_output(started)
    check(stopped is not None, "a stopped command has an output")
    check(stopped["exit_code"] is not None, "a stopped command has ended", stopped)
    return {"stop_exit_code": stopped["exit_code"]}


def files(workspace, local):
    """Upload and download by absolute path, and paths out of the root."""
    uploaded = workspace.file_upload(BLOB, f"{WORKDIR}/data/blob.bin")
    check(uploaded.success, "the upload succeeded", uploaded)
    check(uploaded.file_size == len(BLOB), "the upload's size", uploaded)
    check(Path(f"{WORKDIR}/data/blob.bin").read_bytes() == BLOB, "the uploaded bytes")
    downloaded = workspace.file_download(f"{WORKDIR}/data/blob.bin", local / "blob.bin")
    check(downloaded.success, "the download succeeded", downloaded)
    check((local / "blob.bin").read_bytes() == BLOB, "the downloaded bytes")
    refused = workspace.file_download("/etc/passwd", local / "passwd")
    check(not refused.success, "a path out of the workspace root is refused", refused)
    check("403" in (refused.error or ""), "refused with 403", refused.error)


def git(workspace):
    """Changes and diffs of a repository in the working directory."""
    seeded = workspace.execute_command(
        "git init -q repo && cd repo && echo old > README.md && echo x > gone.txt"
        " && git add . && git -c user.name=t -c user.email=t@e commit -qm first"
        " && echo new > README.md && rm gone.txt && echo hi > added.txt",
        cwd=WORKDIR,
    )
    check(seeded.exit_code == 0, "the repository was made", seeded)
    changes = {str(c.path): c.status for c in workspace.git_changes("repo")}
    check(
        changes
        == {
            "README.md": GitChangeStatus.UPDATED,
            "gone.txt": GitChangeStatus.DELETED,
            "added.txt": GitChangeStatus.ADDED,
        },
        "the changes",
        changes,
    )
    diff = workspace.git_diff("repo/README.md")
    check((diff.original, diff.modified) == ("old\n", "new\n"), "the diff", diff)


def bash_events(http):
    """The search parameters the SDK sends, and clearing."""
    started = http.post(
        "/api/bash/start_bash_command",
        json={"command": "for i in 1 2 3; do echo $i; done", "timeout": 10},
    ).json()
    params = {"kind__eq": "BashOutput", "command_id__eq": started["id"]}
    latest = http.get(
        "/api/bash/bash_events/search",
        params={**params, "sort_order": "TIMESTAMP_DESC", "limit": 1},
    ).json()
    check(len(latest["items"]) == 1, "limit=1 answers one", latest)
    # The agent-server's own models read what the runner serves.
    BashEventPage.model_validate(latest)
    BashOutput.model_validate(latest["items"][0])
    check(latest["items"][0]["stdout"] == "1\n2\n3\n", "the output", latest)
    after = http.get(
        "/api/bash/bash_events/search", params={**params, "order__gt": 0}
    ).json()
    check(after["items"] == [], "order__gt leaves out order 0", after)
    page = http.get("/api/bash/bash_events/search", params={"limit": 1}).json()
    BashEventPage.model_validate(page)
    check(page["next_page_id"], "a first page says where the next starts", page)
    second = http.get(
        "/api/bash/bash_events/search",
        params={"limit": 1, "page_id": page["next_page_id"]},
    ).json()
    check(second["items"][0]["id"] != page["items"][0]["id"], "the next page", second)
    check(http.get("/api/bash/bash_events/search", params={"limit": 0}).is_error, "limit=0 refused")
    cleared = http.delete("/api/bash/bash_events").json()
    check(cleared["cleared_count"] > 0, "DELETE clears", cleared)
    empty = http.get("/api/bash/bash_events/search").json()
    check(empty["items"] == [], "nothing is left", empty)
    unknown = http.post(f"/api/bash/bash_commands/{'0' * 32}/stop")
    check(unknown.status_code == 404, "stopping an unknown command is 404", unknown)


def open_routes():
    """Probes anyone may call, as on the agent-server; the rest needs the key."""
    anonymous = httpx.Client(base_url=HOST)
    check(anonymous.get("/ready").json() == {"status": "ready"}, "/ready")
    check(anonymous.get("/server_info").status_code == 200, "/server_info is open")
    check(
        anonymous.get("/api/bash/bash_events/search").status_code == 401,
        "the API needs the key",
    )


async def asynchronously(local):
    """The same calls through AsyncRemoteWorkspace."""
    async with AsyncRemoteWorkspace(host=HOST, api_key=KEY, working_dir=WORKDIR) as workspace:
        info = await workspace.get_server_info()
        check(info["title"] == "smolpaws runner", "server info", info)
        ran = await workspace.execute_command("echo async; echo oops >&2; exit 4")
        check((ran.exit_code, ran.stdout, ran.stderr) == (4, "async\n", "oops\n"), "async command", ran)
        started = await workspace.start_command("sleep 30")
        await workspace.stop_command(started)
        output = await workspace.get_command_output(started)
        check(output["exit_code"] is not None, "async stop ended the command", output)
        uploaded = await workspace.file_upload(b"async bytes", f"{WORKDIR}/async.txt")
        check(uploaded.success and uploaded.file_size == 11, "async upload", uploaded)
        downloaded = await workspace.file_download(f"{WORKDIR}/async.txt", local / "async.txt")
        check(downloaded.success, "async download", downloaded)
        check((local / "async.txt").read_bytes() == b"async bytes", "async bytes")
        changes = await workspace.git_changes("repo")
        check(len(changes) == 3, "async git changes", changes)
        diff = await workspace.git_diff("repo/README.md")
        check(diff.modified == "new\n", "async git diff", diff)


def main():
    local = Path(os.environ["SMOLPAWS_LOCAL_DIR"])
    open_routes()
    with RemoteWorkspace(host=HOST, api_key=KEY, working_dir=WORKDIR) as workspace:
        info = workspace.get_server_info()
        check(info["title"] == "smolpaws runner", "server info", info)
        facts = commands(workspace)
        files(workspace, local)
        git(workspace)
        bash_events(workspace.client)
    asyncio.run(asynchronously(local))
    report(**facts)


main()

"""Drives the official Daytona SDK against the Daytona at DAYTONA_API_URL
(the fake of tests/support/fake_daytona.rs) through every step smolpaws
takes: create (from the default snapshot, from an image with resources, and
a refused duplicate name), list by labels across pages, get by name, stop and
start, relabel, bulk upload, process session, runAsync exec, command logs (read
and followed), session and sandbox delete.

Every answer the SDK's generated clients parse is also checked for fields
their models do not know (an `additional_properties` entry means the fake
said something Daytona does not), and so is the bulk upload's answer, which
the SDK sends with httpx and does not read. Exits non-zero, saying what was
wrong, at the first step that fails or when any answer was not understood.
"""

import asyncio
import json
import os
import sys
import time

import httpx
import pydantic
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaConflictError,
    FileUpload,
    ListSandboxesQuery,
    Resources,
    SessionExecuteRequest,
)
import daytona_api_client
import daytona_toolbox_api_client
from daytona_toolbox_api_client import UploadFilesResponse

PROBLEMS: list[str] = []


def unknown_fields(value, where: str) -> None:
    """Records every field of a parsed model its class does not declare."""
    if isinstance(value, pydantic.BaseModel):
        extra = getattr(value, "additional_properties", None) or {}
        if extra:
            PROBLEMS.append(f"{where}: fields {type(value).__name__} does not know: {sorted(extra)}")
        for name in type(value).model_fields:
            if name != "additional_properties":
                unknown_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            unknown_fields(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            unknown_fields(item, f"{where}[{key!r}]")


def strict(package, label: str) -> None:
    """Checks every answer the generated client of `package` parses, and
    records the ones it cannot parse even where the SDK would swallow the
    error (an error status is the server's answer, not a parse failure)."""
    original = package.ApiClient.response_deserialize

    def checked(self, response_data, response_types_map=None):
        try:
            answer = original(self, response_data, response_types_map)
        except package.ApiException:
            raise
        except Exception as error:
            PROBLEMS.append(f"{label}: an answer could not be parsed: {error}")
            raise
        unknown_fields(answer.data, f"{label} {type(answer.data).__name__}")
        return answer

    package.ApiClient.response_deserialize = checked


def strict_uploads() -> None:
    original = httpx.Client.post

    def checked(self, url, *args, **kwargs):
        response = original(self, url, *args, **kwargs)
        if str(url).endswith("/files/bulk-upload") and response.is_success:
            try:
                unknown_fields(UploadFilesResponse.from_json(response.text), "bulk-upload")
            except Exception as error:
                PROBLEMS.append(f"bulk-upload: the answer could not be parsed: {error}")
        return response

    httpx.Client.post = checked


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def until(what: str, done, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = done()
        if value is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen in {seconds} s")


def main() -> None:
    strict(daytona_api_client, "api")
    strict(daytona_toolbox_api_client, "toolbox")
    strict_uploads()

    daytona = Daytona(DaytonaConfig(api_key=os.environ["DAYTONA_API_KEY"], api_url=os.environ["DAYTONA_API_URL"]))
    labels = {"app.kubernetes.io/managed-by": "smolpaws", "smolpaws.dev/repository": "octo.hello"}

    print("step create", flush=True)
    sandbox = daytona.create(
        CreateSandboxFromSnapshotParams(name="smolpaws-contract", labels=labels, auto_stop_interval=15),
        timeout=30,
    )
    expect(sandbox.state == "started", f"a new sandbox starts: {sandbox.state}")
    expect(sandbox.name == "smolpaws-contract", f"named as asked: {sandbox.name}")
    built = daytona.create(
        CreateSandboxFromImageParams(image="ubuntu:24.04", labels=labels, resources=Resources(cpu=2, memory=4)),
        timeout=30,
    )
    expect((built.cpu, built.memory) == (2, 4), f"built with its resources: {built.cpu}, {built.memory}")
    try:
        daytona.create(CreateSandboxFromSnapshotParams(name="smolpaws-contract"), timeout=30)
        raise AssertionError("a second sandbox of one name was made")
    except DaytonaConflictError:
        pass

    print("step list", flush=True)
    found = list(daytona.list(ListSandboxesQuery(labels=labels, limit=1)))
    expect(sorted(s.id for s in found) == sorted([sandbox.id, built.id]), f"both listed, page by page: {found}")

    print("step get", flush=True)
    expect(daytona.get("smolpaws-contract").id == sandbox.id, "found by name")

    print("step stop-start", flush=True)
    sandbox.stop(timeout=30)
    expect(sandbox.state == "stopped", f"stopped: {sandbox.state}")
    sandbox.start(timeout=30)
    expect(sandbox.state == "started", f"started again: {sandbox.state}")

    print("step labels", flush=True)
    relabelled = {**labels, "smolpaws.dev/run-uid": "u-1"}
    expect(sandbox.set_labels(relabelled) == relabelled, "relabelled")

    print("step upload", flush=True)
    sandbox.fs.upload_files(
        [
            FileUpload(source=b"#!/bin/sh\necho from the agent\n", destination=".smolpaws/bin/agent"),
            FileUpload(source=b"export GREETING='hello'\n", destination=".smolpaws/runs/u-1/run.env"),
        ]
    )

    print("step session", flush=True)
    sandbox.process.create_session("smolpaws-u-1")

    print("step exec", flush=True)
    executed = sandbox.process.execute_session_command(
        "smolpaws-u-1",
        SessionExecuteRequest(
            command=". .smolpaws/runs/u-1/run.env; sh .smolpaws/bin/agent; echo \"$GREETING\"",
            run_async=True,
        ),
    )
    expect(bool(executed.cmd_id), "a command id")

    def exited():
        session = sandbox.process.get_session("smolpaws-u-1")
        command = next(c for c in session.commands if c.id == executed.cmd_id)
        return command if command.exit_code is not None else None

    command = until("the command's exit", exited)
    expect(command.exit_code == 0, f"exit code: {command.exit_code}")

    print("step logs", flush=True)
    logs = sandbox.process.get_session_command_logs("smolpaws-u-1", executed.cmd_id)
    expect(logs.output == "from the agent\nhello\n", f"its output: {logs.output!r}")
    streamed: list[str] = []
    asyncio.run(
        sandbox.process.get_session_command_logs_async(
            "smolpaws-u-1", executed.cmd_id, streamed.append, streamed.append
        )
    )
    expect("".join(streamed) == logs.output, f"its output, followed: {streamed!r}")

    print("step delete", flush=True)
    sandbox.process.delete_session("smolpaws-u-1")
    daytona.delete(sandbox)
    daytona.delete(built)
    expect(list(daytona.list(ListSandboxesQuery(labels=labels))) == [], "nothing left")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        PROBLEMS.append(f"{type(error).__name__}: {error}")
    if PROBLEMS:
        print(json.dumps({"problems": PROBLEMS}, indent=2), file=sys.stderr)
        sys.exit(1)
    print("contract kept", flush=True)

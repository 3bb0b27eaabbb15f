"""Drives `smolpaws agent serve` with the SDK's RemoteConversation: created,
a message sent, a run to its end (the scripted model makes one tool call),
events synced, attached again, a second run paused, closed. Every event the runner
serves, over REST and over the websocket, must pass the SDK's own models,
and the conversation's info the agent-server's."""

import asyncio
import json
import os
import time
import uuid

import httpx
import websockets
from pydantic import SecretStr

from openhands.agent_server.models import ConversationInfo, ConversationPage
from openhands.sdk import LLM, Agent, Conversation, RemoteConversation
from openhands.sdk.conversation.state import ConversationExecutionStatus
from openhands.sdk.event import ActionEvent, MessageEvent, ObservationEvent
from openhands.sdk.event.base import Event
from openhands.sdk.workspace import RemoteWorkspace

from harness import HOST, KEY, WORKDIR, check, report

SOCKET = HOST.replace("http://", "ws://") + "/sockets/events/"


def stored_events(http, conversation_id):
    """Every event the runner stores, page by page, each validated."""
    events, page_id = [], None
    while True:
        params = {"limit": 2} | ({"page_id": page_id} if page_id else {})
        page = http.get(f"/api/conversations/{conversation_id}/events/search", params=params)
        page.raise_for_status()
        page = page.json()
        events += [Event.model_validate(item) for item in page["items"]]
        page_id = page.get("next_page_id")
        if not page_id:
            return events


async def socket_frames(conversation_id, key, query=""):
    """The frames a client authenticating with `key` receives until the
    stream goes quiet; the close code when the runner closes it."""
    frames = []
    try:
        async with websockets.connect(f"{SOCKET}{conversation_id}{query}") as socket:
            await socket.send(json.dumps({"type": "auth", "session_api_key": key}))
            while True:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 2)))
    except TimeoutError:
        return frames, None
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


def main():
    workdir = os.path.realpath(WORKDIR)
    llm = LLM(model="openai/scripted-model", api_key=SecretStr("sk-client-side"), usage_id="agent")
    workspace = RemoteWorkspace(host=HOST, api_key=KEY, working_dir=workdir)
    received = []
    conversation = Conversation(
        agent=Agent(llm=llm, tools=[]),
        workspace=workspace,
        callbacks=[received.append],
        visualizer=None,
    )
    check(isinstance(conversation, RemoteConversation), "a remote conversation", conversation)
    conversation_id = str(conversation.id)

    conversation.send_message("Where do you work? Run pwd.")
    conversation.run()
    status = conversation.state.execution_status
    check(status == ConversationExecutionStatus.FINISHED, "the run finished", status)

    events = list(conversation.state.events)
    actions = [e for e in events if isinstance(e, ActionEvent)]
    observations = [e for e in events if isinstance(e, ObservationEvent)]
    check(len(actions) == 1 and len(observations) == 1, "one tool call and its answer", events)
    check(observations[0].action_id == actions[0].id, "the answer names its action")
    check(actions[0].tool_name == "bash", "the tool", actions[0])
    answer = observations[0].observation.text
    check(workdir in answer, "the agent worked in the working_dir asked for", answer)
    replies = [e for e in events if isinstance(e, MessageEvent) and e.source == "agent"]
    check(replies and "worked" in replies[-1].llm_message.content[0].text, "the reply", replies)
    check(any(isinstance(e, ActionEvent) for e in received), "the callback saw the action")

    http = workspace.client
    stored = stored_events(http, conversation_id)
    check({e.id for e in stored} <= {e.id for e in events}, "the client has every stored event")
    stamps = [e.timestamp for e in stored]
    check(stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "stored order is time order", stamps)

    raw = http.get(f"/api/conversations/{conversation_id}").json()
    info = ConversationInfo.model_validate(raw)
    check(str(info.workspace.working_dir) == workdir, "the working_dir", raw["workspace"])
    check(raw["agent"]["llm"]["api_key"] == "**********", "the key is masked", raw["agent"]["llm"])
    listed = ConversationPage.model_validate(http.get("/api/conversations/search").json())
    check([str(c.id) for c in listed.items] == [conversation_id], "the search", listed)
    unknown = str(uuid.uuid4())
    batch = http.get("/api/conversations", params=[("ids", conversation_id), ("ids", unknown)])
    check(batch.status_code == 200, "?ids= is served", batch.text)
    batch = batch.json()
    check(batch[0]["id"] == conversation_id and batch[1] is None, "?ids= answers", batch)

    attached = RemoteConversation.attach(workspace, conversation.id, visualizer=None)
    check(attached.state.execution_status == ConversationExecutionStatus.FINISHED, "attach sees the status")
    check(attached.agent.llm.model == "openai/scripted-model", "attach rebuilds the agent", attached.agent.llm)
    check(len([e for e in attached.state.events if isinstance(e, ActionEvent)]) == 1, "attach syncs events")
    attached.close()

    # A second run, paused while its command runs.
    conversation.send_message("Now wait a long time.")
    conversation.run(blocking=False)
    deadline = time.monotonic() + 30
    while not any(
        isinstance(e, ActionEvent) and "sleep" in e.tool_call.arguments
        for e in conversation.state.events
    ):
        check(time.monotonic() < deadline, "the second run called its tool")
        time.sleep(0.05)
    conversation.pause()
    while conversation.state.refresh_from_server()["execution_status"] != "paused":
        check(time.monotonic() < deadline, "the pause stopped the run")
        time.sleep(0.05)
    conversation.interrupt()
    stored = stored_events(http, conversation_id)

    frames, code = asyncio.run(socket_frames(conversation_id, KEY, "?resend_mode=all"))
    check(code is None, "the socket stays open", code)
    validated = [Event.model_validate(frame) for frame in frames]
    check(validated[0].key == "full_state", "a snapshot first", frames[0])
    check(validated[0].value["execution_status"] == "paused", "the snapshot's status", frames[0]["value"]["execution_status"])
    check([e.id for e in validated[1:]] == [e.id for e in stored], "the replay is the history")
    _, code = asyncio.run(socket_frames(conversation_id, "wrong key"))
    check(code == 4001, "a bad key closes with 4001", code)
    _, code = asyncio.run(socket_frames(unknown, KEY))
    check(code == 4004, "an unknown conversation closes with 4004", code)

    # Conversation() deletes on close by default: the history goes, the
    # working directory the client chose stays.
    conversation.close()
    gone = http.get(f"/api/conversations/{conversation_id}")
    check(gone.status_code == 404, "the conversation was deleted", gone.status_code)
    check(os.path.isdir(workdir), "the client's working_dir is kept")

    report(
        conversation=conversation_id,
        kinds=[type(e).__name__ for e in stored],
        validated=len(stored) + len(validated),
    )


main()

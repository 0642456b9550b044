"""A fake W&B GraphQL backend for the end-to-end test of the real `wandb sweep` and `wandb agent` CLIs.

It answers exactly the operations the wandb 0.31 CLIs make (checked by running them against it):
`wandb sweep` asks for the viewer and creates the sweep (`UpsertSweep`); `wandb agent` asks for the
viewer, reads the sweep (`SweepWithRuns`), registers itself (`CreateAgent`) and then sends a
`Heartbeat` every few seconds, whose answer carries the commands the test queues: `run` (with the
params) or `stop` (a run id); wandb also knows `exit`, which the test does not need. Any other
operation is recorded in `unknown` and answered with an empty `data`, so a new wandb release that
asks for more shows up in the test's failure message instead of as a hang. Trials run offline: they
never talk to this server.

stdlib only: http.server on 127.0.0.1, a free port, in a daemon thread.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

ENTITY = "fake-entity"
OPERATION = re.compile(r"\b(?:query|mutation)\s+(\w+)")


@dataclass
class FakeWandb:
    """The server's state: the sweeps created, the commands queued for agents, what agents reported."""

    sweeps: dict[str, dict] = field(default_factory=dict)       # sweep id -> {"config": yaml text, "project": ...}
    pending: list[dict] = field(default_factory=list)           # commands for the next heartbeat
    operations: list[str] = field(default_factory=list)         # every operation name, in order
    unknown: list[str] = field(default_factory=list)            # operations this fake does not know
    other_paths: list[str] = field(default_factory=list)        # POSTs to anything but /graphql
    running: set[str] = field(default_factory=set)              # run ids the latest heartbeat said are running
    seen_running: set[str] = field(default_factory=set)         # every run id a heartbeat ever reported
    program: str = ""  # the `program:` of the latest sweep, which a real server sends with each run command
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- what the test calls ----------------------------------------------------------------------
    def queue_run(self, run_id: str, params: dict) -> None:
        """The agent starts `run_id` with these params on its next heartbeat."""
        with self.lock:
            self.pending.append({"type": "run", "run_id": run_id, "program": self.program,
                                 "args": {k: {"value": v} for k, v in params.items()}})

    def queue_stop(self, run_id: str) -> None:
        with self.lock:
            self.pending.append({"type": "stop", "run_id": run_id})

    def sweep_config(self, sweep_id: str) -> dict:
        return yaml.safe_load(self.sweeps[sweep_id]["config"])

    # ---- GraphQL ----------------------------------------------------------------------------------
    def answer(self, query: str, variables: dict) -> dict:
        match = OPERATION.search(query)
        name = match.group(1) if match else "(anonymous)"
        with self.lock:
            self.operations.append(name)
            handler = getattr(self, f"_op_{name}", None)
            if handler is None:
                self.unknown.append(name)
                return {}
            return handler(variables)

    def _viewer(self) -> dict:
        return {"id": "VXNlcjox", "name": "fake", "username": "fake", "email": None, "admin": False,
                "flags": "{}", "entity": ENTITY, "deletedAt": None, "apiKeys": {"edges": []},
                "teams": {"edges": []}}

    def _op_Viewer(self, variables: dict) -> dict:  # noqa: N802 - GraphQL operation names
        return {"viewer": self._viewer()}

    _op_GetViewer = _op_Viewer

    def _op_UpsertSweep(self, variables: dict) -> dict:  # noqa: N802
        sweep_id = variables.get("id") or f"sw{len(self.sweeps) + 1:04d}"
        project = variables.get("projectName") or "uncategorized"
        self.program = (yaml.safe_load(variables.get("config") or "") or {}).get("program", "")
        self.sweeps[sweep_id] = {"config": variables.get("config") or "", "project": project,
                                 "entity": variables.get("entityName") or ENTITY}
        return {"upsertSweep": {"sweep": {"name": sweep_id, "project": {
            "id": "UHJvamVjdDox", "name": project, "entity": {"id": "RW50aXR5OjE=", "name": ENTITY}}},
            "configValidationWarnings": []}}

    def _op_SweepWithRuns(self, variables: dict) -> dict:  # noqa: N802
        sweep = self.sweeps.get(variables.get("sweep"))
        if sweep is None:
            return {"project": None}
        return {"project": {"sweep": {
            "id": variables["sweep"], "name": variables["sweep"], "method": "random", "state": "RUNNING",
            "description": None, "config": sweep["config"], "createdAt": "2026-01-01T00:00:00",
            "heartbeatAt": None, "updatedAt": None, "earlyStopJobRunning": False, "bestLoss": None,
            "controller": None, "scheduler": None, "runs": {"edges": []}}}}

    def _op_CreateAgent(self, variables: dict) -> dict:  # noqa: N802
        return {"createAgent": {"agent": {"id": "agent-1"}}}

    def _op_Heartbeat(self, variables: dict) -> dict:  # noqa: N802
        self.running = set(json.loads(variables.get("runState") or "{}"))
        self.seen_running |= self.running
        commands, self.pending = self.pending, []
        return {"agentHeartbeat": {"agent": {"id": variables.get("id")}, "commands": json.dumps(commands)}}


class _Handler(BaseHTTPRequestHandler):
    backend: FakeWandb  # set on the subclass each server makes

    def do_POST(self):  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/graphql":
            # wandb-core also posts its own OpenTelemetry metrics (/sdk/otel/v1/metrics): accepted, not read
            self.backend.other_paths.append(self.path)
            self._reply(b"")
            return
        body = json.loads(raw or b"{}")
        data = self.backend.answer(body.get("query", ""), body.get("variables") or {})
        self._reply(json.dumps({"data": data}).encode(), "application/json")

    def _reply(self, payload: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):  # keep the test output for the trials
        pass


class FakeWandbServer:
    """`with FakeWandbServer() as server:` serves `server.backend` at `server.url` until the block ends."""

    def __init__(self):
        self.backend = FakeWandb()
        handler = type("Handler", (_Handler,), {"backend": self.backend})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeWandbServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

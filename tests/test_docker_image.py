"""The image itself: docker/Dockerfile built by docker/test-image.sh (a local Debian + torch base, no weight
prefetch) and run with podman, as a user runs it.

- `covid-sweep --help` and `validate` of every shipped sweep, inside the image, agree with the host's;
- the embedded smoke sweep as uid 1000 on a tiny data set mounted read-only at /data: store and artifacts
  land in a named runs volume and outlive the container; `export-best` in a second container writes a
  submission from that volume;
- the default entrypoint (`wandb agent`) against tests/fake_wandb_server.py on the host runs one trial;
  the WANDB_API_KEY passed with `-e` reaches W&B and appears in no image layer (`podman history`,
  `podman save`) and in no file of the runs volume;
- the entrypoint's errors (no SWEEP_ID, no key) from the real image.

Skipped, saying why, where podman or the image is missing; under .ci/run (COVID_SWEEP_REQUIRE_CONTAINER=1)
that is a failure instead. Build the image first: docker/test-image.sh (see docker/README.md).
"""

from __future__ import annotations

import base64
import csv
import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fake_wandb_server import ENTITY, FakeWandbServer
from helpers.data import make_dataset

from covid_sweep.cli import main
from covid_sweep.model.artifact import load_artifact
from covid_sweep.sweep.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("COVID_SWEEP_TEST_IMAGE", "localhost/covid-sweep:test")
# the image's own user (docker/Dockerfile's UID default), whom the runs volume and outputs must belong to
IMAGE_UID = 1000
PROJECT = "covid-image"
SMOKE_TRIALS = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())["run_cap"]
# one small real trial for the agent path (the shipped sweeps' command, these values)
AGENT_PARAMS = {"backbone": "resnet18", "input_size": 32, "epochs": 1, "patience": 1, "batch_size": 8, "seed": 0,
                "lr": 0.001, "val_fraction": 0.25, "device": "cpu"}


def engine_env() -> dict[str, str]:
    # runc and no default ulimits, which this kind of machine needs (docker/test-base/containers.conf)
    conf = os.environ.get("CONTAINERS_CONF") or str(REPO / "docker" / "test-base" / "containers.conf")
    return {**os.environ, "CONTAINERS_CONF": conf}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=engine_env())
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def image() -> str:
    reason = None
    if shutil.which("podman") is None:
        reason = "podman not found (apt-get install podman runc mmdebstrap, then docker/test-image.sh)"
    else:
        found = podman("image", "exists", IMAGE, check=False, timeout=60)
        if found.returncode != 0:
            reason = f"image {IMAGE} not built (docker/test-image.sh builds it) {found.stderr.strip()[-300:]}".strip()
    if reason:
        if os.environ.get("COVID_SWEEP_REQUIRE_CONTAINER"):  # CI built it: a skip would pass silently
            pytest.fail(reason)
        pytest.skip(reason)
    return IMAGE


def new_volume(request) -> tuple[str, Path]:
    name = f"covid-sweep-test-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", name)
    request.addfinalizer(lambda: podman("volume", "rm", "--force", name, check=False))
    return name, Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip())


def readable_data(folder: Path) -> Path:
    """A tiny data set uid 1000 can read: pytest's temporary folders are private to root."""
    data = make_dataset(folder)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return data


def files_holding(folder: Path, needles: list[bytes]) -> dict[bytes, list[Path]]:
    found: dict[bytes, list[Path]] = {needle: [] for needle in needles}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            for needle in needles:
                if needle in content:
                    found[needle].append(path)
    return found


def stream_holding(argv: list[str], needles: list[bytes], timeout: float) -> set[bytes]:
    """Which needles occur in a command's stdout, read in chunks (a saved image is gigabytes), across chunk edges."""
    keep = max(len(n) for n in needles) - 1
    found: set[bytes] = set()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=engine_env())
    tail = b""
    try:
        for chunk in iter(lambda: process.stdout.read(1 << 24), b""):
            window = tail + chunk
            found.update(n for n in needles if n in window)
            tail = window[-keep:]
        assert process.wait(timeout=timeout) == 0, process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return found


# ---- the CLI inside the image ------------------------------------------------------------------------------

def command_names(help_text: str) -> set[str]:
    section = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()}


def test_help_and_every_shipped_sweep_validate_inside_the_image(image):
    shown = podman("run", "--rm", "--network", "none", image, "covid-sweep", "--help")
    host = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert command_names(shown.stdout) == command_names(host.output), shown.stdout

    # one container for all the files: each `validate` prints its verdict, then the script its exit status
    script = 'for f in /app/sweeps/*.yaml; do covid-sweep validate "$f" 2>&1; echo "exit=$?"; done'
    inside = podman("run", "--rm", "--network", "none", image, "sh", "-c", script, timeout=300).stdout
    verdicts = {}  # file -> (exit status, first line)
    current: list[str] = []
    for line in inside.splitlines():
        if line.startswith("exit="):
            first = current[0]
            verdicts[first.split(":", 1)[0]] = (int(line[5:]), first)
            current = []
        else:
            current.append(line)
    shipped = sorted((REPO / "sweeps").glob("*.yaml"))
    assert sorted(verdicts) == [f"/app/sweeps/{p.name}" for p in shipped], inside
    for path in shipped:
        code, first = verdicts[f"/app/sweeps/{path.name}"]
        on_host = CliRunner().invoke(main, ["validate", str(path)], terminal_width=200)
        assert code == 0 == on_host.exit_code, inside
        assert first.replace("/app/sweeps/", "") == on_host.output.splitlines()[0].replace(f"{path.parent}/", "")


# ---- the embedded controller: smoke sweep, then export-best from the same volume ---------------------------

@pytest.fixture(scope="module")
def smoke(image, request, tmp_path_factory):
    """(volume name, its folder on the host, the data set, the sweep's output) after the smoke sweep."""
    data = readable_data(tmp_path_factory.mktemp("image-smoke") / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    volume, folder = new_volume(request)
    swept = podman("run", "--rm", "--network", "none", "-e", "WANDB_MODE=offline", "-v", f"{data}:/data:ro",
                   "-v", f"{volume}:/workspace/runs", image,
                   "sweep", "/app/sweeps/smoke.yaml", "--data", "/data", timeout=600)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written into /data
    return volume, folder, data, swept.stdout


def test_smoke_sweep_as_uid_1000_leaves_store_and_artifacts_in_the_runs_volume(smoke):
    volume, folder, _, _ = smoke
    store = Store(folder / "sweeps.db")
    sweep = store.latest_sweep()
    trials = store.trials(sweep.id)
    assert [t.state for t in trials] == ["finished"] * SMOKE_TRIALS
    for trial in trials:
        model = folder / "artifacts" / sweep.id / trial.name / "model.safetensors"
        assert model.is_file(), sorted(folder.rglob("*"))
        assert model.stat().st_uid == IMAGE_UID  # written by the image's user, not root
    assert (folder / "sweeps.db").stat().st_uid == IMAGE_UID
    assert list((folder / "wandb").glob("offline-run-*")), "the offline W&B runs go to the volume too"


def test_export_best_in_a_second_container_writes_a_submission(image, smoke, tmp_path):
    volume, folder, data, _ = smoke
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, IMAGE_UID, IMAGE_UID)
    sweep_id = Store(folder / "sweeps.db").latest_sweep().id
    exported = podman("run", "--rm", "--network", "none", "-v", f"{data}:/data:ro", "-v", f"{volume}:/workspace/runs",
                      "-v", f"{out}:/out", image, "export-best", sweep_id, "--data", "/data", "--out", "/out/best",
                      timeout=300)
    best = Store(folder / "sweeps.db").alias(sweep_id, "best")  # the promotion landed in the volume's store
    winner = next(t for t in Store(folder / "sweeps.db").trials(sweep_id) if t.id == best)
    assert f"best finished trial of sweep {sweep_id}: {winner.name}" in exported.stdout, exported.stdout
    # export-best stages its files beside --out and moves them in: --out is a folder inside the mount, whose
    # parent uid 1000 can write (the mount point's parent is the image's root, which it cannot)
    out = out / "best"
    with (out / "submission.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with (data / "sample_submission.csv").open() as fh:
        expected = [row["file_name"] for row in csv.DictReader(fh)]
    assert [row["file_name"] for row in rows] == expected
    assert {row["COVID"] for row in rows} <= {"0", "1"}
    assert (out / "model").is_dir()


# ---- the default entrypoint: a W&B agent against the fake server on the host -------------------------------

@pytest.fixture(scope="module")
def agent_run(image, request, tmp_path_factory):
    """The image's default command with SWEEP_ID and a fresh key, one trial queued on the fake server."""
    data = readable_data(tmp_path_factory.mktemp("image-agent") / "data")
    volume, folder = new_volume(request)
    key = secrets.token_hex(20)
    seen_auth: list[str] = []
    with FakeWandbServer() as server:
        recording = server._httpd.RequestHandlerClass  # noqa: SLF001 - the fake's handler, to see what W&B sends

        class Recording(recording):
            def do_POST(self):  # noqa: N802 - http.server's name
                seen_auth.append(self.headers.get("Authorization", ""))
                super().do_POST()

        server._httpd.RequestHandlerClass = Recording  # noqa: SLF001
        command = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())["command"]
        config = {"name": "image", "command": command, "method": "random",
                  "metric": {"name": "val_loss", "goal": "minimize"},
                  "parameters": {k: {"value": v} for k, v in AGENT_PARAMS.items()}}
        server.backend.answer("mutation UpsertSweep", {"config": yaml.safe_dump(config), "projectName": PROJECT})
        (sweep_id,) = server.backend.sweeps
        server.backend.queue_run("run-image", AGENT_PARAMS)
        agent = podman("run", "--rm", "--network", "host", "-e", f"SWEEP_ID={ENTITY}/{PROJECT}/{sweep_id}",
                       "-e", f"WANDB_API_KEY={key}", "-e", f"WANDB_BASE_URL={server.url}", "-e", "WANDB_MODE=offline",
                       "-e", "WANDB_AGENT_COUNT=1", "-v", f"{data}:/data:ro", "-v", f"{volume}:/workspace/runs",
                       image, check=False, timeout=400)
    return {"key": key, "folder": folder, "sweep_id": sweep_id, "agent": agent, "backend": server.backend,
            "auth": seen_auth}


def test_default_entrypoint_runs_one_wandb_trial_against_the_fake_server(agent_run):
    agent, backend = agent_run["agent"], agent_run["backend"]
    log = agent.stdout + agent.stderr
    assert agent.returncode == 0, log[-4000:]
    assert "CreateAgent" in backend.operations and not backend.unknown, (backend.operations, backend.unknown)
    assert "run-image" in backend.seen_running
    assert "trial run-image finished" in log, log[-4000:]
    artifact = load_artifact(agent_run["folder"] / "artifacts" / agent_run["sweep_id"] / "run-image")
    for name, value in AGENT_PARAMS.items():
        assert getattr(artifact.config, name) == value, name
    # the key did reach W&B (basic auth "api:KEY"), so the searches below look for what was really passed
    expected = "Basic " + base64.b64encode(f"api:{agent_run['key']}".encode()).decode()
    assert expected in agent_run["auth"], agent_run["auth"][:3]


def test_the_key_is_in_no_file_of_the_runs_volume(agent_run):
    folder, key = agent_run["folder"], agent_run["key"].encode()
    # the trial's own name is in its files: the search does read them
    found = files_holding(folder, [key, b"run-image"])
    assert found[b"run-image"], sorted(folder.rglob("*"))
    assert not found[key], found[key]


def test_the_key_is_in_no_layer_of_the_image(agent_run, image):
    key = agent_run["key"]
    # no key of any value is baked into the image's environment (one the tests never passed would not be found below)
    env = podman("image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", image).stdout.split()
    assert "COVID_SWEEP_HOME=/workspace/runs" in env and not [e for e in env if e.startswith("WANDB_API_KEY=")], env
    history = podman("history", "--no-trunc", image).stdout
    assert "covid-sweep-entrypoint" in history and key not in history
    # every layer and the image's config, as `podman save` writes them; the entrypoint's text is in one layer,
    # so the search does reach the layers' content
    found = stream_holding(["podman", "save", "--format", "docker-archive", image],
                           [key.encode(), b"SWEEP_ID is not set"], timeout=600)
    assert b"SWEEP_ID is not set" in found
    assert key.encode() not in found


# ---- the entrypoint's errors ---------------------------------------------------------------------------

def test_entrypoint_errors_from_the_real_image(image):
    no_sweep = podman("run", "--rm", "--network", "none", image, check=False)
    assert no_sweep.returncode == 2
    assert no_sweep.stderr.splitlines()[0] == "covid-sweep image: SWEEP_ID is not set.", no_sweep.stderr
    no_key = podman("run", "--rm", "--network", "none", "-e", "SWEEP_ID=e/p/s", image, check=False)
    assert no_key.returncode == 2
    (line,) = no_key.stderr.splitlines()
    assert line.startswith("covid-sweep image: WANDB_API_KEY is not set;"), no_key.stderr
    assert "Traceback" not in no_sweep.stderr + no_key.stderr


# ---- compose: docker/compose.yaml's embedded service, run by podman-compose ---------------------------------

def test_compose_embedded_service_runs_a_sweep_into_its_runs_volume(image, tmp_path):
    """docker/compose.yaml as written (image, /data mount, runs volume, WANDB_MODE=offline, uid 1000), less the
    GPU reservation this machine cannot meet (docker/test-base/compose.no-gpu.yaml)."""
    compose = shutil.which("podman-compose")
    if compose is None:
        reason = "podman-compose not found (pip install podman-compose==1.6.0)"
        if os.environ.get("COVID_SWEEP_REQUIRE_CONTAINER"):
            pytest.fail(reason)
        pytest.skip(reason)
    data = readable_data(tmp_path / "data")
    project = f"covid-sweep-test-{uuid.uuid4().hex[:12]}"
    # compose passes these through from the host when set (docker/compose.yaml's `NAME:` entries): not from here
    passed_through = ("COVID_SWEEP_STORE", "COVID_SWEEP_ARTIFACTS", "PGPASSWORD", "SWEEP_ID", "AGENTS_PER_GPU",
                      "EMBEDDED_AGENTS", "EMBEDDED_GPU", "SHM_SIZE")
    env = {k: v for k, v in engine_env().items() if k not in passed_through and not k.startswith("WANDB_")}
    env.update(COVID_SWEEP_IMAGE=image, DATA_DIR=str(data))
    base = [compose, "-p", project, "-f", str(REPO / "docker" / "compose.yaml"),
            "-f", str(REPO / "docker" / "test-base" / "compose.no-gpu.yaml"), "--profile", "embedded"]

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, "run", "--rm", "-T", "embedded", *args], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done

    try:
        run("sweep", "/app/sweeps/smoke.yaml", "--data", "/data", "--count", "1")
        folder = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{project}_runs").stdout.strip())
        store = Store(folder / "sweeps.db")
        sweep = store.latest_sweep()
        (trial,) = store.trials(sweep.id)
        assert trial.state == "finished" and (folder / "sweeps.db").stat().st_uid == IMAGE_UID
        assert list((folder / "wandb").glob("offline-run-*")), "compose sets WANDB_MODE=offline for this service"
        shown = run("status")  # a second container of the service sees the same volume
        assert sweep.id in shown.stdout and trial.name in shown.stdout, shown.stdout
    finally:
        subprocess.run([*base, "down", "--volumes"], capture_output=True, timeout=120, env=env)

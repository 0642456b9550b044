"""validate, sweep (the embedded controller), status."""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import click

from covid_sweep.cli.options import Duration, artifacts_option, home_option, resolve_data, store_option
from covid_sweep.core import paths
from covid_sweep.core.errors import UserError
from covid_sweep.core.files import redirected_tempdir

# `sweep` exits with this when it stopped because --max-early-failures trials in a row failed before their first
# epoch: a broken data set or setup that scripts and CI must see (1 stays click's code for an error)
EXIT_TRIALS_KEEP_FAILING = 3


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
def validate(sweep_file: Path) -> None:
    """Check SWEEP_FILE against W&B's schema and TrialConfig before any trial starts."""
    from covid_sweep.sweep.control.spec import load_spec, pretrained_backbones

    config = load_spec(sweep_file)
    click.echo(f"{sweep_file}: valid {config['method']} sweep over {', '.join(config['parameters'])}")
    if pretrained_backbones(config):
        from covid_sweep.sweep.control.weights import MissingWeightsError, check_weights

        try:
            names = check_weights(config, str(sweep_file))
            click.echo(f"ImageNet weights on this box for: {', '.join(names)}")
        except MissingWeightsError as err:  # valid YAML: a sweep here would stop at once, and says so
            click.echo(f"note: {err}")


@click.command(epilog=f"Exit status: 0 when the sweep ended (run_cap, --count, --budget, metric.target or the search "
                      f"space reached); {EXIT_TRIALS_KEEP_FAILING} when it stopped because --max-early-failures trials "
                      "in a row failed before their first epoch (the trial table is printed all the same); 1 for an "
                      "error, 2 for a bad option.")
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", default=None, metavar="DATA", help="Data folder or data set name (else the sweep's data_dir parameter).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Trials to run in this invocation.")
@click.option("--agents", type=click.IntRange(min=1), default=1, show_default=True, help="Trials at once (processes).")
@click.option("--gpus", default=None, help="Comma list of CUDA device ids; agents are spread over them.")
@click.option("--resume", "resume_id", default=None, help="Continue the sweep with this id.")
@click.option("--seed", type=int, default=None, help="Seed of the search (default random, stored with the sweep).")
@click.option("--max-early-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="End the sweep after this many trials in a row fail before their first epoch.")
@click.option("--budget", type=Duration(), default=None, metavar="DURATION",
              help="Time budget of this invocation (e.g. 10m, 1h30m): no trial starts after it, and running trials "
                   "end at it between two batches, as finished with their best epoch.")
@click.option("--warm-workers", is_flag=True, help="Keep one process per agent for successive trials (imports and CUDA "
              "start paid once); a trial that fails or leaves GPU memory held gets its worker replaced.")
@home_option
@store_option
@artifacts_option
def sweep(sweep_file, data, count, agents, gpus, resume_id, seed, max_early_failures, budget, warm_workers, home, store,
          artifacts) -> None:
    """Run SWEEP_FILE with W&B's sweep engine locally: no account, no network; an SQLite store on this box,
    or a PostgreSQL one (--store) that controllers on several boxes share (`--resume ID` on each)."""
    # set before the trials' fork server starts: it, the trials and their wandb services inherit it
    with redirected_tempdir(_temp_folder_until_exit()):
        code = _run_sweep(sweep_file, data, count, agents, gpus, resume_id, seed, max_early_failures, budget,
                          warm_workers, home, store, artifacts)
    if code:
        raise click.exceptions.Exit(code)


def _temp_folder_until_exit() -> Path:
    """A folder for the temporary files of this process and of every process it starts, removed when this process
    exits. wandb and torch make temporary folders when imported (in the fork server, once per sweep) and per
    trial, and remove them only at a normal interpreter exit, which forked processes never reach. Not removed
    when the command returns: a fork server started by it lives as long as this process."""
    # multiprocessing's own folder (removed by it at exit) stays where it was: the fork server's socket is in it,
    # and a socket path has at most 107 bytes
    multiprocessing.util.get_temp_dir()
    folder = Path(tempfile.mkdtemp(prefix="covid-sweep-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _run_sweep(sweep_file, data, count, agents, gpus, resume_id, seed, max_early_failures, budget, warm_workers, home,
               store, artifacts) -> int:
    """The sweep command; returns its exit status."""
    from covid_sweep.sweep.control.launcher import agent_preload, start_fork_server
    from covid_sweep.sweep.store.location import resolve_location

    root = paths.home(home)
    # first: the trials' fork server imports torch & co while this process imports the controller and the engine
    start_fork_server(agent_preload(resolve_location(store, root).kind))
    from covid_sweep.sweep.control.controller import Controller, new_sweep
    from covid_sweep.sweep.control.spec import load_spec
    from covid_sweep.sweep.control.weights import check_weights
    from covid_sweep.sweep.store import open_store

    artifacts = Path(artifacts).absolute() if artifacts else None
    store_url = store
    store = open_store(store_url, root)
    if resume_id:
        the_sweep = store.sweep(resume_id)
        if data:
            raise UserError("--resume continues with the sweep's stored data; drop --data")
        check_weights(the_sweep.config, f"sweep {the_sweep.id}")
    else:
        if sweep_file is None:
            raise UserError("give a SWEEP_FILE, or --resume ID")
        config = load_spec(sweep_file)
        data_dir = os.path.abspath(resolve_data(data)) if data else None
        if data_dir is None and "data_dir" not in config["parameters"]:
            raise UserError("--data is required (or a data_dir parameter in the sweep)")
        check_weights(config, str(sweep_file))  # before the sweep exists: nothing to resume when weights are missing
        the_sweep = new_sweep(store, config, str(sweep_file), data_dir, seed)
    click.echo(f"sweep {the_sweep.id} ({the_sweep.method}, metric {the_sweep.metric}) in {root}"
               + (f", store {store.path}" if store_url or store.location.kind != "sqlite" else ""))
    started = time.time()
    with _live_view(store_url, root, the_sweep, agents, count) as log:
        controller = Controller(store, the_sweep, root, agents=agents, count=count,
                                gpus=[g for g in (gpus or "").split(",") if g], log=log,
                                max_early_failures=max_early_failures, artifacts=artifacts, warm_workers=warm_workers,
                                budget_s=budget)
        outcome = controller.run()
    click.echo(f"sweep {the_sweep.id}: {len(outcome.launched)} trials in {time.time() - started:.1f}s; stopped: {outcome.reason}")
    _print_status(store, the_sweep.id)
    click.echo(f"resume with: covid-sweep sweep --resume {the_sweep.id}" + (f" --home {root}" if home else "")
               + (f" --store {store.path}" if store_url else "") + (f" --artifacts {artifacts}" if artifacts else ""))
    return EXIT_TRIALS_KEEP_FAILING if outcome.failed else 0


@contextmanager
def _live_view(store_url: str | None, root: Path, sweep, agents: int, count: int | None):
    """On a terminal, the live view (its own store connection) with the controller's lines printed above it;
    piped or logged, plain lines only. Yields the controller's log callable."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        yield click.echo
        return
    from covid_sweep.sweep.store import open_store
    from covid_sweep.sweep.views.live import LiveView

    view_store = open_store(store_url, root, create=False)
    try:
        with LiveView(view_store, sweep, console, agents=agents, count=count) as view:
            yield view.log
    finally:
        view_store.close()


@click.command()
@click.argument("sweep_id", required=False)
@click.option("--all-params", is_flag=True, help="Show every parameter, also those equal in every trial.")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep and its trials as JSON (stable keys) for scripts.")
@home_option
@store_option
def status(sweep_id, all_params, as_json, home, store) -> None:
    """Progress and trial table of SWEEP_ID (default the latest sweep), best first."""
    from covid_sweep.sweep.store import open_store

    store = open_store(store, home, create=False)
    sweep_id = sweep_id or store.latest_sweep().id
    if as_json:
        import json

        from covid_sweep.sweep.views.status import status_json

        click.echo(json.dumps(status_json(store.snapshot(sweep_id)), indent=2))
        return
    _print_status(store, sweep_id, all_params)


def _print_status(store, sweep_id: str, all_params: bool = False) -> None:
    from rich.console import Console

    from covid_sweep.sweep.views.status import objective_line, status_view

    # wide enough for the param columns when piped (CI logs, files)
    console = Console() if Console().is_terminal else Console(width=200)
    snapshot = store.snapshot(sweep_id)
    console.print(status_view(snapshot, console.width, all_params))
    console.print(objective_line(snapshot), soft_wrap=True, markup=False)  # it quotes the artifacts' metadata

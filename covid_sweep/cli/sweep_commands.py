"""validate, sweep (the embedded controller), status."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from covid_sweep.cli.options import home_option, resolve_data
from covid_sweep.core import paths
from covid_sweep.core.errors import UserError


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
def validate(sweep_file: Path) -> None:
    """Check SWEEP_FILE against W&B's schema and TrialConfig before any trial starts."""
    from covid_sweep.sweep.spec import load_spec

    config = load_spec(sweep_file)
    click.echo(f"{sweep_file}: valid {config['method']} sweep over {', '.join(config['parameters'])}")


@click.command()
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", default=None, metavar="DATA", help="Data folder or data set name (else the sweep's data_dir parameter).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Trials to run in this invocation.")
@click.option("--agents", type=click.IntRange(min=1), default=1, show_default=True, help="Trials at once (processes).")
@click.option("--gpus", default=None, help="Comma list of CUDA device ids; agents are spread over them.")
@click.option("--resume", "resume_id", default=None, help="Continue the sweep with this id.")
@click.option("--seed", type=int, default=None, help="Seed of the search (default random, stored with the sweep).")
@click.option("--max-early-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="End the sweep after this many trials in a row fail before their first epoch.")
@click.option("--warm-workers", is_flag=True, help="Keep one process per agent for successive trials (imports and CUDA "
              "start paid once); a trial that fails or leaves GPU memory held gets its worker replaced.")
@home_option
def sweep(sweep_file, data, count, agents, gpus, resume_id, seed, max_early_failures, warm_workers, home) -> None:
    """Run SWEEP_FILE with W&B's sweep engine locally: no account, no network, SQLite store."""
    from covid_sweep.sweep.controller import Controller, new_sweep, open_store
    from covid_sweep.sweep.launcher import ForkLauncher, WarmLauncher
    from covid_sweep.sweep.spec import load_spec

    root = paths.home(home)
    store = open_store(root)
    if resume_id:
        the_sweep = store.sweep(resume_id)
        if data:
            raise UserError("--resume continues with the sweep's stored data; drop --data")
    else:
        if sweep_file is None:
            raise UserError("give a SWEEP_FILE, or --resume ID")
        config = load_spec(sweep_file)
        data_dir = os.path.abspath(resolve_data(data)) if data else None
        if data_dir is None and "data_dir" not in config["parameters"]:
            raise UserError("--data is required (or a data_dir parameter in the sweep)")
        the_sweep = new_sweep(store, config, str(sweep_file), data_dir, seed)
    click.echo(f"sweep {the_sweep.id} ({the_sweep.config['method']}, metric {the_sweep.metric}) in {root}")
    started = time.time()
    controller = Controller(store, the_sweep, root, agents=agents, count=count,
                            gpus=[g for g in (gpus or "").split(",") if g], log=click.echo,
                            max_early_failures=max_early_failures,
                            launcher=WarmLauncher() if warm_workers else ForkLauncher())
    outcome = controller.run()
    click.echo(f"sweep {the_sweep.id}: {len(outcome.launched)} trials in {time.time() - started:.1f}s; stopped: {outcome.reason}")
    _print_status(store, the_sweep.id)
    click.echo(f"resume with: covid-sweep sweep --resume {the_sweep.id}" + (f" --home {root}" if home else ""))


@click.command()
@click.argument("sweep_id", required=False)
@home_option
def status(sweep_id, home) -> None:
    """Progress and trial table of SWEEP_ID (default the latest sweep), best first."""
    from covid_sweep.sweep.controller import open_store

    store = open_store(paths.home(home), create=False)
    _print_status(store, sweep_id or store.latest_sweep().id)


def _print_status(store, sweep_id: str) -> None:
    from rich.console import Console

    from covid_sweep.sweep.report import objective_line, status_table

    # wide enough for the param columns when piped (CI logs, files)
    console = Console() if Console().is_terminal else Console(width=200)
    sweep = store.sweep(sweep_id)
    console.print(status_table(store, sweep))
    console.print(objective_line(store, sweep), soft_wrap=True)

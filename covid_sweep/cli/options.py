"""Shared click options: every TrialConfig field becomes a --flag, typed by pydantic, not click."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click

from covid_sweep.core.config import TrialConfig, build_config
from covid_sweep.core.errors import UserError


def trial_options(func):
    """Add --<field> for each TrialConfig field (bools as --x/--no-x) and --config FILE.json."""
    for name, field in reversed(list(TrialConfig.model_fields.items())):
        if name == "data_dir":
            continue
        flag = name.replace("_", "-")
        if field.annotation is bool:
            func = click.option(f"--{flag}/--no-{flag}", name, default=None, help=f"(default {field.default})")(func)
        else:
            func = click.option(f"--{flag}", name, default=None, metavar="VALUE",
                                help=f"{field.description or ''} (default {field.default})".strip())(func)
    func = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                        help="TrialConfig JSON to start from; flags override it.")(func)

    @functools.wraps(func)
    def wrapper(**kwargs):
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in TrialConfig.model_fields}
        kwargs["trial_values"] = {k: v for k, v in fields.items() if v is not None}
        return func(**kwargs)

    return wrapper


def make_config(config_file: Path | None, values: dict, data_dir: Path | None) -> TrialConfig:
    base: dict = {}
    if config_file is not None:
        try:
            base = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{config_file}: cannot read TrialConfig JSON: {err}") from None
    merged = {**base, **values}
    if data_dir is not None:
        merged["data_dir"] = str(data_dir)
    return build_config(merged, source=str(config_file) if config_file else "TrialConfig")


def resolve_data(value: str) -> Path:
    """--data takes a folder in the competition layout or a known public data set's name (fetched once)."""
    if Path(value).is_dir():
        return Path(value)
    from covid_sweep.data.fetch import resolve_data as fetch_or_find

    return fetch_or_find(value)


data_option = click.option("--data", "data", required=True, metavar="DATA",
                           help="Data folder in the competition layout, or a data set name (ucsd-covid-ct).")
home_option = click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="State folder (store, artifacts, W&B offline runs); default $COVID_SWEEP_HOME or ./.covid_sweep.")
store_option = click.option(
    "--store", "store", default=None, metavar="URL", envvar="COVID_SWEEP_STORE", show_envvar=True,
    help="Sweep store: postgresql://user@host:port/db (shared by several boxes) or an SQLite file; "
         "default HOME/sweeps.db. A password in the URL is never printed.")
artifacts_option = click.option(
    "--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
    envvar="COVID_SWEEP_ARTIFACTS", show_envvar=True,
    help="Artifacts folder shared by the boxes of a sweep (an NFS/SMB mount; each box may mount it at its "
         "own path); default HOME/artifacts.")



class Duration(click.ParamType):
    """A length of time: 90s, 10m, 1h30m, 2h (a bare number is minutes) -> seconds."""

    name = "duration"
    PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
    UNIT = {"h": 3600, "m": 60, "s": 1}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text) * 60
        elif text and self.PART.sub("", text) == "":
            seconds = sum(float(n) * self.UNIT[unit] for n, unit in self.PART.findall(text))
        else:
            self.fail(f"{value!r} is not a duration (e.g. 90s, 10m, 1h30m)", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r}: a budget must be longer than 0", param, ctx)
        return seconds

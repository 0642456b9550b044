"""The covid-sweep command line (click): parsing only, the work lives in the modules it calls."""

from __future__ import annotations

import sys

import click

from covid_sweep import __version__
from covid_sweep.core.errors import UserError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            # a user mistake is one clear line, never a traceback from deep inside a library
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="covid-sweep")
def main() -> None:
    """Find the best CNN recipe for COVID-19 chest-CT slices with W&B sweeps, online or air-gapped."""


def _register() -> None:
    from covid_sweep.cli.explain_commands import explain
    from covid_sweep.cli.export_commands import export_best, predict, score, tta_report
    from covid_sweep.cli.fetch import fetch_data
    from covid_sweep.cli.report_commands import report
    from covid_sweep.cli.sweep_commands import status, sweep, validate
    from covid_sweep.cli.trial_commands import check_data, prefetch_weights, train

    for command in (fetch_data, check_data, train, prefetch_weights, validate, sweep, status, report,
                    export_best, predict, tta_report, score, explain):
        main.add_command(command)


_register()

if __name__ == "__main__":
    sys.exit(main())

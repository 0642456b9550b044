"""One sweep, several boxes, one PostgreSQL store (issue 17).

Two "boxes" are two controller processes on this host with separate HOMEs and separate machine ids
($COVID_SWEEP_MACHINE), so neither may judge the other by its pid: only the heartbeat, in database
time, tells a dead box. Fake trials (fake_trial.py) speak the real protocol; the last test runs a
real tiny sweep through the CLI and exports its winner from the other box.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.fakes import METRIC
from helpers.polling import wait_for

from covid_sweep.cli import main
from covid_sweep.sweep.control.controller import Controller, new_sweep
from covid_sweep.sweep.control.promote import PromotionError, best_finished_trial
from covid_sweep.sweep.store import SCHEMA_VERSION, Store, StoreError
from covid_sweep.sweep.store.location import StoreLocationError, mask_password, parse_location

HERE = Path(__file__).parent
REPO = HERE.parent


def start_box(store: Store, sweep_id: str, tmp_path: Path, box: str, agents: int, stale_s: float = 60.0):
    """A controller process standing for one box: its own HOME and machine id, the shared store."""
    env = {**os.environ, "COVID_SWEEP_MACHINE": box}
    return subprocess.Popen([sys.executable, str(HERE / "run_fake_controller.py"), str(store.path), sweep_id,
                             str(tmp_path / box), str(agents), str(stale_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def owner_of(process) -> str:
    return f"{socket.gethostname()}:{process.pid}"


def test_two_boxes_cover_a_grid_exactly_once_and_share_its_run_cap(pg_url, tmp_path):
    store = Store(pg_url)
    values = [round(0.1 * i, 1) for i in range(1, 10)]
    config = {"method": "grid", "metric": METRIC, "run_cap": 8,
              "parameters": {"quality": {"values": values}, "epochs": {"value": 2}, "epoch_s": {"value": 0.1}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    boxes = [start_box(store, sweep.id, tmp_path, box, agents=2) for box in ("box-a", "box-b")]
    outputs = [b.communicate(timeout=120)[0] for b in boxes]
    assert all(b.returncode == 0 for b in boxes), outputs
    trials = store.trials(sweep.id)
    assert sorted(t.params["quality"] for t in trials) == values[:8]  # each once, none twice, 8 in all
    assert all("| run_cap 8 reached" in out for out in outputs), outputs
    assert all(t.state == "finished" and t.retry_of is None for t in trials)
    assert {t.owner for t in trials} == {owner_of(b) for b in boxes}  # both boxes did work
    for box, process in zip(("box-a", "box-b"), boxes):  # each box keeps the logs of its own trials
        mine = {t.name for t in trials if t.owner == owner_of(process)}
        assert {p.stem for p in (tmp_path / box / "logs" / sweep.id).iterdir()} == mine


def test_a_dead_box_has_its_running_trials_retried_once_by_the_other_after_its_heartbeat_goes_stale(pg_url, tmp_path):
    """(PostgreSQL only: an SQLite store lives on one box; its staleness test is the one below.)"""
    store = Store(pg_url)
    stale_s = 3.0
    values = [0.2, 0.3, 0.4, 0.5]
    gate = tmp_path / "power-cut"  # box A's trials hold after epoch 1 until it exists: both are caught mid-run
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": values}, "epochs": {"value": 4}, "epoch_s": {"value": 0.25},
                             "gate": {"value": str(gate)}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    box_a = start_box(store, sweep.id, tmp_path, "box-a", agents=2, stale_s=stale_s)
    box_b = None
    try:
        assert wait_for(lambda: sum(t.state == "running" and t.epochs >= 1 for t in store.trials(sweep.id)) == 2,
                        timeout=60), [(t.name, t.state, t.epochs) for t in store.trials(sweep.id)]
        box_b = start_box(store, sweep.id, tmp_path, "box-b", agents=1, stale_s=stale_s)
        # box A loses power: its trials stop dead (SIGSTOP first, so none notices its parent go and
        # ends itself), then every process of it is killed without a word
        doomed = [t for t in store.trials(sweep.id) if t.state == "running" and t.owner == owner_of(box_a)]
        for trial in doomed:
            os.kill(trial.pid, signal.SIGSTOP)
        box_a.kill()
        box_a.wait()
        for trial in doomed:
            os.kill(trial.pid, signal.SIGKILL)
        gate.touch()  # the trials that box B runs pass straight through
        last_beat = store.controller_heartbeat(owner_of(box_a))
        output = box_b.communicate(timeout=120)[0]
    finally:
        for process in (box_a, box_b):
            if process is not None and process.poll() is None:
                process.kill()
    assert box_b.returncode == 0, output
    trials = store.trials(sweep.id)
    assert len(doomed) == 2
    for dead in doomed:
        dead = store.trial(dead.id)
        assert dead.state == "interrupted" and f"controller {owner_of(box_a)} died" in dead.error
        assert dead.ended - last_beat >= stale_s  # judged dead by the database clock, not sooner
        retries = [t for t in trials if t.retry_of == dead.id]
        assert len(retries) == 1, [(t.name, t.retry_of) for t in trials]  # exactly once
        assert retries[0].owner == owner_of(box_b) and retries[0].state == "finished"
        assert retries[0].params == dead.params and retries[0].name == f"{dead.name}-r2"
    originals = [t for t in trials if t.retry_of is None]
    assert sorted(t.params["quality"] for t in originals) == values  # the grid still covered exactly once
    assert not [t for t in trials if t.state in ("pending", "running")]


def test_a_live_box_on_another_machine_is_not_reaped_while_its_heartbeat_is_fresh(store, tmp_path, monkeypatch):
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": {"quality": {"values": [0.5]}}},
                      "t.yaml", None, seed=0)
    owner = "other-box:4242"  # a pid that means nothing here
    store.heartbeat(owner, machine="other-machine")
    trial = store.add_trial(sweep.id, f"{sweep.id}-001", {"quality": 0.5}, owner=owner)
    controller = Controller(store, sweep, tmp_path / "home", log=lambda *_: None, stale_s=2.0)
    assert controller.reap_orphans() == []  # fresh heartbeat: alive, whatever pid 4242 is here
    assert wait_for(lambda: controller.reap_orphans() == [trial.name], timeout=10)
    assert store.controller_seen(owner).age_s >= 2.0


def test_newer_schema_is_refused_with_the_versions_named(store):
    where = store.path
    store._execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    store.close()
    newer = rf"schema version {SCHEMA_VERSION + 1} is newer than this covid-sweep reads \(version {SCHEMA_VERSION}\)"
    with pytest.raises(StoreError, match=rf"{re.escape(str(where))}: sweep store {newer}"):
        Store(where)


def test_a_store_made_before_schema_versions_opens_and_is_brought_up_to_date(tmp_path):
    import sqlite3

    old = tmp_path / "sweeps.db"
    conn = sqlite3.connect(old)
    conn.executescript("""
        CREATE TABLE sweeps (id TEXT PRIMARY KEY, name TEXT, source TEXT, config TEXT NOT NULL, data_dir TEXT,
                             seed INTEGER NOT NULL, created REAL NOT NULL);
        CREATE TABLE controllers (owner TEXT PRIMARY KEY, heartbeat REAL NOT NULL);
        INSERT INTO sweeps VALUES ('sw1', 'old', 't.yaml', '{"method": "grid", "parameters": {}}', NULL, 3, 0);
        INSERT INTO controllers VALUES ('box:1', 0);
    """)
    conn.commit()
    conn.close()
    store = Store(old, create=False)
    assert store.sweep("sw1").seed == 3 and store.backend.schema_version() == SCHEMA_VERSION
    new = Store(tmp_path / "new" / "sweeps.db")  # migrated, it has every table and column a new store has
    assert {t: store.backend.columns(t) for t in TABLES} == {t: new.backend.columns(t) for t in TABLES}
    assert store.controller_seen("box:1").machine is None and store.controller_seen("box:1").age_s > 1e9
    store.heartbeat("box:2")
    assert store.controller_seen("box:2").age_s < 60 and store.controller_seen("box:2").machine


def test_store_urls_are_parsed_and_their_password_never_shown():
    location = parse_location("postgresql://sweeper:s3cr%40t@db.lan:5433/sweeps?sslmode=require")
    assert location.kind == "postgresql" and location.password == "s3cr@t"
    assert str(location) == "postgresql://sweeper@db.lan:5433/sweeps?sslmode=require"
    assert "s3cr" not in repr(location) and location.secret_env == {"PGPASSWORD": "s3cr@t"}
    assert mask_password("postgresql://sweeper:pw@db.lan/sweeps") == "postgresql://sweeper:***@db.lan/sweeps"
    # libpq also takes the password as a query parameter
    in_query = parse_location("postgresql://sweeper@db.lan/sweeps?password=s3cr%40t&sslmode=require")
    assert in_query.password == "s3cr@t" and str(in_query) == "postgresql://sweeper@db.lan/sweeps?sslmode=require"
    assert mask_password("postgresql://u@h/db?password=pw&sslmode=require") == "postgresql://u@h/db?sslmode=require&password=***"
    assert parse_location("sqlite:///tmp/x/sweeps.db").address == Path("/tmp/x/sweeps.db")
    assert parse_location("runs/sweeps.db").kind == "sqlite"
    with pytest.raises(StoreLocationError, match=r"mysql://u:\*\*\*@h/db: unsupported scheme 'mysql'"):
        parse_location("mysql://u:pw@h/db")
    with pytest.raises(StoreLocationError, match="no database name"):
        parse_location("postgresql://u@h:5432/")


def test_a_password_in_the_store_url_is_never_printed_nor_put_in_a_trial_argv(pg_cluster, pg_url, tmp_path):
    secret = "hunter2-not-printed"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # trust auth: any password connects
    store = Store(url)
    assert secret not in str(store.path)
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": {"quality": {"values": [0.5]}}},
                      "t.yaml", None, seed=0)
    status = CliRunner().invoke(main, ["status", sweep.id, "--store", url])
    assert status.exit_code == 0 and secret not in status.output and sweep.id in status.output
    nowhere = url.rsplit("/", 1)[0] + "/no_such_db"
    failed = CliRunner().invoke(main, ["status", "--store", nowhere])
    assert failed.exit_code == 1 and secret not in failed.output and "cannot connect" in failed.output, failed.output
    assert failed.output.strip().count("\n") == 0  # one line

    started = []

    class Recorder:
        def start(self, argv, log, env):
            started.append((argv, env))
            raise SystemExit  # enough: what the trial would have been given

    controller = Controller(store, sweep, tmp_path / "home", launcher=Recorder(), log=lambda *_: None)
    with pytest.raises(SystemExit):
        controller.launch(controller.claim()[0])
    argv, env = started[0]
    assert secret not in " ".join(argv) and str(store.path) in argv
    assert env["PGPASSWORD"] == secret


def test_an_artifact_not_reachable_from_this_box_is_named(tmp_path):
    store = Store(tmp_path / "home" / "sweeps.db")
    store.create_sweep("sw1", "t", "t.yaml", {"method": "grid", "metric": METRIC, "parameters": {}}, None, 0)
    trial = store.add_trial("sw1", "sw1-001", {}, owner="box-a:1")
    store.mark_running(trial.id, pid=1)
    store.log_epoch(trial.id, {"epoch": 1, "val_auc": 0.7}, "val_auc", "maximize")
    written = tmp_path / "box-a-mount" / "sw1" / "sw1-001"  # where box A wrote it
    store.end_trial(trial.id, "finished", artifact=str(written))
    sweep = store.sweep("sw1")
    with pytest.raises(PromotionError, match=rf"expected at {written}\); if it was written on another box, "
                                             r"pass --artifacts DIR"):
        best_finished_trial(store, sweep)
    here = tmp_path / "box-b-mount"
    with pytest.raises(PromotionError, match=rf"not reachable from this box: not at {written} .* nor at "
                                             rf"{here / 'sw1' / 'sw1-001'} \(under --artifacts\)"):
        best_finished_trial(store, sweep, artifacts=here)
    (here / "sw1" / "sw1-001").mkdir(parents=True)  # box B mounts the shared folder elsewhere
    assert best_finished_trial(store, sweep, artifacts=here).artifact == str(here / "sw1" / "sw1-001")


def test_a_real_sweep_on_postgresql_then_export_best_from_the_other_box(pg_url, tiny_data, tmp_path):
    """Box A runs the smoke sweep (two real trials); box B exports the winner through its own mount of
    the shared artifacts folder, A's mount not being visible from B. (Resuming from another box is
    the fake-trial tests' part: a third real trial would cost this test a third of its time.)"""
    nfs = tmp_path / "nfs"
    nfs.mkdir()
    mounts = {box: tmp_path / box / "mnt" for box in ("box-a", "box-b")}
    for mount in mounts.values():
        mount.parent.mkdir()
        mount.symlink_to(nfs)

    def cli(box, *args, timeout=300):
        env = {**os.environ, "COVID_SWEEP_MACHINE": box, "WANDB_MODE": "disabled", "COLUMNS": "200",
               "COVID_SWEEP_HOME": str(tmp_path / box / "home"), "COVID_SWEEP_STORE": pg_url}
        run = subprocess.run([sys.executable, "-m", "covid_sweep", *args], capture_output=True, text=True,
                             timeout=timeout, env=env, cwd=REPO)
        assert run.returncode == 0, (args, run.stdout[-3000:], run.stderr[-3000:])
        return run.stdout

    first = cli("box-a", "sweep", "sweeps/smoke.yaml", "--data", str(tiny_data), "--count", "2",
                "--artifacts", str(mounts["box-a"]))
    sweep_id = first.split()[1]
    assert f"resume with: covid-sweep sweep --resume {sweep_id}" in first and "postgresql://" in first

    store = Store(pg_url)
    trials = store.trials(sweep_id)
    assert [t.state for t in trials] == ["finished", "finished"]
    assert all(t.artifact.startswith(str(mounts["box-a"])) for t in trials)
    assert all(len(store.history(t.id)) == 2 for t in trials)  # smoke.yaml: every epoch written as it happened

    mounts["box-a"].unlink()  # box A's mount is not visible from box B
    out = tmp_path / "box-b" / "export"
    exported = cli("box-b", "export-best", sweep_id, "--data", str(tiny_data), "--out", str(out),
                   "--artifacts", str(mounts["box-b"]))
    winner = best_finished_trial(store, store.sweep(sweep_id), artifacts=mounts["box-b"])
    assert f"best finished trial of sweep {sweep_id}: {winner.name}" in exported
    assert (out / "submission.csv").is_file() and (out / "model").is_dir()
    assert store.alias(sweep_id, "best") == winner.id
    seen_from_a = CliRunner().invoke(main, ["status", sweep_id, "--store", pg_url], terminal_width=200)
    assert f"{winner.name} [best]" in seen_from_a.output  # the promotion is in the shared store


def test_a_store_connection_dropped_by_the_server_is_reopened_between_statements(pg_url):
    """A sweep runs for days: a database restart or a dropped connection between two polls is not fatal."""
    import psycopg

    store = Store(pg_url)
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": {}}, "t.yaml", None, seed=0)
    backend_pid = store.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,)).fetchone()[0]
    assert store.sweep(sweep.id).id == sweep.id  # a new connection, the same store
    with store.write_lock():  # and the lock works on it
        store.add_trial(sweep.id, f"{sweep.id}-001", {}, owner="box:1")
    assert [t.name for t in store.trials(sweep.id)] == [f"{sweep.id}-001"]


# ---- issue 26, item 8: a database that restarts -----------------------------------------------------

@pytest.fixture
def own_cluster(pg_cluster):
    """A PostgreSQL server of this test's own, which the test stops and starts again (as a restart or a failover
    does) without disturbing the session's shared one."""
    from pg_cluster import PgCluster

    cluster = PgCluster(pg_cluster.bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_database_restart_mid_sweep_is_ridden_out_and_nothing_committed_is_lost(own_cluster, tmp_path):
    url = own_cluster.create_database("outage")
    store = Store(url)
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.4, 0.7]}, "epochs": {"value": 12}, "epoch_s": {"value": 0.25}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    box = start_box(store, sweep.id, tmp_path, "box-a", agents=2)
    assert wait_for(lambda: any(t.epochs >= 2 for t in store.trials(sweep.id)), timeout=60)
    store.close()
    logged_before = {t.name: t.epochs for t in Store(url).trials(sweep.id)}
    own_cluster.pause()  # the controller and both trials lose their connections mid-epoch-loop
    try:
        box.wait(timeout=5)  # gave up: fails below
    except subprocess.TimeoutExpired:
        pass
    own_cluster.resume()
    output = box.communicate(timeout=120)[0]
    assert box.returncode == 0, output
    assert "unreachable" in output and "Traceback" not in output
    after = Store(url)
    trials = after.trials(sweep.id)
    assert [t.state for t in trials] == ["finished", "finished"], output
    for trial in trials:  # every epoch is there once, those logged before the outage included
        assert [h["epoch"] for h in after.history(trial.id)] == list(range(1, 13))
        assert trial.epochs == 12 and trial.epochs >= logged_before.get(trial.name, 0)


def test_a_trial_opening_the_store_during_a_restart_waits_for_the_server(own_cluster, monkeypatch):
    """A trial process that starts (imports torch, then opens the store) while the server restarts must wait
    it out like any other store call; only a store never reached (a wrong URL) is refused at once."""
    import threading

    url = own_cluster.create_database("late")
    Store(url).close()
    monkeypatch.setenv("COVID_SWEEP_STORE_OUTAGE_S", "60")
    own_cluster.pause()
    try:
        with pytest.raises(StoreError, match="cannot connect"):
            Store(url, create=False)  # a user's command: an unreachable address is refused in one line
        restart = threading.Timer(1.5, own_cluster.resume)
        restart.start()
        store = Store(url, create=False, known=True)  # what a trial process opens
        restart.join()
    finally:
        if not own_cluster._started:
            own_cluster.resume()
    assert store.sweeps() == []
    store.close()


def test_an_outage_longer_than_the_window_is_one_line_after_backing_off():
    from covid_sweep.sweep.store.outage import StoreUnavailable, ride_out

    now, waits = [0.0], []

    def down():
        raise StoreUnavailable("connection refused")

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    with pytest.raises(StoreError, match="stayed unreachable for 60 s") as err:
        ride_out(down, "postgresql://box/db", window_s=60, sleep=sleep, clock=lambda: now[0])
    assert not isinstance(err.value, StoreUnavailable)  # given up: no caller retries it again
    assert waits[:4] == [0.25, 0.5, 1.0, 2.0] and max(waits) == 5.0 and sum(waits) == pytest.approx(60)
    calls = iter([StoreUnavailable("restarting"), StoreUnavailable("restarting"), "done"])

    def flaky():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert ride_out(flaky, "db", window_s=60, sleep=lambda s: None) == "done"


TABLES = ("sweeps", "trials", "epochs", "controllers", "aliases", "schema_version")


def test_one_schema_makes_the_same_tables_and_columns_on_both_backends(store, tmp_path):
    """Issue 28: the tables are declared once (SQLAlchemy Core, sweep/store/schema.py) for both dialects."""
    from covid_sweep.sweep.store.backend import Backend
    from covid_sweep.sweep.store.schema import metadata

    declared = {name: set(table.c.keys()) for name, table in metadata.tables.items()}
    assert set(declared) == set(TABLES)
    assert isinstance(store.backend, Backend)  # the declared interface
    assert {t: store.backend.columns(t) for t in TABLES} == declared
    assert store.backend.schema_version() == SCHEMA_VERSION
    sweep = new_sweep(store, {"method": "grid", "metric": METRIC, "parameters": {"quality": {"values": [0.5]}}},
                      "t.yaml", None, seed=0)
    first = store.add_trial(sweep.id, "a", {}, owner="box:1")
    assert store.add_trial(sweep.id, "b", {}, owner="box:1").id > first.id and first.epochs == 0


def test_a_migration_runs_once_per_version_in_order(monkeypatch, tmp_path):
    from covid_sweep.sweep.store import schema

    ran = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(schema, "MIGRATIONS", {v: (lambda backend, v=v: ran.append(v)) for v in (2, 3, 4)})
    store = Store(tmp_path / "sweeps.db")
    with store.backend.transaction():
        schema.migrate(store.backend, 2)
    assert ran == [3, 4] and store.backend.schema_version() == 4
    ran.clear()
    with store.backend.transaction():
        schema.migrate(store.backend, None)  # before versions were recorded: version 1
    assert ran == [2, 3, 4]

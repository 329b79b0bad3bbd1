"""cdrsync, once a day, as an Airflow 3 DAG.

Runs ``cdrsync run --date D`` at 01:30 UTC for D = the day before the run (the UTC day that
has just closed; keep ``[job] lag`` under 1h30m or move the schedule). cdrsync's exit codes
(sysexits, DESIGN.md §3) decide what Airflow does:

* 0 — done (also when the day was already done): success.
* 75 — temporary (CXone WAITING, the day's lease held by another run, day not closed yet,
  stopped by a signal, state store busy): the task fails *for a retry* — ``retries`` with
  ``retry_delay``. The next try resumes the same request; no data is requested twice.
* 64, 65, 77, 78 — usage error, data/schema halt, authentication refused, bad configuration:
  ``AirflowFailException``, i.e. failed at once, never retried (a retry cannot fix them and
  would only hide the alert). Data errors are never *skipped* either: ``skip_on_exit_code``
  is disabled.
* anything else (69: CXone or a sink unavailable after cdrsync's own retries; 1) — retried
  like 75.

The binary and the config come from Airflow Variables ``cdrsync_bin`` and
``cdrsync_config`` (also settable as environment variables ``AIRFLOW_VAR_CDRSYNC_BIN`` /
``AIRFLOW_VAR_CDRSYNC_CONFIG``), defaulting to ``/usr/local/bin/cdrsync`` and
``/etc/cdrsync/cdrsync.toml``. ``cdrsync_retries`` / ``cdrsync_retry_delay_seconds`` tune the
retries (defaults 6 and 1800: three hours of WAITING before a person is asked).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException

# Exit codes that no retry can fix: fail the task at once.
NO_RETRY_EXIT_CODES = {64: "usage error", 65: "data/schema halt", 77: "authentication refused",
                       78: "bad configuration"}


def _setting(name: str, default: str) -> str:
    # Parse-time read of the environment only (no metadata-db access while parsing);
    # Airflow Variables are read through the template below at run time.
    return os.environ.get(f"AIRFLOW_VAR_{name.upper()}", default)


class CdrsyncOperator(BashOperator):
    """A BashOperator that turns cdrsync's exit code into Airflow's retry decision."""

    def __init__(self, **kwargs):
        # 99 is BashOperator's default "skip" code; cdrsync never uses it, and skipping
        # would hide a failed day: no exit code skips.
        super().__init__(skip_on_exit_code=None, **kwargs)

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as error:
            code = self._exit_code(error)
            if code in NO_RETRY_EXIT_CODES:
                raise AirflowFailException(
                    f"cdrsync exited {code} ({NO_RETRY_EXIT_CODES[code]}): not retried; "
                    "see the task log and the cdrsync alert"
                ) from error
            raise  # 75 and the rest: a normal failure, retried per `retries`

    def _exit_code(self, error: Exception) -> int | None:
        process = getattr(self.subprocess_hook, "sub_process", None)
        if process is not None and process.returncode is not None:
            return process.returncode
        found = re.search(r"exit code (\d+)", str(error))
        return int(found.group(1)) if found else None


with DAG(
    dag_id="cdrsync_daily",
    description="NICE CXone Call Detail Records: yesterday's UTC day, extracted and published once",
    schedule="30 1 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,  # cdrsync's own `run --catch-up` / `backfill` fill gaps
    max_active_runs=1,
    tags=["cdrsync"],
    default_args={
        "retries": int(_setting("cdrsync_retries", "6")),
        "retry_delay": timedelta(seconds=int(_setting("cdrsync_retry_delay_seconds", "1800"))),
    },
) as dag:
    CdrsyncOperator(
        task_id="cdrsync_run",
        bash_command=(
            '"{{ var.value.get("cdrsync_bin", "/usr/local/bin/cdrsync") }}" run'
            " --date {{ macros.ds_add(ds, -1) }}"
            ' --config "{{ var.value.get("cdrsync_config", "/etc/cdrsync/cdrsync.toml") }}"'
        ),
        execution_timeout=timedelta(hours=6),
    )

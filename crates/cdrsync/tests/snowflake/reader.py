"""An independent reader of a Snowflake (fakesnow) warehouse for cdrsync's tests.

Connects with snowflake-connector-python (the vendor's connector, not cdrsync's client)
over plain HTTP to HOST:PORT, then answers one JSON request per stdin line,
{"sql": "...", "params": [...]}, with one JSON line {"rows": [[cell, ...], ...]} or
{"error": "..."}. Cells are text: decimals without trailing zeros, NULL as null.
"""
import datetime
import decimal
import json
import sys

import snowflake.connector

host, port = sys.argv[1], int(sys.argv[2])
conn = snowflake.connector.connect(
    user="reader",
    password="reader",
    account="fakesnow",
    host=host,
    port=port,
    protocol="http",
    session_parameters={"QUERY_TAG": "cdrsync-test-reader"},
)


def text(v):
    if v is None:
        return None
    if isinstance(v, decimal.Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    return str(v)


for line in sys.stdin:
    request = json.loads(line)
    try:
        cur = conn.cursor()
        cur.execute(request["sql"], request.get("params") or None)
        rows = [[text(c) for c in row] for row in (cur.fetchall() if cur.description else [])]
        out = {"rows": rows}
    except Exception as e:  # the test shows it
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)

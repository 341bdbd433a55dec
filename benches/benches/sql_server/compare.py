"""Times queries through `meterline serve` (psycopg, over the Postgres wire
protocol) and through DuckDB on the same Parquet files, for the sql_server bench.

Reads one JSON document on stdin:
  {"host", "port", "token", "lake", "warmup": n, "runs": n,
   "queries": [{"name", "engine": "server" | "duckdb", "sql"}]}
and writes a JSON list, one entry per query, in order:
  {"name", "engine", "ms": [run times], "rows": [[cell as text, ...], ...]}
or {"name", "engine", "error": "..."}.

A run is the client's view: send the query, fetch every row. The runs of the
queries of one name alternate (server, DuckDB, server, ...), so that a busier
moment of a shared machine falls on both engines. The server runs share one
connection (as a dashboard or an app holds one); DuckDB runs in this
process with its default threads, over views on the `readings` and
`consumption_monthly` files with the hive partition columns
(`tenant=.../local_date=...`, `.../month=...`) read from the paths.
"""

import datetime
import decimal
import json
import sys
import time

import duckdb
import psycopg


def text(cell):
    if cell is None:
        return None
    if isinstance(cell, decimal.Decimal):
        # 12.500 and 12.5 are the same number: compare the values, not the scales.
        return format(cell.normalize(), "f")
    if isinstance(cell, (datetime.date, datetime.datetime)):
        return cell.isoformat()
    return str(cell)


def rows_of(rows):
    return [[text(c) for c in row] for row in rows]


def timed(runs_by_query, warmup, runs):
    """Times the queries of one name (one per engine) in alternation, run by
    run, so that a slower or busier moment of the machine falls on both."""
    for run in runs_by_query:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs_by_query]
    rows = [None for _ in runs_by_query]
    for _ in range(runs):
        for i, run in enumerate(runs_by_query):
            started = time.perf_counter()
            rows[i] = run()
            times[i].append((time.perf_counter() - started) * 1000.0)
    return times, [rows_of(r) for r in rows]


def main():
    doc = json.load(sys.stdin)
    server = psycopg.connect(
        host=doc["host"],
        port=doc["port"],
        user="bench",
        password=doc["token"],
        dbname="meterline",
        sslmode="disable",
        autocommit=True,
    )
    duck = duckdb.connect()
    for table, partition in (("readings", "local_date"), ("consumption_monthly", "month")):
        duck.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
            f"'{doc['lake']}/{table}/*/*/*.parquet', hive_partitioning = true, "
            f"hive_types = {{'tenant': VARCHAR, '{partition}': DATE}})"
        )

    def on_server(sql):
        def run():
            with server.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

        return run

    def on_duckdb(sql):
        return lambda: duck.execute(sql).fetchall()

    names = []
    for q in doc["queries"]:
        if q["name"] not in names:
            names.append(q["name"])
    results = {}
    for name in names:
        group = [q for q in doc["queries"] if q["name"] == name]
        runs = [on_server(q["sql"]) if q["engine"] == "server" else on_duckdb(q["sql"]) for q in group]
        try:
            times, rows = timed(runs, doc["warmup"], doc["runs"])
            for q, t, r in zip(group, times, rows):
                results[(name, q["engine"])] = {"name": name, "engine": q["engine"], "ms": t, "rows": r}
        except Exception as e:  # reported to the bench, which fails
            for q in group:
                results[(name, q["engine"])] = {
                    "name": name, "engine": q["engine"], "error": f"{type(e).__name__}: {e}",
                }
    out = [results[(q["name"], q["engine"])] for q in doc["queries"]]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

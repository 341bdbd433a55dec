"""A Postgres client for the `meterline serve` scenario: psycopg over TLS, and
tokens made with PyJWT (an implementation independent of meterline's).

Reads a JSON document on stdin:
  {"host": ..., "port": ..., "ca": <CA file>, "requests": [request, ...]}
where a request is
  {"token": <token spec>, "sql": <text>, "params": [..] or null, "prepare": bool}
and a token spec is {"raw": <text>} or
  {"alg": "HS256"|"RS256"|"none", "key": <secret text or PEM>, "claims": {...},
   "header": {...}}.
Claims "exp", "nbf" and "iat" given as {"now+": seconds} are made relative to the
"now" of the document (Unix seconds: the scenario's clock).

Writes a JSON list, one entry per request, in order:
  {"token": <the token used>, "rows": [[cell as text or null, ...], ...],
   "types": [type oid, ...]}
or {"token": ..., "error": {"sqlstate": ..., "message": ...}}.
Requests with the same token and "session": true share one connection.
A request with "cancel": true runs its query in a thread while this one sends
cancel requests (psycopg's cancel_safe) until the query ends: a cancel that
arrives before the server has started the statement finds nothing to cancel,
and the next one does.

A request that has not ended after REQUEST_SECONDS fails the whole run with the
request named (a server that stops answering shows as a failure, not as a
test that hangs until CI's limit).
"""

import decimal
import json
import signal
import sys
import threading

import jwt
import psycopg


def make_token(spec, now):
    if "raw" in spec:
        return spec["raw"]
    claims = {}
    for k, v in spec.get("claims", {}).items():
        if isinstance(v, dict) and "now+" in v:
            v = now + v["now+"]
        claims[k] = v
    alg = spec["alg"]
    key = spec.get("key")
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none", headers=spec.get("header"))
    return jwt.encode(claims, key, algorithm=alg, headers=spec.get("header"))


def cell(v):
    if v is None:
        return None
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def param(p):
    # {"decimal": "0.5"} for a numeric parameter.
    if isinstance(p, dict) and "decimal" in p:
        return decimal.Decimal(p["decimal"])
    return p


# Far above any request of the scenario (the statement timeout is 5 s).
REQUEST_SECONDS = 120


def watchdog(number, sql):
    def expired(_signum, _frame):
        raise TimeoutError(
            f"request {number} got no answer in {REQUEST_SECONDS} s: {sql[:200]}"
        )

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(REQUEST_SECONDS)


def run(doc):
    out = []
    connections = {}
    for number, req in enumerate(doc["requests"]):
        watchdog(number, req["sql"])
        token = make_token(req["token"], doc["now"])
        entry = {"token": token}
        try:
            conn = connections.get(token) if req.get("session") else None
            if conn is None or conn.closed:
                conn = psycopg.connect(
                    host=doc["host"],
                    port=doc["port"],
                    dbname="meterline",
                    user=req.get("user", "scenario"),
                    password=token,
                    sslmode="verify-full",
                    sslrootcert=doc["ca"],
                    autocommit=True,
                    connect_timeout=30,
                )
                if req.get("session"):
                    connections[token] = conn
            # What the server announced at startup (ParameterStatus).
            entry["server_version"] = conn.info.server_version
            entry["DateStyle"] = conn.info.parameter_status("DateStyle")
            try:
                cur = conn.cursor()
                params = req.get("params")
                if params is not None:
                    params = [param(p) for p in params]
                if req.get("cancel"):
                    failure = []

                    def execute():
                        try:
                            cur.execute(req["sql"], params)
                        except psycopg.Error as e:
                            failure.append(e)

                    running = threading.Thread(target=execute)
                    running.start()
                    while running.is_alive():
                        conn.cancel_safe(timeout=10)
                        running.join(0.05)
                    if failure:
                        raise failure[0]
                else:
                    cur.execute(req["sql"], params, prepare=req.get("prepare", False))
                if cur.description is None:
                    entry["rows"] = []
                    entry["types"] = []
                else:
                    entry["types"] = [d.type_code for d in cur.description]
                    entry["rows"] = [[cell(v) for v in row] for row in cur.fetchall()]
            finally:
                if not req.get("session"):
                    conn.close()
        except psycopg.Error as e:
            entry["error"] = {
                "sqlstate": getattr(e, "sqlstate", None) or "",
                "message": str(e).strip(),
            }
        signal.alarm(0)
        out.append(entry)
    for conn in connections.values():
        conn.close()
    return out


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)

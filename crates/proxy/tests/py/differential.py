"""Differential driver script: the same steps against a DSN, printed as JSON.

Run by crates/proxy/tests/all/drivers.rs once directly against PostgreSQL and once through
helios-proxy (whose test plugin refuses every statement calling helios_refuse_me()). Directly, such
a statement fails on the server (42883, the function does not exist), so a refusal that behaves like
a server error leaves the same results and the same database state.

usage: differential.py psycopg|asyncpg HOST PORT USER DBNAME
"""

import asyncio
import json
import sys

REFUSED = "SELECT helios_refuse_me()"


def outcome(step, fn):
    try:
        rows = fn()
        return {"step": step, "ok": True, "rows": rows}
    except Exception as e:  # noqa: BLE001 - any driver error is an outcome to compare
        return {"step": step, "ok": False, "sqlstate": getattr(e, "sqlstate", None) or type(e).__name__}


def psycopg_script(host, port, user, db):
    import psycopg

    dsn = f"host={host} port={port} user={user} dbname={db}"
    out = []
    c = psycopg.connect(dsn, autocommit=True)

    def q(sql, params=None):
        cur = c.execute(sql, params)
        return [list(r) for r in cur.fetchall()] if cur.description else cur.rowcount

    out.append(outcome("create", lambda: q("CREATE TABLE t (id int PRIMARY KEY, v text)")))
    out.append(outcome("simple insert", lambda: q("INSERT INTO t VALUES (1, 'one')")))
    out.append(outcome("extended insert", lambda: q("INSERT INTO t VALUES (%s, %s)", (2, "two"))))
    out.append(outcome("extended select", lambda: q("SELECT id, v FROM t WHERE id >= %s ORDER BY id", (1,))))
    out.append(outcome("prepared", lambda: [list(r) for r in c.execute("SELECT %s::int * 2", (21,), prepare=True).fetchall()]))
    out.append(outcome("prepared again", lambda: [list(r) for r in c.execute("SELECT %s::int * 2", (5,), prepare=True).fetchall()]))

    # Pipeline atomicity: one Sync, an INSERT then a failing (or refused) statement.
    def pipeline_with_refusal():
        with c.pipeline():
            c.execute("INSERT INTO t VALUES (%s, %s)", (10, "pipelined"))
            c.execute(REFUSED)
        return "no error"

    out.append(outcome("pipeline insert then refused", pipeline_with_refusal))
    out.append(outcome("session usable after the pipeline", lambda: q("SELECT count(*) FROM t WHERE id = 10")))

    def pipeline_with_server_error():
        with c.pipeline():
            c.execute("INSERT INTO t VALUES (%s, %s)", (11, "pipelined"))
            c.execute("INSERT INTO t VALUES (%s, %s)", (1, "duplicate"))
        return "no error"

    out.append(outcome("pipeline insert then duplicate", pipeline_with_server_error))

    def pipeline_ok():
        with c.pipeline():
            for i in range(20, 25):
                c.execute("INSERT INTO t VALUES (%s, %s)", (i, f"p{i}"))
        return "ok"

    out.append(outcome("pipeline of five", pipeline_ok))

    def executemany():
        with c.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, f"m{i}") for i in range(30, 40)])
        return "ok"

    out.append(outcome("executemany", executemany))

    # Explicit transaction: a refusal fails it; the next statement gets 25P02; ROLLBACK undoes it.
    out.append(outcome("begin", lambda: q("BEGIN")))
    out.append(outcome("insert in tx", lambda: q("INSERT INTO t VALUES (50, 'tx')")))
    out.append(outcome("refused in tx", lambda: q(REFUSED)))
    out.append(outcome("next in failed tx", lambda: q("SELECT 1")))
    out.append(outcome("extended in failed tx", lambda: q("SELECT %s::int", (1,))))
    out.append(outcome("rollback", lambda: q("ROLLBACK")))
    out.append(outcome("after rollback", lambda: q("SELECT count(*) FROM t WHERE id = 50")))

    # Transaction that commits around an error caught by a savepoint.
    out.append(outcome("begin 2", lambda: q("BEGIN")))
    out.append(outcome("insert 2", lambda: q("INSERT INTO t VALUES (60, 'kept')")))
    out.append(outcome("savepoint", lambda: q("SAVEPOINT s")))
    out.append(outcome("refused after savepoint", lambda: q(REFUSED)))
    out.append(outcome("rollback to savepoint", lambda: q("ROLLBACK TO SAVEPOINT s")))
    out.append(outcome("commit 2", lambda: q("COMMIT")))

    # Refused statement with parameters (extended protocol), then the session goes on.
    out.append(outcome("refused extended", lambda: q("SELECT helios_refuse_me(), %s::int", (1,))))
    out.append(outcome("after refused extended", lambda: q("SELECT %s::text", ("fine",))))

    # Errors from the server.
    out.append(outcome("division by zero", lambda: q("SELECT 1 / 0")))
    out.append(outcome("undefined table", lambda: q("SELECT * FROM missing_table")))

    # COPY both ways.
    def copy_in():
        with c.cursor() as cur:
            with cur.copy("COPY t (id, v) FROM STDIN") as cp:
                for i in range(70, 75):
                    cp.write_row((i, f"c{i}"))
        return "ok"

    out.append(outcome("copy in", copy_in))

    def copy_out():
        with c.cursor() as cur:
            with cur.copy("COPY (SELECT id, v FROM t WHERE id >= 70 ORDER BY id) TO STDOUT") as cp:
                return [list(r) for r in cp.rows()]

    out.append(outcome("copy out", copy_out))
    out.append(outcome("final state", lambda: q("SELECT id, v FROM t ORDER BY id")))
    c.close()
    return out


def asyncpg_script(host, port, user, db):
    import asyncpg

    async def run():
        out = []
        c = await asyncpg.connect(host=host, port=port, user=user, database=db)

        async def step(name, coro_fn):
            try:
                r = await coro_fn()
                if isinstance(r, list):
                    r = [list(x) if not isinstance(x, (str, int)) else x for x in r]
                out.append({"step": name, "ok": True, "rows": r})
            except Exception as e:  # noqa: BLE001
                state = getattr(e, "sqlstate", None) or f"{type(e).__name__}: {e}"
                out.append({"step": name, "ok": False, "sqlstate": state})

        await step("create", lambda: c.execute("CREATE TABLE a (id int PRIMARY KEY, v text)"))
        await step("insert params", lambda: c.execute("INSERT INTO a VALUES ($1, $2)", 1, "one"))
        await step("fetch", lambda: c.fetch("SELECT id, v FROM a WHERE id = $1", 1))
        await step("fetch again (cached statement)", lambda: c.fetch("SELECT id, v FROM a WHERE id = $1", 1))
        await step("executemany", lambda: c.executemany("INSERT INTO a VALUES ($1, $2)", [(i, f"m{i}") for i in range(10, 20)]))
        await step("executemany with a duplicate", lambda: c.executemany("INSERT INTO a VALUES ($1, $2)", [(30, "x"), (1, "dup")]))
        await step("refused", lambda: c.fetch(REFUSED))
        await step("after refused", lambda: c.fetchval("SELECT $1::int + 1", 41))

        async def tx_with_refusal():
            async with c.transaction():
                await c.execute("INSERT INTO a VALUES (40, 'tx')")
                try:
                    await c.fetch(REFUSED)
                except Exception as e:  # noqa: BLE001
                    first = getattr(e, "sqlstate", None)
                try:
                    await c.fetchval("SELECT 1")
                    second = None
                except Exception as e:  # noqa: BLE001
                    second = getattr(e, "sqlstate", None)
                raise RuntimeError(f"refused:{first is not None} next:{second}")

        await step("transaction with a refusal", tx_with_refusal)
        await step("tx rows", lambda: c.fetchval("SELECT count(*) FROM a WHERE id = 40"))

        async def prepared():
            st = await c.prepare("SELECT v FROM a WHERE id = $1")
            return [await st.fetchval(1), await st.fetchval(10)]

        await step("prepared", prepared)
        await step("copy records", lambda: c.copy_records_to_table("a", records=[(50, "c50"), (51, "c51")]))
        await step("final state", lambda: c.fetch("SELECT id, v FROM a ORDER BY id"))
        await c.close()
        return out

    return asyncio.run(run())


def main():
    driver, host, port, user, db = sys.argv[1:6]
    script = {"psycopg": psycopg_script, "asyncpg": asyncpg_script}[driver]
    print(json.dumps(script(host, int(port), user, db)))


if __name__ == "__main__":
    main()

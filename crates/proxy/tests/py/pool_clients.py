"""N asyncpg clients at once, each: connect, a few statements (prepared, in a transaction, one that
holds its connection briefly), close. Prints {"ok": n, "errors": [...]} as JSON.

usage: pool_clients.py N HOST PORT USER DBNAME [statement_cache_size [rounds]]
"""

import asyncio
import json
import sys


async def client(i, host, port, user, db, cache, rounds):
    import asyncpg

    c = await asyncpg.connect(host=host, port=port, user=user, database=db, statement_cache_size=cache, timeout=60)
    try:
        for r in range(rounds):
            for k in range(5):
                assert await c.fetchval("SELECT $1::int + $2::int", i, k) == i + k
            async with c.transaction():
                await c.execute("INSERT INTO hits VALUES ($1)", i)
                assert await c.fetchval("SELECT count(*) FROM hits WHERE client = $1", i) == r + 1
            await c.fetchval("SELECT pg_sleep(0.02)::text || $1::text", str(i))
            st = await c.prepare("SELECT client FROM hits WHERE client = $1 LIMIT 1")
            assert await st.fetchval(i) == i
    finally:
        await c.close()


async def main():
    n, host, port, user, db = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    cache = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    jobs = (client(i, host, port, user, db, cache, rounds) for i in range(n))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    print(json.dumps({"ok": n - len(errors), "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main())

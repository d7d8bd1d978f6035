"""How long the usage statistics take with a year's worth of a team's usage.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/usage.py

Seeds 1,000,000 usage records over 90 days, 200 members and 20 models (`manage.py seed_usage`) in a
database of its own (`chatsite_usage`, beside DATABASE_URL's, dropped at the end unless --keep;
without DATABASE_URL, SQLite in a temporary directory), then VACUUM ANALYZE as autovacuum would. Starts
chatsite under daphne and times, each as the median of --repeat tries, by the Server-Timing header (the
server's own time, database included):

- the admin's statistics page for the last 30 days (totals, percentiles, two daily charts, four
  breakdowns, top members);
- the admin's list of members with their totals for the last 30 days;
- for information: one member's "My usage" page and the drill-down to one member's records.

The usage table's covering index (migration 0007, PostgreSQL) lets the statistics read the index alone.
Targets: the statistics page within 500 ms, the members' list within 300 ms. A benchmark, not a
test: it prints a table and which targets were met. --reuse measures an existing database again
(made with --keep) without seeding: handy when trying an index.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from history import server_ms  # one reader of the Server-Timing header for the benches
from relay import (
    BASE_DIR,
    DAPHNE,
    PYTHON,
    Servers,
    bench_database_url,
    drop_database,
    free_port,
    session_cookie,
)

RECORDS = 1_000_000
DAYS = 90
USERS = 200
MODELS = 20
TARGET_PAGE_MS = 500
TARGET_MEMBERS_MS = 300


# The index the statistics need on PostgreSQL (a migration to add it is proposed; not in the models
# yet): every column the pages read, so that a month of rows is read from the index alone.
def seed_in_django(records: int, days: int, users: int, models: int) -> dict[str, Any]:
    """Runs in a child process with the server's environment."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(BASE_DIR))
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    if records:
        call_command("seed_usage", records=records, days=days, users=users, models=models, batch=10_000)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # As autovacuum would after a bulk load: statistics for the planner, the visibility map
            # for index-only scans.
            cursor.execute("VACUUM ANALYZE conversations_usagerecord")
    User = get_user_model()
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    member = User.objects.filter(username__startswith="usage-member-").order_by("username").first()
    return {"admin": session_cookie(admin), "member": session_cookie(member), "member_id": member.pk}


def database_ms(response: httpx.Response) -> float:
    match = re.search(r"db;dur=([\d.]+)", response.headers.get("Server-Timing", ""))
    return float(match.group(1)) if match else 0.0


def timed(client: httpx.Client, path: str, repeat: int) -> tuple[float, float]:
    """Median server time and median database time of `path`, after one warming request."""
    server_ms(client.get(path))
    responses = [client.get(path) for _ in range(repeat)]
    return (
        statistics.median(server_ms(response) for response in responses),
        statistics.median(database_ms(response) for response in responses),
    )


def measure(port: int, seeded: dict[str, Any], repeat: int) -> dict[str, tuple[float, float]]:
    base = f"http://127.0.0.1:{port}"
    statistics_page = "/admin/conversations/usagerecord/statistics/?period=30d"
    with httpx.Client(base_url=base, headers={"Cookie": seeded["admin"]}, timeout=120) as admin:
        figures = {
            "page": timed(admin, statistics_page, repeat),
            "members": timed(
                admin, "/admin/conversations/usagerecord/statistics/members/?period=30d", repeat
            ),
        }
        page = admin.get(statistics_page).text
        drill_down = re.search(r'href="(/admin/conversations/usagerecord/\?[^"]+)"', page)
        if drill_down:
            figures["records"] = timed(admin, drill_down.group(1).replace("&amp;", "&"), repeat)
    with httpx.Client(base_url=base, headers={"Cookie": seeded["member"]}, timeout=120) as member:
        figures["own"] = timed(member, "/account/usage/?period=30d", repeat)
    return figures


def main() -> None:
    if sys.argv[1:2] == ["_seed"]:
        print(json.dumps(seed_in_django(*(int(value) for value in sys.argv[2:6]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--models", type=int, default=MODELS)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--pg-database", default="chatsite_usage")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database without seeding")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    with tempfile.TemporaryDirectory(prefix="chatsite-usage-") as tmp:
        servers = Servers(Path(tmp))
        env = {
            **os.environ,
            "CHATSITE_DATA_DIR": str(Path(tmp) / "data"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing is sent upstream here
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        }
        env.pop("SQLITE_PATH", None)
        try:
            if database_url:
                if args.reuse:
                    env["DATABASE_URL"] = (
                        urlsplit(database_url)._replace(path=f"/{args.pg_database}").geturl()
                    )
                else:
                    env["DATABASE_URL"] = bench_database_url(database_url, args.pg_database)
            for command in (
                [PYTHON, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
                [PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            ):
                subprocess.run(command, cwd=BASE_DIR, env=env, check=True)
            started = time.monotonic()
            records = 0 if args.reuse else args.records
            seed = [PYTHON, str(Path(__file__).resolve()), "_seed", str(records), str(args.days)]
            seed += [str(args.users), str(args.models)]
            output = subprocess.run(seed, cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True)
            seeded = json.loads(output.stdout.strip().splitlines()[-1])
            print(f"seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            port = free_port()
            servers.start(
                "chatsite",
                [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
                env,
                port,
            )
            figures = measure(port, seeded, args.repeat)
        finally:
            servers.stop()
            if database_url and not args.keep and not args.reuse:
                drop_database(database_url, args.pg_database)
    engine = "PostgreSQL" if database_url else "SQLite"
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}, {engine}, {args.records:,} usage records over "
        f"{args.days} days, {args.users} members, {args.models} models, median of {args.repeat}\n"
    )
    rows = [
        ("page", "admin statistics page, last 30 days"),
        ("members", "admin list of members with their totals, last 30 days"),
        ("records", "one member's records (drill-down changelist)"),
        ("own", "a member's My usage, last 30 days"),
    ]
    print("| what | server ms (Server-Timing) | of which database ms |\n|---|---|---|")
    for key, label in rows:
        if key in figures:
            print(f"| {label} | {figures[key][0]:.1f} | {figures[key][1]:.1f} |")
    print()
    for name, value, limit in (
        ("the 30-day statistics page (ms)", figures["page"][0], TARGET_PAGE_MS),
        ("the members' list with totals (ms)", figures["members"][0], TARGET_MEMBERS_MS),
    ):
        print(f"- {'met' if value <= limit else 'MISSED'}: {name} {value:.1f} <= {limit}")


if __name__ == "__main__":
    main()

"""``manage.py sentinel list|inspect|history|reconcile|resolve|forget|prune|import-original``:
the operator's commands on the project's Sentinel store."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from sentinel import errors
from sentinel.integrations.django import DjangoSentinel


class Command(BaseCommand):
    """Inspect and settle Sentinel's keys."""

    help = "Inspect and settle Sentinel's keys: list, inspect, history, reconcile, resolve, forget, prune."

    def add_arguments(self, parser):
        parser.add_argument("--namespace", default=None)
        parser.add_argument("--database", default="default")
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="records of the namespace")
        listing.add_argument("--state", choices=["running", "uncertain", "completed", "reconciling"])
        for name in ("inspect", "history"):
            sub.add_parser(name).add_argument("key")
        rec = sub.add_parser("reconcile", help="take an uncertain key; prints the token")
        rec.add_argument("key")
        rec.add_argument("--force", action="store_true")
        rec.add_argument("--reason")
        res = sub.add_parser("resolve", help="it happened (--complete) or not (--reset)")
        res.add_argument("key")
        how = res.add_mutually_exclusive_group(required=True)
        how.add_argument("--complete", action="store_true")
        how.add_argument("--reset", action="store_true")
        res.add_argument("--result", help="the result, as JSON (with --complete)")
        res.add_argument("--token", type=int)
        res.add_argument("--reason")
        fgt = sub.add_parser("forget", help="remove a completed record so the key may run again")
        fgt.add_argument("key")
        fgt.add_argument("--reason")
        prn = sub.add_parser("prune", help="delete completed records whose retention passed")
        prn.add_argument("--older-than", type=float, help="seconds: also those completed that long ago")
        imp = sub.add_parser("import-original", help="carry the original package's records (sentinel_leases) over")
        imp.add_argument("--namespaces", default="", help="comma-separated namespace= values the original used")

    def handle(self, *args, **options):
        s = DjangoSentinel(namespace=options["namespace"], using=options["database"])
        action = options["action"]
        try:
            if action == "list":
                for r in s.list(state=options.get("state")):
                    self.stdout.write(f"{r.key}\t{r.state}\t{r.fencing_token}")
            elif action == "inspect":
                r = s.inspect(options["key"])
                if r is None:
                    raise CommandError(f"no record for key {options['key']}")
                self.stdout.write(json.dumps({"key": r.key, "state": r.state, "fencing_token": r.fencing_token, "reason": r.reason, "result": r.result}))
            elif action == "history":
                for e in s.history(options["key"]):
                    self.stdout.write(f"{e.at:%Y-%m-%dT%H:%M:%S}\t{e.event}\t{e.fencing_token}\t{e.actor or ''}\t{e.reason or ''}")
            elif action == "reconcile":
                self.stdout.write(str(s.reconcile(options["key"], reason=options["reason"], force=options["force"])))
            elif action == "resolve":
                result = None
                if options["result"] is not None:
                    try:
                        result = json.loads(options["result"])
                    except ValueError as e:
                        raise CommandError(f"--result is not JSON: {e}") from e
                s.resolve(options["key"], complete=options["complete"], result=result, token=options["token"], reason=options["reason"])
            elif action == "forget":
                s.forget(options["key"], reason=options["reason"])
            elif action == "prune":
                self.stdout.write(str(s.prune(options["older_than"])))
            elif action == "import-original":
                from django.db import connections

                from sentinel import import_original

                connection = connections[options["database"]]
                connection.ensure_connection()
                namespaces = [n for n in options["namespaces"].split(",") if n]
                report = import_original(connection.connection, namespaces, url=s.url, schema=s.schema)
                self.stdout.write(
                    f"completed {report.completed}, uncertain {report.uncertain}, not started "
                    f"{report.not_started}, already present {len(report.already_present)}, "
                    f"refused {len(report.refused)}; table renamed to {report.renamed_to}"
                )
                for key, why in report.refused:
                    self.stderr.write(f"refused {key}: {why}")
        except errors.SentinelError as e:
            raise CommandError(str(e)) from e

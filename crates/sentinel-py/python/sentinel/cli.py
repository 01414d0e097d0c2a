"""``sen``: the original's command-line tool (``sen inspect KEY``, ``sen history KEY --limit N``),
reading ``DATABASE_URL`` from the environment or a ``.env`` file (when python-dotenv is
installed). The ``sentinel`` binary does much more (run, list, reconcile, resolve, forget)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import errors
from ._engine import original_key_forms
from .result import InspectResult
from .sentinel import Sentinel


def _load_dotenv() -> None:
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        return
    load_dotenv(find_dotenv(usecwd=True))


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise errors.InvalidInput(
            "No DATABASE_URL found. Set it in your environment or .env file.\n"
            "Example: DATABASE_URL=postgresql://user:pass@localhost/mydb"
        )
    return url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sen", description="Sentinel CLI")
    parser.add_argument("--namespace", default="default", help="the keys' namespace (default: default)")
    commands = parser.add_subparsers(dest="command")
    inspect = commands.add_parser("inspect", help="Inspect a lease by key")
    inspect.add_argument("key", type=str)
    history = commands.add_parser("history", help="Show execution history for a key")
    history.add_argument("key", type=str)
    history.add_argument("--limit", type=int, default=50, help="Max events to show (default: 50)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``sen``; returns the exit status (0, 1 for a store error, 2 for bad usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "history" and args.limit < 1:
        parser.error("--limit must be at least 1")
    _load_dotenv()
    try:
        url = _database_url()
        # The original's keys were "namespace:key": tried as given first, then so.
        forms = [(Sentinel(url=url, namespace=ns), k) for ns, k in original_key_forms(args.namespace, args.key)]
        if args.command == "inspect":
            record = next((r for s, k in forms if (r := s.inspect(k)) is not None), None)
            if record is None:
                print(f"No lease found for key: {args.key}")
                return 0
            r = InspectResult.from_record(record)
            print(f"status:           {r.status}")
            print(f"lease_alive:      {r.lease_alive}")
            print(f"owner_id:         {r.owner_id}")
            print(f"fencing_token:    {r.fencing_token}")
            print(f"lease_expires_at: {r.lease_expires_at}")
            print(f"lease_updated_at: {r.lease_updated_at}")
            print(f"hard_expires_at:  {r.hard_expires_at}")
            print(f"execution_result: {r.execution_result}")
        else:
            events = next((e for s, k in forms if (e := s.history(k, limit=args.limit))), [])
            if not events:
                print(f"No history found for key: {args.key}")
                return 0
            print(f"History for key: {args.key}  ({len(events)} events)\n")
            for e in events:
                at = e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "-"
                extra = f"  by={e.actor}" if e.actor else ""
                extra += f"  reason={e.reason}" if e.reason else ""
                print(f"  {at}  {e.event:<13} token={e.fencing_token}{extra}")
    except errors.SentinelError as e:
        print(f"sen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The drill history in object storage (one record per drill under the snapshot prefix) and the report files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from drtool.adapters import s3 as s3a
from drtool.config import Settings
from drtool.core import drill_report as dr
from drtool.core.drill_record import is_record
from drtool.errors import NotFoundError
from drtool.ops.snapshot.destination import Destination, destination_store, open_destination

log = logging.getLogger("drtool.drill")


def history_prefix(dest: Destination) -> str:
    return dest.key("drills") + "/"


def load_history(dest: Destination, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` drill records, newest first. One object per drill (ids sort by time), so concurrent
    drills never overwrite each other's entry."""
    prefix = history_prefix(dest)
    try:
        keys = sorted(o["Key"] for o in s3a.iter_keys(dest.client, dest.bucket, prefix)
                      if o["Key"].endswith(".json"))
    except Exception as exc:
        raise dest.s3_error(exc, f"listing {dest.url}/drills/") from None
    out: list[dict[str, Any]] = []
    for key in reversed(keys[-limit:] if limit > 0 else []):
        try:
            data = json.loads(s3a.get_bytes(dest.client, dest.bucket, key))
        except ValueError:
            log.warning("skipping unreadable drill record s3://%s/%s", dest.bucket, key)
            continue
        except Exception as exc:
            raise dest.s3_error(exc, f"s3://{dest.bucket}/{key}") from None
        if is_record(data):
            out.append(data)
        else:
            log.warning("skipping s3://%s/%s: not a drill record drtool can read", dest.bucket, key)
    return out


def append_history(dest: Destination, record: dict[str, Any]) -> str:
    key = history_prefix(dest) + f"{record['drill_id']}.json"
    destination_store(dest).put(key, dr.render_json(record).encode(), content_type="application/json")
    return key


def write_reports(record: dict[str, Any], history: list[dict[str, Any]], report_dir: Path) -> dict[str, str]:
    """drill-<id>.json, .md and .html in report_dir; each written to a temporary name and renamed into place."""
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{record['drill_id']}"
    out: dict[str, str] = {}
    for ext, text in (("json", dr.render_json(record)), ("md", dr.render_markdown(record, history)),
                      ("html", dr.render_html(record, history))):
        path = report_dir / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        out[ext] = str(path)
    return out


def drill_history(settings: Settings, limit: int) -> list[dict[str, Any]]:
    dest = open_destination(settings)
    try:
        return load_history(dest, limit)
    except NotFoundError:
        return []

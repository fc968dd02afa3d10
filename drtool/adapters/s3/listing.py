"""Listing a bucket: keys, versions and delete markers, streamed page by page.

The version listing of a snapshot and `replication verify`'s listings are fetched as presigned GETs and parsed with
ElementTree (botocore's parser cost more CPU than the rest of the work), the next pages in a prefetch thread.
Errors are raised as the botocore exceptions `translate_error` knows: the caller knows which site it lists.
"""

from __future__ import annotations

import heapq
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import botocore.exceptions
import urllib3
from botocore.httpsession import get_cert_path

from drtool.core.manifest import ObjectVersion

# --- keys -------------------------------------------------------------------------------------------------------------

def iter_keys(client: Any, bucket: str, prefix: str, *, delimiter: str | None = None) -> Any:
    """Keys (or, with a delimiter, common prefixes) under `prefix`, streamed page by page."""
    paginator = client.get_paginator("list_objects_v2")
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        args["Delimiter"] = delimiter
    for page in paginator.paginate(**args):
        if delimiter:
            for cp in page.get("CommonPrefixes", ()):
                yield cp["Prefix"]
        else:
            yield from page.get("Contents", ())


# --- versions and delete markers, parsed from the XML answer ----------------------------------------------------------

def iter_object_versions(client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000) -> Any:
    """Every object version and delete marker under `prefix`, page by page, grouped by key as S3 lists them.

    Pages are fetched as presigned GETs and parsed with ElementTree straight into ObjectVersion records, in a
    prefetch thread: botocore's shape-driven parser (dicts, dateutil timestamps) cost more CPU than everything a
    snapshot does with the listing, and held the GIL against the manifest compressor and the dump upload. The
    XML lists versions and delete markers interleaved in key order, so document order is listing order.
    """
    yield from _chain_pages(prefetch(version_pages(client, bucket, prefix, page_size)))


def _chain_pages(pages: Any) -> Any:
    for page in pages:
        yield from page


def version_pages(client: Any, bucket: str, prefix: str, page_size: int, *, delimiter: str | None = None,
                   before_request: Any = None) -> Iterator[list[Any]]:
    """ListObjectVersions pages as lists of ObjectVersion; errors raised as the botocore exceptions
    `translate_error` knows. TLS verification, timeouts and retries follow the client's own configuration.
    With `delimiter` a page also holds the common prefixes (as str); `before_request` is called before each
    page is requested (a rate cap: the snapshot's paced listing)."""
    verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", True)
    config = client.meta.config
    attempts = int((config.retries or {}).get("max_attempts") or (config.retries or {}).get("total_max_attempts")
                   or 5)
    timeout = urllib3.Timeout(connect=config.connect_timeout or 10, read=config.read_timeout or 60)
    fromiso = datetime.fromisoformat
    for items, decode in _xml_listing_pages(client, bucket, prefix, versions=True, verify=verify, attempts=attempts,
                                            timeout=timeout, page_size=page_size, delimiter=delimiter,
                                            before_request=before_request):
        page: list[Any] = []
        for f, is_marker in items:
            if is_marker is None:  # a common prefix (only with a delimiter)
                page.append(decode(f["Prefix"]))
                continue
            etag = f.get("ETag")
            size = f.get("Size")
            page.append(ObjectVersion(
                key=decode(f["Key"]), version_id=f.get("VersionId") or "null",
                last_modified=fromiso(f["LastModified"]), is_latest=f.get("IsLatest") == "true",
                is_delete_marker=is_marker, etag=None if is_marker else ((etag.strip('"') or None) if etag else None),
                size=None if is_marker else (int(size) if size else (0 if size is not None else None))))
        yield page


def _xml_listing_pages(client: Any, bucket: str, prefix: str, *, versions: bool, verify: bool | str, attempts: int,
                       timeout: Any, page_size: int, delimiter: str | None = None, before_request: Any = None
                       ) -> Iterator[tuple[list[tuple[dict[str, str], bool | None]], Any]]:
    """Raw listing pages, fetched as presigned GETs and parsed with ElementTree: ([(fields, is_delete_marker)],
    key decoder) per page, pagination followed. With `delimiter`, common prefixes come as ({"Prefix": p}, None).

    Why: botocore's response parser (shape-driven dicts, dateutil timestamps) costs several times the CPU of the
    listing itself. The client still does what it is good at: endpoint, addressing style, credentials and signing.
    Errors are raised as the botocore exceptions `translate_error` knows.
    """
    if verify is False:
        http = urllib3.PoolManager(cert_reqs="CERT_NONE", maxsize=2)
    elif isinstance(verify, str):
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=verify, maxsize=2)
    else:
        http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=get_cert_path(True), maxsize=2)
    retries = urllib3.Retry(total=max(0, attempts - 1), backoff_factor=0.5, status_forcelist=(500, 502, 503, 504),
                            allowed_methods=frozenset({"GET"}), raise_on_status=False)
    operation = "list_object_versions" if versions else "list_objects_v2"
    error_operation = "ListObjectVersions" if versions else "ListObjectsV2"
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size, "EncodingType": "url",
                              **({"Delimiter": delimiter} if delimiter else {})}
    while True:
        if before_request is not None:
            before_request()
        url = client.generate_presigned_url(operation, Params=params, ExpiresIn=900)
        try:
            resp = http.request("GET", url, retries=retries, timeout=timeout, preload_content=True)
        except urllib3.exceptions.SSLError as exc:
            raise botocore.exceptions.SSLError(endpoint_url=url.split("?", 1)[0], error=exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=url.split("?", 1)[0], error=exc) from None
        try:
            root = ET.fromstring(resp.data)
        except ET.ParseError:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": str(resp.status), "Message": "the listing answer is not XML"},
                 "ResponseMetadata": {"HTTPStatusCode": resp.status}}, error_operation) from None
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if resp.status != 200:
            code = root.findtext("Code") or root.findtext(ns + "Code") or str(resp.status)
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": code, "Message": root.findtext("Message") or root.findtext(ns + "Message") or ""},
                 "ResponseMetadata": {"HTTPStatusCode": resp.status}}, error_operation)
        item_tags = {ns + "Version": False, ns + "DeleteMarker": True} if versions else {ns + "Contents": False}
        cut = len(ns)
        items: list[tuple[dict[str, str], bool | None]] = []
        top: dict[str, str] = {}
        for child in root:  # versions and delete markers come interleaved in key order, as listed
            marker = item_tags.get(child.tag)
            if child.tag == ns + "CommonPrefixes":
                items.append(({"Prefix": child.findtext(ns + "Prefix") or ""}, None))
            elif marker is None:
                top[child.tag[cut:]] = child.text or ""
            else:
                items.append(({sub.tag[cut:]: sub.text or "" for sub in child}, marker))
        # Like botocore: keys are URL-encoded only when the server says so (SeaweedFS ignores EncodingType).
        decode = unquote_plus if top.get("EncodingType") == "url" else str
        yield items, decode
        if top.get("IsTruncated") != "true":
            return
        if versions:
            params["KeyMarker"] = decode(top.get("NextKeyMarker", ""))
            params["VersionIdMarker"] = top.get("NextVersionIdMarker", "")
            if not params["VersionIdMarker"]:
                params.pop("VersionIdMarker")
        else:
            params["ContinuationToken"] = top.get("NextContinuationToken", "")


# --- one dict shape for both listing kinds, for merge-joining two sites (replication verify) --------------------------

def iter_listing_pages(client: Any, bucket: str, prefix: str = "", *, versions: bool, page_size: int = 1000
                       ) -> Iterator[list[dict[str, Any]]]:
    """A bucket's listing page by page, in key order, with one dict shape for both listing kinds.

    With `versions`, ListObjectVersions returns versions and delete markers in two separate arrays per page; they
    are merged by key (each array is key-ordered) so the stream stays key-ordered for a merge-join. Items carry
    Key, VersionId, ETag, Size, LastModified, IsDeleteMarker, IsLatest. Errors are raw botocore exceptions: the
    caller knows which site it is listing and translates them.
    """
    if versions:
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            live = ({"Key": v["Key"], "VersionId": v.get("VersionId"), "ETag": v.get("ETag"),
                     "Size": v.get("Size", 0), "LastModified": v["LastModified"], "IsDeleteMarker": False,
                     "IsLatest": v.get("IsLatest", True)} for v in page.get("Versions", []))
            markers = ({"Key": m["Key"], "VersionId": m.get("VersionId"), "ETag": None, "Size": 0,
                        "LastModified": m["LastModified"], "IsDeleteMarker": True,
                        "IsLatest": m.get("IsLatest", True)} for m in page.get("DeleteMarkers", []))
            yield list(heapq.merge(live, markers, key=lambda item: item["Key"]))
    else:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            yield [{"Key": o["Key"], "VersionId": None, "ETag": o.get("ETag"), "Size": o.get("Size", 0),
                    "LastModified": o["LastModified"], "IsDeleteMarker": False, "IsLatest": True}
                   for o in page.get("Contents", [])]


def iter_listing_pages_fast(client: Any, bucket: str, prefix: str = "", *, versions: bool, verify: bool | str = True,
                            timeout: float = 60, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """The pages of `iter_listing_pages`, fetched and parsed like the snapshot's version listing.

    `replication verify` lists two sites at once under one GIL, so the parser's CPU is what limits it.
    """
    for items, decode in _xml_listing_pages(client, bucket, prefix, versions=versions, verify=verify, attempts=5,
                                            timeout=urllib3.Timeout(connect=10, read=timeout), page_size=page_size):
        yield [{
            "Key": decode(fields["Key"]),
            "VersionId": fields.get("VersionId") if versions else None,
            "ETag": None if marker else fields.get("ETag"),
            "Size": 0 if marker else int(fields.get("Size") or 0),
            "LastModified": datetime.fromisoformat(fields["LastModified"]),
            "IsDeleteMarker": marker,
            "IsLatest": fields.get("IsLatest", "true") == "true",
        } for fields, marker in items]


# --- the next pages in a thread ---------------------------------------------------------------------------------------

def prefetch(iterable: Any, depth: int = 2) -> Any:
    """Fetch the next pages in a thread while the caller works on the current one.

    The server's time to answer a listing page overlaps with the caller's processing; memory is bounded by
    `depth` pages. An error in the fetching thread is raised in the caller.
    """
    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", done))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="s3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()

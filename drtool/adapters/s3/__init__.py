"""The S3 adapter: S3-compatible object storage through boto3 (MinIO, SeaweedFS, AWS S3).

Retries are botocore's "standard" mode (throttling, 5xx, timeouts, with a jittered backoff); errors that retrying
cannot fix (credentials, missing bucket) are translated into drtool's error family with a hint.

This package is one adapter (one outside system), so this module is its public face: callers write
`from drtool.adapters import s3 as s3a` and `s3a.BucketStore(...)`. It re-exports exactly the names used outside
the package; each lives in one module:

- client.py   making clients (timeouts, TLS, credentials, retry backoff), `config check`'s probe, request hooks
- errors.py   how S3 failures become drtool errors (`translate_error`), ObjectTooLarge, DeleteRefused
- iam.py      the IAM action each S3 call needs, named in a refusal
- store.py    BucketStore: the ObjectStore port (drtool/core/ports.py) on S3
- reads.py    small objects read whole, capped against planted ones, asked for again when cut
- resume.py   streaming bodies: errors translated, a cut transfer read on where it stopped (ResumingBody)
- listing.py  keys, versions and delete markers page by page (XML listings, the prefetch thread)
- buckets.py  a bucket's settings: versioning, lifecycle, replication, Object Lock, policy, encryption
- writes.py   conditional and Object-Lock writes, multipart uploads, atomic file replacement, prefix deletes

A monkeypatch must target the defining module (`drtool.adapters.s3.listing.prefetch`): patching a name here does
not change what the package's own modules call.
"""

from drtool.adapters.s3.buckets import bucket_encryption_rules as bucket_encryption_rules
from drtool.adapters.s3.buckets import bucket_policy as bucket_policy
from drtool.adapters.s3.buckets import bucket_replication_setup as bucket_replication_setup
from drtool.adapters.s3.buckets import bucket_versioning as bucket_versioning
from drtool.adapters.s3.buckets import list_bucket_names as list_bucket_names
from drtool.adapters.s3.buckets import noncurrent_expiry_days as noncurrent_expiry_days
from drtool.adapters.s3.buckets import object_lock_configuration as object_lock_configuration
from drtool.adapters.s3.buckets import server_date as server_date
from drtool.adapters.s3.client import PROXY_HEADER as PROXY_HEADER
from drtool.adapters.s3.client import check as check
from drtool.adapters.s3.client import make_anonymous_client as make_anonymous_client
from drtool.adapters.s3.client import make_client as make_client
from drtool.adapters.s3.client import no_proxy as no_proxy
from drtool.adapters.s3.errors import DeleteRefused as DeleteRefused
from drtool.adapters.s3.errors import ObjectTooLarge as ObjectTooLarge
from drtool.adapters.s3.errors import answers_translated as answers_translated
from drtool.adapters.s3.errors import http_status as http_status
from drtool.adapters.s3.errors import is_sdk_error as is_sdk_error
from drtool.adapters.s3.errors import is_server_answer as is_server_answer
from drtool.adapters.s3.errors import tls_reason as tls_reason
from drtool.adapters.s3.errors import translate_answer as translate_answer
from drtool.adapters.s3.errors import translate_error as translate_error
from drtool.adapters.s3.listing import iter_keys as iter_keys
from drtool.adapters.s3.listing import iter_listing_pages as iter_listing_pages
from drtool.adapters.s3.listing import iter_listing_pages_fast as iter_listing_pages_fast
from drtool.adapters.s3.listing import prefetch as prefetch
from drtool.adapters.s3.listing import version_pages as version_pages
from drtool.adapters.s3.reads import SMALL_OBJECT_MAX_BYTES as SMALL_OBJECT_MAX_BYTES
from drtool.adapters.s3.reads import get_bytes as get_bytes
from drtool.adapters.s3.reads import head_or_none as head_or_none
from drtool.adapters.s3.reads import read_capped as read_capped
from drtool.adapters.s3.store import BucketStore as BucketStore
from drtool.adapters.s3.writes import MultipartWriter as MultipartWriter
from drtool.adapters.s3.writes import delete_prefix as delete_prefix
from drtool.adapters.s3.writes import locked_call as locked_call
from drtool.adapters.s3.writes import put_bytes as put_bytes
from drtool.adapters.s3.writes import put_if_absent as put_if_absent

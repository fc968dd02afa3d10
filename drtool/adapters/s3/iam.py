"""The IAM permission each S3 call needs, so a refusal names what to grant (docs/iam.md).

`translate_error` (errors.py) looks the refused call up here; a new kind of S3 request adds its action here.
"""

from __future__ import annotations

IAM_ACTIONS = {
    "HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions (MinIO: s3:ListBucket)", "ListBuckets": "s3:ListAllMyBuckets",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject on the target and s3:GetObject on the source",
    "CopyObject": "s3:PutObject on the target and s3:GetObject on the source",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject",
    "GetBucketVersioning": "s3:GetBucketVersioning", "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "GetBucketReplication": "s3:GetReplicationConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "GetObjectRetention": "s3:GetObjectRetention", "PutObjectRetention": "s3:PutObjectRetention",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration", "GetBucketPolicy": "s3:GetBucketPolicy",
}
# A write that carries Object Lock retention is also authorised as s3:PutObjectRetention (MinIO and AWS).
LOCKED_WRITE_ACTIONS = "s3:PutObject and s3:PutObjectRetention"

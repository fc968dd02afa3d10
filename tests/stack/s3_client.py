"""The boto3 client every test uses for a stack S3 server: path-style (MinIO and SeaweedFS need it), few retries
so a broken server fails a test quickly instead of hiding behind backoff."""

from __future__ import annotations

from typing import Any

REGION = "us-east-1"


def path_style_client(endpoint: str, access_key: str, secret_key: str, **kwargs: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        **kwargs,
    )

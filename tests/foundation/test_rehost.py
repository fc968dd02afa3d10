"""--dify-host NAME=HOST replaces the host of a Dify URL and nothing else: not a user name or password equal to the
host name, not the port, path, query or fragment."""

from __future__ import annotations

from pathlib import Path

import pytest

from drtool.config import load_settings
from drtool.core.dify_env import map_dify_env


def _milvus_uri(uri: str, hosts: dict[str, str]) -> str:
    return map_dify_env({"VECTOR_STORE": "milvus", "MILVUS_URI": uri}, hosts).values["milvus.uri"][0]


@pytest.mark.parametrize("uri, hosts, expected", [
    # the bug: the user name equal to the compose service name was replaced, the host kept
    ("http://milvus:pw@milvus:19530", {"milvus": "10.0.0.5"}, "http://milvus:pw@10.0.0.5:19530"),
    ("http://milvus@milvus:19530", {"milvus": "10.0.0.5"}, "http://milvus@10.0.0.5:19530"),
    ("http://root:milvus@milvus:19530", {"milvus": "10.0.0.5"}, "http://root:milvus@10.0.0.5:19530"),
    ("http://milvus:milvus@milvus", {"milvus": "m.internal"}, "http://milvus:milvus@m.internal"),
    # port, path, query and fragment untouched, even when they spell the name
    ("http://milvus:19530/milvus?db=milvus#milvus", {"milvus": "10.0.0.5"},
     "http://10.0.0.5:19530/milvus?db=milvus#milvus"),
    ("https://milvus", {"milvus": "m.example"}, "https://m.example"),
    # a host name is case-insensitive, as in DNS
    ("http://Milvus:19530", {"milvus": "10.0.0.5"}, "http://10.0.0.5:19530"),
    ("http://milvus:19530", {"MILVUS": "10.0.0.5"}, "http://10.0.0.5:19530"),
    # IPv6: a replacement gets its brackets; an IPv6 literal can be the name that is replaced
    ("http://u:p@milvus:19530", {"milvus": "fd00::5"}, "http://u:p@[fd00::5]:19530"),
    ("http://milvus:19530", {"milvus": "[fd00::5]"}, "http://[fd00::5]:19530"),
    ("http://u:p@[fd00::5]:19530", {"fd00::5": "milvus.internal"}, "http://u:p@milvus.internal:19530"),
    # a host that is not in the map, or only a prefix of it, is left alone
    ("http://milvus-standalone:19530", {"milvus": "10.0.0.5"}, "http://milvus-standalone:19530"),
    ("http://milvus:pw@other:19530", {"milvus": "10.0.0.5"}, "http://milvus:pw@other:19530"),
])
def test_only_the_host_part_of_a_url_is_replaced(uri: str, hosts: dict[str, str], expected: str) -> None:
    assert _milvus_uri(uri, hosts) == expected


@pytest.mark.parametrize("var, value, expected", [
    ("DB_HOST", "db_postgres", "10.0.0.7"),  # a bare host name
    ("WEAVIATE_GRPC_ENDPOINT", "weaviate:50051", "10.0.0.7:50051"),  # host:port without a scheme
    ("DB_HOST", "DB_Postgres", "10.0.0.7"),  # case-insensitive, like DNS
])
def test_bare_hosts_and_host_port_values(var: str, value: str, expected: str) -> None:
    hosts = {"db_postgres": "10.0.0.7", "weaviate": "10.0.0.7"}
    env = {"VECTOR_STORE": "weaviate", var: value}
    found = {v: val for val, v in map_dify_env(env, hosts).values.values()}
    assert found[var] == expected


def test_dify_host_flag_through_settings_keeps_credentials_of_the_same_name(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("VECTOR_STORE=milvus\nMILVUS_URI=http://milvus:19530\nMILVUS_USER=milvus\n"
                   "MILVUS_PASSWORD=milvus-pass\nS3_ENDPOINT=http://minio:minio-pw@minio:9000\nSTORAGE_TYPE=s3\n"
                   "REDIS_HOST=redis\nREDIS_PASSWORD=redis-pw\n")
    s = load_settings(flags={"dify.hosts": "milvus=10.0.0.5,minio=[fd00::9],redis=10.0.0.6"}, environ={},
                      dify_env_path=env)
    assert s.milvus.uri == "http://10.0.0.5:19530"
    assert s.milvus.user == "milvus"
    assert s.s3.endpoint == "http://minio:minio-pw@[fd00::9]:9000"
    assert s.redis.url == "redis://:redis-pw@10.0.0.6:6379/0"

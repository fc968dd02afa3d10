"""Property tests: no .env content makes drtool crash; every rejection names the file and line."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drtool.core.dify_env import map_dify_env
from drtool.core.dotenv import parse_dotenv
from drtool.errors import ConfigError

lines = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=12)


@settings(max_examples=300, deadline=None)
@given(lines)
def test_any_text_parses_or_is_refused_with_a_line_number(raw_lines: list[str]) -> None:
    text = "\n".join(raw_lines)
    try:
        values = parse_dotenv(text, "dify.env")
    except ConfigError as exc:
        assert re.match(r"dify\.env:\d+: ", exc.message)
        assert exc.exit_code == 2
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
    map_dify_env(values)  # whatever was parsed maps without raising


keys = st.sampled_from(["STORAGE_TYPE", "OPENDAL_SCHEME", "OPENDAL_S3_ROOT", "S3_ENDPOINT", "DB_HOST", "DB_PORT",
                        "VECTOR_STORE", "REDIS_HOST", "REDIS_PASSWORD", "WEAVIATE_ENDPOINT", "MILVUS_URI"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, st.text(max_size=30)), st.dictionaries(st.text(min_size=1, max_size=10),
                                                                    st.text(min_size=1, max_size=10), max_size=3))
def test_mapping_never_crashes_whatever_the_values(env: dict[str, str], hosts: dict[str, str]) -> None:
    mapping = map_dify_env(env, hosts)
    for setting, (value, var) in mapping.values.items():
        assert "." in setting and isinstance(value, str) and var

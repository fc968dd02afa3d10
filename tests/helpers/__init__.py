"""Helpers shared by every test folder: one definition each of what several folders need (the CLI runner, new
buckets, new databases, the result event, embeddings from the test server). See tests/helpers/README.md."""

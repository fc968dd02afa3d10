"""Real-service test stack: pytest fixtures that run Postgres, MinIO, SeaweedFS, Weaviate, Redis and more."""

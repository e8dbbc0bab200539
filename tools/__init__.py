"""Tools a user, a test or a benchmark runs beside the pipelines: a local DummyJSON-compatible
server, a throwaway PostgreSQL, and a comparison of the served catalog with the stored one."""

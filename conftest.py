"""Fixtures shared by the whole test suite, registered once so a session-scoped server or cluster starts once
(a module that imported a fixture by name would get its own copy, and its own server)."""
pytest_plugins = ["tests.storage_servers", "tests.ray_clusters"]

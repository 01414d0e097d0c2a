//! The conformance suite against PostgreSQL (a real server; each test in its own schema).

mod support;

sentinel_testkit::conformance_tests!(support::pg_store);

//! Helpers shared by the integration tests: `mod support;` at the top of a test file.
//!
//! [`fake_server`] is a loopback fake of the Braintrust API (login, project, version, logs3,
//! overflow) with scripted faults and a record of every request.

// Each test binary uses a different part of these helpers.
#![allow(dead_code, unused_imports)]

pub(crate) mod fake_server;

pub(crate) use fake_server::{DEFAULT_API_KEY, FakeServer, ORG_NAME, Recorded, Reply};

//! Helpers shared by the integration tests: `mod support;` at the top of a test file.
//!
//! [`fake_server`] is a loopback fake of the Braintrust API (login, project, version, logs3,
//! overflow) with scripted faults and a record of every request; [`helpers`] points the layer
//! at it and checks what arrived.

// Each test binary uses a different part of these helpers.
#![allow(dead_code, unused_imports)]

pub(crate) mod fake_api;
pub(crate) mod fake_datasets;
pub(crate) mod fake_server;
pub(crate) mod helpers;

pub(crate) use fake_server::{DEFAULT_API_KEY, FakeServer, ORG_NAME, Recorded, Reply};
pub(crate) use helpers::{
    ChildRun, HANG, TempDir, assert_accounted, assert_each_once, child_report, emit, files_in,
    index, logs3_statuses, queue_behind_a_held_slot, run_child, server_builder, shutdown,
    shutdown_in_time, temp_dir, wait_for_an_upload,
};

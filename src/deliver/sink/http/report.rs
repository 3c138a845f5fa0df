//! Rows given up on: one diagnostic per cause, a single message about a refused key or
//! missing permission that says what to check, and the API key scrubbed from every message
//! and payload file.

use std::sync::atomic::Ordering;

use super::upload::Batch;
use super::{Failure, HttpSink, Row, SendOutcome};
use crate::diag;

impl HttpSink {
    /// Rows that never reached an upload: report, dump, hand back.
    pub(super) fn give_up(&self, rows: Vec<Row>, failure: &Failure, outcome: &mut SendOutcome) {
        let texts: Vec<Vec<u8>> = rows
            .iter()
            .filter_map(|r| serde_json::to_vec(r).ok())
            .collect();
        let dumped = if texts.is_empty() {
            String::new()
        } else {
            self.dump_failed(&Batch::of(texts.iter().map(Vec::as_slice)).body)
        };
        if matches!(failure, Failure::Auth { .. }) {
            outcome.auth_error = true;
            self.report_auth(failure);
        } else {
            diag::warn(
                "http-setup",
                self.scrub(format!("giving up on rows that could not be uploaded (they are spooled if a spool directory is set, else counted as failed): {failure}{dumped}")),
            );
        }
        outcome.failed.extend(rows);
    }

    /// The one message about a refused key or missing permission.
    pub(super) fn report_auth(&self, failure: &Failure) {
        if self.inner.auth_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.auth_messages.fetch_add(1, Ordering::SeqCst);
        diag::warn("http-auth", self.scrub(self.auth_message(failure)));
    }

    fn auth_message(&self, failure: &Failure) -> String {
        let config = &self.inner.config;
        if let Failure::Auth { what, .. } = failure {
            if what.contains("/api/apikey/login") {
                return format!(
                    "Braintrust rejected the API key: {failure}. Check BRAINTRUST_API_KEY, and \
                     BRAINTRUST_APP_URL (now {}) if you use a self-hosted deployment. \
                     Nothing will be uploaded until this is fixed.",
                    config.app_url
                );
            }
        }
        let org = self
            .resolved()
            .map(|(org, _)| org)
            .or_else(|| config.org_name.clone())
            .map_or_else(
                || "the key's first organization".to_owned(),
                |o| format!("'{o}'"),
            );
        format!(
            "Braintrust refused the API key's access: {failure}. Check that BRAINTRUST_API_KEY \
             may write to project '{}' in organization {org} (BRAINTRUST_ORG_NAME), and \
             BRAINTRUST_API_URL if you set it.",
            config.project_id.as_deref().unwrap_or(&config.project_name)
        )
    }

    /// Removes the API key from a message, should a server ever echo it.
    pub(super) fn scrub(&self, message: String) -> String {
        let key = self.inner.config.api_key.trim();
        if key.is_empty() || !message.contains(key) {
            message
        } else {
            message.replace(key, "<redacted>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{PROJECT, config, rows, sink};
    use super::*;
    use crate::deliver::sink::fake_server::{FakeServer, Reply};

    #[tokio::test]
    async fn auth_errors_are_final_and_reported_once() {
        let server = FakeServer::start();
        server.push_logs3(Reply::status(401));
        server.push_logs3(Reply::status(403));
        let sink = sink(config(&server));
        for _ in 0..2 {
            let outcome = sink.send(rows(2, 10)).await;
            assert!(outcome.auth_error);
            assert_eq!(outcome.failed.len(), 2);
            // Failed rows come back routed.
            assert!(outcome.failed.iter().all(|r| r["log_id"] == "g"));
        }
        assert_eq!(server.logs3_requests().len(), 2);
        assert_eq!(sink.inner.auth_messages.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_login_that_cannot_succeed_is_not_repeated_send_after_send() {
        let server = FakeServer::start();
        // An unknown organization: the login answers, but names no such org.
        let mut unknown_org = config(&server);
        unknown_org.org_name = Some("no-such-org".into());
        let uploader = sink(unknown_org);
        for _ in 0..3 {
            let outcome = uploader.send(rows(2, 10)).await;
            assert_eq!((outcome.sent, outcome.failed.len()), (0, 2));
        }
        assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
        // A login the server refused with another status: the same.
        let server = FakeServer::start();
        server.push_reply("/api/apikey/login", Reply::status(404));
        let uploader = sink(config(&server));
        for _ in 0..3 {
            let outcome = uploader.send(rows(2, 10)).await;
            assert_eq!(outcome.failed.len(), 2);
        }
        assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
    }

    #[tokio::test]
    async fn wrong_key_fails_login_without_retry_and_says_what_to_check() {
        let server = FakeServer::start();
        let mut config = config(&server);
        config.api_key = "sk-wrong-key-4242424242".into();
        let sink = sink(config);
        for _ in 0..2 {
            let outcome = sink.send(rows(3, 10)).await;
            assert!(outcome.auth_error);
            assert_eq!(outcome.sent, 0);
            assert_eq!(outcome.failed.len(), 3);
        }
        // A refused key is believed for a while: the second send does not log in again.
        assert_eq!(server.requests_to("/api/apikey/login").len(), 1);
        assert!(server.logs3_requests().is_empty());
        assert_eq!(sink.resolved(), None);
        assert_eq!(sink.inner.auth_messages.load(Ordering::SeqCst), 1);

        let login = Failure::Auth {
            status: 401,
            what: format!("POST {}/api/apikey/login", server.url()),
        };
        let message = sink.auth_message(&login);
        assert!(message.contains("BRAINTRUST_API_KEY") && message.contains("BRAINTRUST_APP_URL"));
        assert!(!message.contains("sk-wrong-key"));
        let data = Failure::Auth {
            status: 403,
            what: format!("POST {}/logs3", server.url()),
        };
        let message = sink.auth_message(&data);
        assert!(message.contains("BRAINTRUST_ORG_NAME") && message.contains(PROJECT));
        assert!(!message.contains("sk-wrong-key"));
    }
}

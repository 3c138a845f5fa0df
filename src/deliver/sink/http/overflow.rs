//! The overflow path for a body over the server's payload limit (protocol §7): `POST
//! /logs3/overflow` for a signed URL, upload the body there (`PUT` with headers or multipart
//! `POST` with fields), then `POST /logs3` with a reference row. Once the upload succeeded,
//! later attempts repeat only the reference.

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::retry::Attempt;
use super::upload::{Batch, Upload};
use super::{Failure, HttpSink, join_url};
use crate::rows::wire::Object;

/// Keys copied into `object_ids` of an overflow request, in the Python SDK's order.
const OBJECT_ID_KEYS: [&str; 6] = [
    "experiment_id",
    "dataset_id",
    "prompt_session_id",
    "project_id",
    "log_id",
    "function_data",
];

impl HttpSink {
    /// §7: `POST /logs3/overflow`, upload the body to the signed URL, then `POST /logs3` with
    /// a reference row. Attempts redo only the steps that have not succeeded yet.
    pub(super) async fn post_overflow(
        &self,
        upload: &Upload,
        batch: &Batch,
    ) -> Result<(), Failure> {
        let body = &batch.body;
        let overflow_url = join_url(&upload.api_url, "logs3/overflow");
        let logs3_url = join_url(&upload.api_url, "logs3");
        let request = overflow_request(batch).to_string();
        let attempts = self.inner.config.num_retries.saturating_add(1);
        let mut key: Option<String> = None;
        let mut last = String::new();
        let mut made = attempts;
        for attempt in 0..attempts {
            let step = async {
                if key.is_none() {
                    let answer = self
                        .try_once(
                            self.authed(self.inner.client.post(&overflow_url))
                                .header(CONTENT_TYPE, "application/json")
                                .body(request.clone()),
                            &format!("POST {overflow_url}"),
                            true,
                        )
                        .await?;
                    let target = SignedUpload::parse(&answer).map_err(|detail| Attempt::Retry {
                        error: format!("POST {overflow_url} answered with {detail}"),
                        retry_after: None,
                    })?;
                    self.upload_signed(&target, body).await?;
                    key = Some(target.key);
                }
                let reference = reference_body(key.as_deref().unwrap_or_default(), body.len());
                self.try_once(
                    self.authed(self.inner.client.post(&logs3_url))
                        .header(CONTENT_TYPE, "application/json")
                        .body(reference),
                    &format!("POST {logs3_url}"),
                    false,
                )
                .await
            };
            match step.await {
                Ok(_) => return Ok(()),
                Err(Attempt::Final(Failure::TooLarge { what })) => {
                    return Err(Failure::Rejected {
                        status: 413,
                        what,
                        detail: "the overflow reference row was refused".into(),
                    });
                }
                Err(Attempt::Final(failure)) => return Err(failure),
                Err(Attempt::Retry { error, retry_after }) => {
                    last = error;
                    made = attempt + 1;
                    if attempt + 1 < attempts && !self.pause(self.delay(attempt, retry_after)).await
                    {
                        break;
                    }
                }
            }
        }
        Err(Failure::Exhausted {
            what: format!("overflow upload of {} bytes", body.len()),
            attempts: made,
            last,
        })
    }

    /// Uploads the payload to a signed URL: `PUT` with the given headers or multipart `POST`
    /// with the given fields. Any failure is worth a new attempt (a fresh signed URL).
    async fn upload_signed(&self, target: &SignedUpload, body: &[u8]) -> Result<(), Attempt> {
        let what = format!("{} {}", target.method_name(), strip_query(&target.url));
        let request = match &target.method {
            UploadMethod::Put(headers) => {
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        map.insert(n, v);
                    }
                }
                if target.url.contains("blob.core.windows.net") {
                    map.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
                }
                self.inner
                    .client
                    .put(&target.url)
                    .headers(map)
                    .body(body.to_owned())
            }
            UploadMethod::Post(fields) => {
                let boundary = format!("tracing-braintrust-{:016x}", fastrand::u64(..));
                self.inner
                    .client
                    .post(&target.url)
                    .header(
                        CONTENT_TYPE,
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(multipart_body(&boundary, fields, body))
            }
        };
        match self.try_once(request, &what, false).await {
            Ok(_) => Ok(()),
            Err(Attempt::Final(failure)) => Err(Attempt::Retry {
                error: failure.to_string(),
                retry_after: None,
            }),
            Err(retry) => Err(retry),
        }
    }
}

/// Where and how to upload an overflow payload.
struct SignedUpload {
    url: String,
    key: String,
    method: UploadMethod,
}

enum UploadMethod {
    Put(Vec<(String, String)>),
    Post(Vec<(String, String)>),
}

impl SignedUpload {
    /// Reads the `/logs3/overflow` answer; `Err` names what is wrong with it.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("a body that is not JSON ({e})"))?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let pairs = |key: &str| -> Option<Vec<(String, String)>> {
            let object = value.get(key)?.as_object()?;
            Some(
                object
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k.clone(), v)
                    })
                    .collect(),
            )
        };
        let url = text("signedUrl").ok_or("no \"signedUrl\"")?;
        let key = text("key").ok_or("no \"key\"")?;
        let method = match text("method").map(|m| m.to_ascii_uppercase()).as_deref() {
            Some("PUT") => UploadMethod::Put(pairs("headers").ok_or("no \"headers\" for PUT")?),
            Some("POST") => UploadMethod::Post(pairs("fields").ok_or("no \"fields\" for POST")?),
            _ => return Err("a \"method\" other than PUT or POST".into()),
        };
        Ok(SignedUpload { url, key, method })
    }

    fn method_name(&self) -> &'static str {
        match self.method {
            UploadMethod::Put(_) => "PUT",
            UploadMethod::Post(_) => "POST",
        }
    }
}

/// The reference row that commits an overflow upload.
fn reference_body(key: &str, size: usize) -> String {
    format!(
        "{{\"rows\": {{\"type\": \"logs3_overflow\", \"key\": {}, \"size_bytes\": {size}}}, \"api_version\": 2}}",
        Value::String(key.to_owned())
    )
}

/// The `/logs3/overflow` request body: per-row object ids and sizes (§7).
fn overflow_request(batch: &Batch) -> Value {
    let rows: Vec<Value> = batch
        .row_texts()
        .map(|text| {
            let row: Object = serde_json::from_slice(text).unwrap_or_default();
            let object_ids: Object = OBJECT_ID_KEYS
                .iter()
                .filter_map(|k| row.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect();
            json!({
                "object_ids": object_ids,
                "has_comment": row.contains_key("comment"),
                "is_delete": row.get("_object_delete") == Some(&Value::Bool(true)),
                "input_row": { "byte_size": text.len() },
            })
        })
        .collect();
    json!({ "content_type": "application/json", "size_bytes": batch.body.len(), "rows": rows })
}

/// A multipart/form-data body: the fields, then the payload as file `logs3.json`.
fn multipart_body(boundary: &str, fields: &[(String, String)], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                name.replace('"', "%22")
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"logs3.json\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{PROJECT, config, fixture, lines_of, row, same_shape, sink};
    use super::super::upload::{FRAME_OPEN, FRAME_OVERHEAD};
    use super::*;
    use crate::deliver::sink::fake_server::{FakeServer, Reply};

    #[tokio::test]
    async fn overflow_follows_h_overflow() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        let mut config = config(&server);
        config.max_in_flight = 1;
        let sink = sink(config);
        let big = row("big", 5000);
        let outcome = sink.send(vec![big, row("small", 10)]).await;
        assert_eq!(outcome.sent, 2);

        let fx = fixture("h_overflow.jsonl");
        let normalise = |lines: Vec<(String, String)>| -> Vec<(String, String)> {
            lines
                .into_iter()
                .map(|(m, p)| match p.starts_with("/__signed_upload/") {
                    true => (m, "/__signed_upload/*".to_owned()),
                    false => (m, p),
                })
                .collect()
        };
        let mut expected = normalise(lines_of(&fx));
        expected.push(("POST".into(), "/logs3".into())); // the small row's own batch
        assert_eq!(normalise(server.request_lines()), expected);

        let overflow = &server.requests_to("/logs3/overflow")[0];
        let put = server
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT")
            .expect("signed upload");
        let reference = &server.logs3_requests()[0];
        let fx_overflow = &fx[3]["body_json"];
        let fx_reference = &fx[5]["body_json"];
        let ours = overflow.json().unwrap_or_default();
        assert!(same_shape(&ours, fx_overflow));
        assert_eq!(ours["size_bytes"], json!(put.body.len()));
        assert_eq!(
            ours["rows"][0]["input_row"]["byte_size"],
            json!(put.body.len() - FRAME_OVERHEAD)
        );
        assert_eq!(
            ours["rows"][0]["object_ids"],
            json!({ "project_id": server.project_id(PROJECT), "log_id": "g" })
        );
        // The signed upload carries the exact body, the returned headers and no credentials.
        assert!(put.header("authorization").is_none());
        assert!(put.header("content-type").is_none());
        assert_eq!(put.header("x-fake-signed"), Some("1"));
        assert!(put.body_text().starts_with(FRAME_OPEN) && put.body.len() > 2000);
        let reference_json = reference.json().unwrap_or_default();
        assert!(same_shape(&reference_json, fx_reference));
        assert_eq!(reference_json["rows"]["size_bytes"], json!(put.body.len()));
        assert!(
            reference
                .body_text()
                .starts_with("{\"rows\": {\"type\": \"logs3_overflow\", \"key\": \"overflow/")
        );
        assert!(server.rows_by_id().contains_key("big"));
        assert!(server.rows_by_id().contains_key("small"));
    }

    #[tokio::test]
    async fn overflow_by_multipart_post() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        server.set_overflow_post(true);
        let outcome = sink(config(&server)).send(vec![row("big", 5000)]).await;
        assert_eq!(outcome.sent, 1);
        let upload = &server.requests_to("/__signed_post_upload")[0];
        assert!(upload.header("authorization").is_none());
        assert!(
            upload
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("multipart/form-data; boundary="))
        );
        assert_eq!(server.rows()[0]["id"], "big");
    }

    #[tokio::test]
    async fn overflow_uploads_once_and_repeats_only_the_reference() {
        let server = FakeServer::start();
        server.set_payload_limit(Some(2000));
        server.push_logs3(Reply::status(502));
        let outcome = sink(config(&server)).send(vec![row("big", 5000)]).await;
        assert_eq!(outcome.sent, 1);
        assert_eq!(server.requests_to("/logs3/overflow").len(), 1);
        assert_eq!(
            server
                .requests()
                .iter()
                .filter(|r| r.method == "PUT")
                .count(),
            1
        );
        assert_eq!(server.logs3_requests().len(), 2);
    }

    #[test]
    fn multipart_and_signed_upload_answers() {
        let fields = vec![("key".to_owned(), "k1".to_owned())];
        let body =
            String::from_utf8(multipart_body("B", &fields, b"{\"rows\": []}")).unwrap_or_default();
        assert_eq!(
            body,
            "--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk1\r\n--B\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"logs3.json\"\r\n\
             Content-Type: application/json\r\n\r\n{\"rows\": []}\r\n--B--\r\n"
        );
        let put = br#"{"method":"PUT","signedUrl":"http://s/x","headers":{"a":"1"},"key":"k"}"#;
        assert!(
            matches!(SignedUpload::parse(put), Ok(SignedUpload { method: UploadMethod::Put(h), .. }) if h.len() == 1)
        );
        for bad in [
            &br#"{"method":"PUT","signedUrl":"u","key":"k"}"#[..],
            br#"{"method":"GET","signedUrl":"u","key":"k","headers":{}}"#,
            b"nope",
        ] {
            assert!(SignedUpload::parse(bad).is_err());
        }
        assert_eq!(
            reference_body("overflow/a\"b", 12),
            "{\"rows\": {\"type\": \"logs3_overflow\", \"key\": \"overflow/a\\\"b\", \"size_bytes\": 12}, \"api_version\": 2}"
        );
    }
}

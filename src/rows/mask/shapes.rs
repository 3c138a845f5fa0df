//! Secret shapes inside text: bearer tokens, cloud and vendor API keys, JWTs and PEM
//! private keys, matched by hand (no regular expressions) at word boundaries.

use super::REDACTED;

/// Replaces the secret shapes found in `text`; `None` when there are none (no allocation).
pub(super) fn scrub_text(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match match_secret(bytes, i) {
            Some((start, end)) => {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                // All match positions sit next to ASCII bytes, so they are char boundaries.
                buf.push_str(text.get(copied..start).unwrap_or_default());
                buf.push_str(REDACTED);
                copied = end;
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    let mut buf = out?;
    buf.push_str(text.get(copied..).unwrap_or_default());
    Some(buf)
}

/// A secret starting at byte `i`: the byte range to replace.
fn match_secret(b: &[u8], i: usize) -> Option<(usize, usize)> {
    match b[i] {
        b'B' | b'b' => match_bearer(b, i),
        b'A' => match_aws(b, i).map(|end| (i, end)),
        b's' => match_sk(b, i).map(|end| (i, end)),
        b'g' => match_github(b, i).map(|end| (i, end)),
        b'x' => match_slack(b, i).map(|end| (i, end)),
        b'e' => match_jwt(b, i).map(|end| (i, end)),
        b'-' => match_pem(b, i).map(|end| (i, end)),
        _ => None,
    }
}

/// Letters, digits, `_` and `-`: a shape must not be preceded by one of these.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Whether a shape may start at `i` (start of text or a non-word byte before it).
fn at_boundary(b: &[u8], i: usize) -> bool {
    i == 0 || !is_word_byte(b[i - 1])
}

/// The end of the run of bytes satisfying `allowed` that starts at `from`.
fn run_end(b: &[u8], from: usize, allowed: impl Fn(u8) -> bool) -> usize {
    let mut j = from;
    while j < b.len() && allowed(b[j]) {
        j += 1;
    }
    j
}

/// Whether `b[i..]` starts with `prefix`.
fn starts_with_at(b: &[u8], i: usize, prefix: &[u8]) -> bool {
    b.get(i..i + prefix.len()) == Some(prefix)
}

/// `Bearer <token>` (scheme case-insensitive); only the token is replaced.
fn match_bearer(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if !at_boundary(b, i) || !b.get(i..i + 6)?.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token_start = run_end(b, i + 6, |c| c == b' ' || c == b'\t');
    if token_start == i + 6 {
        return None;
    }
    let body_end = run_end(b, token_start, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
    });
    let end = run_end(b, body_end, |c| c == b'=');
    let token = &b[token_start..body_end];
    let long_enough =
        (token.len() >= 12 && token.iter().any(u8::is_ascii_digit)) || token.len() >= 24;
    long_enough.then_some((token_start, end))
}

/// AWS access key id: `AKIA`/`ASIA` + exactly 16 upper-case letters or digits.
fn match_aws(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !(starts_with_at(b, i, b"AKIA") || starts_with_at(b, i, b"ASIA")) {
        return None;
    }
    let end = run_end(b, i + 4, |c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let followed_by_word = b.get(end).is_some_and(|c| c.is_ascii_alphanumeric());
    (end - (i + 4) == 16 && !followed_by_word).then_some(end)
}

/// OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) keys.
fn match_sk(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"sk-") {
        return None;
    }
    let end = run_end(b, i + 3, is_word_byte);
    let body = &b[i + 3..end];
    (body.len() >= 20 && body.iter().any(u8::is_ascii_digit)).then_some(end)
}

/// GitHub tokens: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and fine-grained `github_pat_`.
fn match_github(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) {
        return None;
    }
    if starts_with_at(b, i, b"github_pat_") {
        let end = run_end(b, i + 11, |c| c.is_ascii_alphanumeric() || c == b'_');
        return (end - (i + 11) >= 20).then_some(end);
    }
    let classic = [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"];
    if classic.iter().any(|p| starts_with_at(b, i, *p)) {
        let end = run_end(b, i + 4, |c| c.is_ascii_alphanumeric());
        return (end - (i + 4) >= 20).then_some(end);
    }
    None
}

/// Slack tokens: `xox[baprs]-` + at least 10 of `[A-Za-z0-9-]`.
fn match_slack(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"xox") {
        return None;
    }
    if !matches!(b.get(i + 3), Some(b'b' | b'a' | b'p' | b'r' | b's'))
        || b.get(i + 4) != Some(&b'-')
    {
        return None;
    }
    let end = run_end(b, i + 5, |c| c.is_ascii_alphanumeric() || c == b'-');
    (end - (i + 5) >= 10).then_some(end)
}

/// base64url alphabet.
fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// JWT: `eyJ<header>.ey<payload>.<signature>` in base64url (the signature may be empty).
fn match_jwt(b: &[u8], i: usize) -> Option<usize> {
    if !at_boundary(b, i) || !starts_with_at(b, i, b"eyJ") {
        return None;
    }
    let header_end = run_end(b, i, is_b64url);
    if header_end - i < 10 || b.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload_start = header_end + 1;
    let payload_end = run_end(b, payload_start, is_b64url);
    if payload_end - payload_start < 4
        || !starts_with_at(b, payload_start, b"ey")
        || b.get(payload_end) != Some(&b'.')
    {
        return None;
    }
    Some(run_end(b, payload_end + 1, is_b64url))
}

/// PEM private key block, to the matching END line (or the end of the text if cut off).
fn match_pem(b: &[u8], i: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    if !starts_with_at(b, i, BEGIN) {
        return None;
    }
    let label_start = i + BEGIN.len();
    let label_end = run_end(b, label_start, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    let label = &b[label_start..label_end];
    if !label.ends_with(b"PRIVATE KEY") || !starts_with_at(b, label_end, DASHES) {
        return None;
    }
    let mut j = label_end + DASHES.len();
    while j < b.len() {
        if starts_with_at(b, j, b"-----END ")
            && starts_with_at(b, j + 9, label)
            && starts_with_at(b, j + 9 + label.len(), DASHES)
        {
            return Some(j + 9 + label.len() + DASHES.len());
        }
        j += 1;
    }
    Some(b.len())
}

#[cfg(test)]
mod tests {
    use super::super::scrub_secrets;
    use serde_json::json;

    #[test]
    fn secret_shapes_in_text_are_replaced() {
        let cases = [
            (
                "Authorization: Bearer abc123def456ghi",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                "curl -H 'authorization: bearer xyzXYZ0123456789==' url",
                "curl -H 'authorization: bearer [REDACTED]' url",
            ),
            ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED] here"),
            ("ASIAY34FZKBOKMUTVV7A", "[REDACTED]"),
            (
                "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "OPENAI_API_KEY=[REDACTED]",
            ),
            (
                "use sk-proj-Ab3_cD-efGhIjKlMnOpQrStUvWx, ok",
                "use [REDACTED], ok",
            ),
            (
                "k=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv-wxyz_0123AA",
                "k=[REDACTED]",
            ),
            (
                "token ghp_16C7e42F292c6912E7710c838347Ae178B4a!",
                "token [REDACTED]!",
            ),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "[REDACTED]"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "[REDACTED]",
            ),
            (
                "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl.",
                "slack [REDACTED].",
            ),
            (
                "jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
                "jwt=[REDACTED] end",
            ),
            (
                "unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
                "unsigned [REDACTED]",
            ),
            (
                "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAA=\n-----END RSA PRIVATE KEY-----\nb",
                "a\n[REDACTED]\nb",
            ),
            ("-----BEGIN PRIVATE KEY-----\nMIIE cut off", "[REDACTED]"),
            (
                "clé: sk-abcdefghijklmnopqrstuvwxyz0123 é",
                "clé: [REDACTED] é",
            ),
            (
                "two AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLE",
                "two [REDACTED] and [REDACTED]",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub_secrets(&json!(input)), json!(expected), "{input}");
        }
    }

    #[test]
    fn normal_text_is_untouched() {
        let cases = [
            "The bearer of bad news arrived.",
            "Bearer authentication is defined in RFC 6750",
            "Bearer short1",
            "task-0123456789abcdefghijklmnop is a task id",
            "ask-me-anything-about-0123456789-now",
            "sk-learn-is-not-a-key-but-long-enough",
            "AKIAIOSFODNN7EXAMPLEX is 21 chars",
            "xAKIAIOSFODNN7EXAMPLE",
            "AKIA lowercase akiaiosfodnn7example",
            "ghp_short and gh_pat_x",
            "xoxb-short",
            "eyJ is how base64 JSON starts; eyJhbGciOi alone is not a JWT",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "Ünïcödé ✓ — emojis 🎉 and tokens: prompt=3",
            "",
        ];
        for text in cases {
            assert_eq!(scrub_secrets(&json!(text)), json!(text), "{text}");
        }
        let v = json!({"input": {"messages": [{"role": "user", "content": "hello"}]},
                       "n": 1.5, "b": false, "x": null, "note": "kept"});
        assert_eq!(scrub_secrets(&v), v);
    }
}

//! Unit tests of [`super::usage_metrics`], one per provider shape.

use super::*;
use serde_json::json;
use std::collections::BTreeMap;

/// The metrics as a map, checking that no name appears twice.
fn metrics(value: &Value) -> BTreeMap<&'static str, f64> {
    let list = usage_metrics(value);
    let map: BTreeMap<_, _> = list.iter().copied().collect();
    assert_eq!(map.len(), list.len(), "duplicate metric in {list:?}");
    map
}

fn expect(pairs: &[(&'static str, f64)]) -> BTreeMap<&'static str, f64> {
    pairs.iter().copied().collect()
}

#[test]
fn openai_chat_completion_response() {
    // Shape of an OpenAI chat completion (o-series, prompt caching, audio details).
    let response = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "o3-mini-2025-01-31",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                     "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 1117,
            "completion_tokens": 1346,
            "total_tokens": 2463,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 1280,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default"
    });
    let expected = expect(&[
        ("prompt_tokens", 1117.0),
        ("completion_tokens", 1346.0),
        ("tokens", 2463.0),
        ("prompt_cached_tokens", 1024.0),
        ("prompt_audio_tokens", 0.0),
        ("completion_reasoning_tokens", 1280.0),
        ("completion_audio_tokens", 0.0),
        ("completion_accepted_prediction_tokens", 0.0),
        ("completion_rejected_prediction_tokens", 0.0),
    ]);
    assert_eq!(metrics(&response), expected);
    assert_eq!(metrics(&response["usage"]), expected);
    assert_eq!(
        usage_metrics(&response)[..3],
        [
            ("prompt_tokens", 1117.0),
            ("completion_tokens", 1346.0),
            ("tokens", 2463.0)
        ]
    );
}

#[test]
fn openai_responses_api_usage() {
    let response = json!({
        "id": "resp_67ccd3a9da748190baa7f1570fe91ac6",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1-2025-04-14",
        "output": [],
        "usage": {
            "input_tokens": 2036,
            "input_tokens_details": {"cached_tokens": 1920},
            "output_tokens": 487,
            "output_tokens_details": {"reasoning_tokens": 384},
            "total_tokens": 2523
        }
    });
    let expected = expect(&[
        ("prompt_tokens", 2036.0),
        ("completion_tokens", 487.0),
        ("tokens", 2523.0),
        ("prompt_cached_tokens", 1920.0),
        ("completion_reasoning_tokens", 384.0),
    ]);
    assert_eq!(metrics(&response), expected);
    // A `response.completed` stream event wraps the response.
    let event = json!({"type": "response.completed", "response": response});
    assert_eq!(metrics(&event), expected);
}

#[test]
fn anthropic_message_with_ttl_split() {
    // Anthropic Messages response with a 5m and a 1h cache write and a cache read.
    let message = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 21,
            "cache_creation_input_tokens": 1800,
            "cache_read_input_tokens": 2048,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 800,
                "ephemeral_1h_input_tokens": 1000
            },
            "output_tokens": 393,
            "server_tool_use": null,
            "service_tier": "standard"
        }
    });
    // prompt = 21 + 2048 + (800 + 1000) = 3869; tokens = 3869 + 393 = 4262; the aggregate
    // is not repeated next to its split.
    assert_eq!(
        metrics(&message),
        expect(&[
            ("prompt_tokens", 3869.0),
            ("completion_tokens", 393.0),
            ("tokens", 4262.0),
            ("prompt_cached_tokens", 2048.0),
            ("prompt_cache_creation_5m_tokens", 800.0),
            ("prompt_cache_creation_1h_tokens", 1000.0),
        ])
    );
}

#[test]
fn anthropic_legacy_aggregate_and_streaming_events() {
    // Older API versions: no `cache_creation` object.
    let usage = json!({
        "input_tokens": 50,
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 0,
        "output_tokens": 393
    });
    assert_eq!(
        metrics(&usage),
        expect(&[
            ("prompt_tokens", 188136.0),
            ("completion_tokens", 393.0),
            ("tokens", 188529.0),
            ("prompt_cached_tokens", 0.0),
            ("prompt_cache_creation_tokens", 188086.0),
        ])
    );
    // A split that does not cover the aggregate is dropped, the aggregate kept.
    let short = json!({"input_tokens": 1, "cache_creation_input_tokens": 30,
                       "cache_creation": {"ephemeral_5m_input_tokens": 20}});
    assert_eq!(
        metrics(&short),
        expect(&[
            ("prompt_tokens", 31.0),
            ("prompt_cache_creation_tokens", 30.0)
        ])
    );
    // `message_start` carries the prompt side; `message_delta` only output tokens, so no
    // prompt or total is invented.
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "usage":
        {"input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 1}}});
    assert_eq!(
        metrics(&start),
        expect(&[
            ("prompt_tokens", 150.0),
            ("completion_tokens", 1.0),
            ("tokens", 151.0),
            ("prompt_cached_tokens", 50.0),
        ])
    );
    let delta = json!({"type": "message_delta", "usage": {"output_tokens": 80,
        "output_tokens_details": {"thinking_tokens": 20}}});
    assert_eq!(
        metrics(&delta),
        expect(&[
            ("completion_tokens", 80.0),
            ("completion_reasoning_tokens", 20.0)
        ])
    );
}

#[test]
fn gemini_generate_content_response() {
    // Gemini 2.5 with thinking: candidatesTokenCount excludes the thoughts.
    let response = json!({
        "candidates": [{"content": {"parts": [{"text": "Paris."}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 30,
            "totalTokenCount": 1150,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}],
            "thoughtsTokenCount": 1109
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mJ1oaLfLK9mAqtsPgbn6iQs"
    });
    assert_eq!(
        metrics(&response),
        expect(&[
            ("prompt_tokens", 11.0),
            ("completion_tokens", 1139.0),
            ("tokens", 1150.0),
            ("completion_reasoning_tokens", 1109.0),
        ])
    );
}

#[test]
fn gemini_cache_tools_and_modalities() {
    let usage = json!({
        "promptTokenCount": 2500,
        "cachedContentTokenCount": 2048,
        "toolUsePromptTokenCount": 100,
        "candidatesTokenCount": 400,
        "totalTokenCount": 3000,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 2000},
            {"modality": "AUDIO", "tokenCount": 300},
            {"modality": "AUDIO", "tokenCount": 200}
        ],
        "candidatesTokensDetails": [
            {"modality": "IMAGE", "tokenCount": 258},
            {"modality": "AUDIO", "tokenCount": "7"},
            {"modality": "TEXT", "tokenCount": 142}
        ]
    });
    // prompt = 2500 + 100; completion = 400 + 0 thoughts (omitted field); total kept.
    let expected = expect(&[
        ("prompt_tokens", 2600.0),
        ("completion_tokens", 400.0),
        ("tokens", 3000.0),
        ("prompt_cached_tokens", 2048.0),
        ("prompt_audio_tokens", 500.0),
        ("completion_image_tokens", 258.0),
    ]);
    assert_eq!(metrics(&usage), expected);
    // The same in the snake_case spelling of google-genai's `model_dump()`.
    let snake = json!({"usage_metadata": {
        "prompt_token_count": 2500, "cached_content_token_count": 2048,
        "tool_use_prompt_token_count": 100, "candidates_token_count": 400,
        "total_token_count": 3000,
        "prompt_tokens_details": [{"modality": "AUDIO", "token_count": 500}],
        "candidates_tokens_details": [{"modality": "IMAGE", "token_count": 258}]
    }});
    assert_eq!(metrics(&snake), expected);
}

#[test]
fn bedrock_converse_usage() {
    // Cache-write turn from the Braintrust spec's Bedrock conformance test.
    let response = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Paris"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 1192,
                  "cacheReadInputTokens": 0, "cacheWriteInputTokens": 1175,
                  "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 1175},
        "metrics": {"latencyMs": 512}
    });
    assert_eq!(
        metrics(&response),
        expect(&[
            ("prompt_tokens", 1187.0),
            ("completion_tokens", 5.0),
            ("tokens", 1192.0),
            ("prompt_cached_tokens", 0.0),
            ("prompt_cache_creation_tokens", 1175.0),
        ])
    );
}

#[test]
fn odd_inputs_give_no_metrics() {
    for value in [
        json!(null),
        json!("prompt_tokens: 5"),
        json!(42),
        json!(true),
        json!([]),
        json!([{"prompt_tokens": 5}]),
        json!({}),
        json!({"usage": null}),
        json!({"usage": "10 tokens"}),
        json!({"usage": [1, 2]}),
        json!({"usage": {}}),
        json!({"prompt_tokens": "5", "completion_tokens": null, "total_tokens": [3]}),
        json!({"prompt_tokens": -5, "completion_tokens": 1.5, "total_tokens": true}),
        json!({"input_tokens": {"n": 1}, "output_tokens": -1, "cache_creation": "x"}),
        json!({"promptTokenCount": "11", "candidatesTokensDetails": "AUDIO"}),
        json!({"inputTokens": null, "totalTokens": -3}),
        json!({"a": {"b": {"c": {"usage": {"prompt_tokens": 1}}}}}),
        json!({"message": {"message": {"message": {"prompt_tokens": 1}}}}),
    ] {
        assert_eq!(usage_metrics(&value), [], "{value}");
    }
}

#[test]
fn partly_valid_usage_keeps_only_valid_counts() {
    let usage = json!({
        "prompt_tokens": 10,
        "completion_tokens": "20",
        "total_tokens": 1e20,
        "prompt_tokens_details": ["cached_tokens", 5],
        "completion_tokens_details": {"reasoning_tokens": -1, "audio_tokens": 3}
    });
    assert_eq!(
        metrics(&usage),
        expect(&[
            ("prompt_tokens", 10.0),
            ("tokens", 1e20),
            ("completion_audio_tokens", 3.0),
        ])
    );
    // No provider total and a missing side: `tokens` is not invented.
    assert_eq!(
        metrics(&json!({"prompt_tokens": 7})),
        expect(&[("prompt_tokens", 7.0)])
    );
}

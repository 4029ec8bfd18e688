//! Limits and validation, both servers (run from `scenarios::end_to_end`): over-long inputs,
//! too many inputs, bad JSON and shapes, `dimensions`, token ids (as integers and as whole
//! floats), each on `/v1/embeddings` and `/embed`.

use corestream::batch::Rows;
use corestream::Module;
use corestream_serve::model::{embedder, TextTokenizer};
use serde_json::{json, Value};

use crate::support::{max_diff, openai_vector, post, Model};

/// Over-long inputs: 413 without truncation, the truncated input's vector with it (per
/// request, both routes); too many inputs 413; bad JSON, an empty list, wrong `dimensions`,
/// unknown token ids 400; token-id input served.
pub async fn limits_and_validation(
    base: &str,
    model: &Model,
    tokenizer: &TextTokenizer,
    dim: usize,
) {
    let client = reqwest::Client::new();
    let max = tokenizer.max_input_length();
    let long = "word ".repeat(max + 10);
    let openai = format!("{base}/v1/embeddings");
    let embed = format!("{base}/embed");

    // Not UTF-8, in a field the request type ignores (found by fuzzing: serde_json skips such
    // fields unchecked, and the body was answered 200): 400 on both routes.
    for (url, field) in [(&openai, "input"), (&embed, "inputs")] {
        let mut body = format!("{{\"{field}\": \"a\", \"other\": \"").into_bytes();
        body.extend_from_slice(b"\xf4\"}");
        let r = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let e: Value = r.json().await.unwrap();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
    // An array is not a request, though serde would read its items as the fields in order
    // (found by fuzzing: `[[2, 2]]` was answered as `{"input": [2, 2]}`): 400 on both routes.
    for (url, body) in [
        (&openai, "[[2, 2]]"),
        (&embed, r#"["a"]"#),
        (&embed, "[[\"a\"]]"),
    ] {
        let (s, e) = post(&client, url.clone(), body.to_owned()).await;
        assert_eq!(s, 400, "{url} {body}: {e}");
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
    }

    let (s, e) = post(&client, openai.clone(), json!({"input": long}).to_string()).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error"]["code"], "input_too_long");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("at most {max}")),
        "{e}"
    );
    let (s, e) = post(&client, embed.clone(), json!({"inputs": long}).to_string()).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error_type"], "Validation");

    // Truncated: the answer is the vector of the first `max` tokens (special tokens kept).
    let mut ids = tokenizer.encode(&long).unwrap();
    tokenizer.truncate(&mut ids, max, corestream_serve::model::Keep::Start);
    assert_eq!(ids.len(), max);
    let expected = embedder::normalize(model.forward(Rows(vec![ids.into()])).unwrap().0.remove(0));
    let (s, a) = post(
        &client,
        openai.clone(),
        json!({"input": long, "truncate": true, "encoding_format": "float"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["usage"]["prompt_tokens"], max);
    let d = max_diff(
        &[openai_vector(&a["data"][0]["embedding"])],
        std::slice::from_ref(&expected),
    );
    assert!(d <= 1e-4, "truncated: max diff {d}");
    let (s, a) = post(
        &client,
        embed.clone(),
        json!({"inputs": [long], "truncate": true}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let got: Vec<Vec<f32>> = serde_json::from_value(a).unwrap();
    assert!(max_diff(&got, &[expected]) <= 1e-4);

    let many: Vec<String> = (0..33).map(|i| format!("text {i}")).collect();
    let (s, e) = post(&client, openai.clone(), json!({"input": many}).to_string()).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error"]["code"], "too_many_inputs");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 32"),
        "{e}"
    );
    let (s, e) = post(&client, embed.clone(), json!({"texts": many}).to_string()).await;
    assert_eq!(s, 413, "{e}");

    for (url, body, code) in [
        (&openai, "{not json".to_owned(), "invalid_json"),
        (&openai, r#"{"input": 5}"#.to_owned(), "invalid_json"),
        (&openai, r#"{"model": "m"}"#.to_owned(), "invalid_json"),
        (
            &openai,
            r#"{"input": "a", "encoding_format": "hex"}"#.to_owned(),
            "invalid_json",
        ),
        (&openai, r#"{"input": []}"#.to_owned(), "invalid_request"),
        (
            &openai,
            json!({"input": "a", "dimensions": dim + 1}).to_string(),
            "invalid_dimensions",
        ),
        (
            &openai,
            json!({"input": "a", "dimensions": 0}).to_string(),
            "invalid_dimensions",
        ),
        (
            &openai,
            json!({"input": "a", "prompt_name": "query"}).to_string(),
            "invalid_request",
        ),
        (
            &openai,
            json!({"input": [[1, 2], []]}).to_string(),
            "invalid_request",
        ),
        (
            &openai,
            json!({"input": [tokenizer.vocab_size()]}).to_string(),
            "invalid_request",
        ),
    ] {
        let (s, e) = post(&client, url.clone(), body.clone()).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{body}: {e}");
    }
    for body in [
        "{not json",
        r#"{"texts": []}"#,
        r#"{"texts": "one"}"#,
        r#"{"text": ["a"]}"#,
        r#"{"inputs": 3}"#,
        r#"{"inputs": "a", "normalize": "yes"}"#,
        // `normalize` is a boolean, not nullable (schemathesis found `null` accepted).
        r#"{"inputs": "a", "normalize": null}"#,
        r#"{"inputs": "a", "texts": ["b"]}"#,
        r#"{"texts": ["a"], "normalize": true}"#,
        r#"{"texts": null}"#,
    ] {
        let (s, e) = post(&client, embed.clone(), body.to_owned()).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(e["error_type"], "Validation", "{body}: {e}");
        assert!(e["error"].is_string(), "{body}: {e}");
    }

    // Fewer `dimensions`: the leading ones, unit length again (Matryoshka truncation).
    let short = (dim / 2).max(1);
    let ids = tokenizer.encode("a cat sits").unwrap();
    let full = model
        .forward(Rows(vec![ids.clone().into()]))
        .unwrap()
        .0
        .remove(0);
    let cut = embedder::normalize(embedder::normalize(full)[..short].to_vec());
    let (s, a) = post(
        &client,
        openai.clone(),
        json!({"input": ids, "dimensions": short}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let got = openai_vector(&a["data"][0]["embedding"]);
    assert_eq!(got.len(), short);
    assert!(max_diff(&[got], std::slice::from_ref(&cut)) <= 1e-4);

    // Whole numbers written with a fraction (`2.0`: integers to JSON Schema, found by
    // schemathesis) are ids and dimensions; `1.5` is not.
    let whole: Vec<f64> = ids.iter().map(|&i| f64::from(i)).collect();
    let (s, a) = post(
        &client,
        openai.clone(),
        json!({"input": whole, "dimensions": short as f64}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert!(
        max_diff(
            &[openai_vector(&a["data"][0]["embedding"])],
            std::slice::from_ref(&cut)
        ) <= 1e-4
    );
    // In a list of lists, after the first list too (schemathesis: `[[0], [543.0, 4670]]`).
    let (s, a) = post(
        &client,
        openai.clone(),
        json!({"input": [ids.clone(), whole.clone()], "dimensions": short}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let second = openai_vector(&a["data"][1]["embedding"]);
    assert!(max_diff(&[second], std::slice::from_ref(&cut)) <= 1e-4);
    for body in [
        json!({"input": [1.5]}),
        json!({"input": [[1], [1.5]]}),
        json!({"input": "a", "dimensions": 1.5}),
    ] {
        let (s, a) = post(&client, openai.clone(), body.to_string()).await;
        assert_eq!(s, 400, "{body}: {a}");
    }

    // `dimensions` equal to the model's is accepted; token ids are served as given.
    let ids = tokenizer.encode("a cat sits").unwrap();
    let expected = embedder::normalize(
        model
            .forward(Rows(vec![ids.clone().into()]))
            .unwrap()
            .0
            .remove(0),
    );
    let (s, a) = post(
        &client,
        openai,
        json!({"input": ids, "dimensions": dim, "encoding_format": "float"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert!(max_diff(&[openai_vector(&a["data"][0]["embedding"])], &[expected]) <= 1e-4);
}

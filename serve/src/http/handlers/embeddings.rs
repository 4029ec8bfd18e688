//! The embedding routes: OpenAI's `POST /v1/embeddings` and text-embeddings-inference's
//! `POST /embed`.

use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::http::api::{
    EmbedAnswer, EmbedBody, EmbedRequest, EmbedResponse, EmbeddingValue, EncodingFormat,
    OpenAiEmbedding, OpenAiError, OpenAiInput, OpenAiRequest, OpenAiResponse, TeiError,
    TruncationDirection, Usage,
};
use crate::http::bounded::{self, ParseError};
use crate::http::handlers::errors::{openai_failure, tei_failure};
use crate::http::handlers::Reply;
use crate::model::tokenizer::Keep;
use crate::model::ModelKind;
use crate::service::scores::wrong_model;
use crate::service::{Failure, Loaded, Service};

/// Little-endian f32 bytes in base64, as OpenAI sends `encoding_format: base64`.
pub fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// OpenAI embeddings.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "OpenAI",
    request_body(content = OpenAiRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One unit vector per input", body = OpenAiResponse),
        (status = 400, description = "Bad JSON, an empty input, an unknown token id, or `dimensions` outside 1 to the model's dimension", body = OpenAiError),
        (status = 408, description = "The body did not arrive within --body-timeout-ms", body = OpenAiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or an input over the maximum length without truncation", body = OpenAiError),
        (status = 401, description = "The server has an --api-key and the request did not present it as `Authorization: Bearer`", body = OpenAiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = OpenAiError),
        (status = 404, description = "With several models served: `model` names none of them", body = OpenAiError),
        (status = 429, description = "Overloaded: the queue, the body budget or --max-concurrent-requests is full; the `Retry-After` header says when to retry", body = OpenAiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = OpenAiError),
    )
)]
pub async fn openai_embeddings(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    openai(service, model, body)
        .await
        .unwrap_or_else(openai_failure)
}

/// The body as text, if it is UTF-8 (RFC 8259; checked whole, because serde_json does not
/// check the strings of fields a request type ignores) and a JSON object (serde's derived
/// structs also take an array, its items as the fields in order: `[["a"]]` would be read as
/// `{"input": ["a"]}`).
pub(super) fn json_object(body: &[u8]) -> Result<&str, Failure> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Failure::bad_request("invalid_json", format!("the body is not UTF-8 JSON: {e}"))
    })?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(Failure::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    Ok(text)
}

/// Parses a body for `loaded`'s limits (every model's: the limits are the server's): a list of inputs stops being read past
/// `--max-client-batch` (413), other failures are `invalid` (400).
pub(super) fn parse_body<T: DeserializeOwned>(
    text: &str,
    loaded: &Loaded,
    invalid: impl FnOnce(serde_json::Error) -> Failure,
) -> Result<T, Failure> {
    bounded::parse(text, loaded.info.max_client_batch_size).map_err(|e| match e {
        ParseError::TooManyInputs { max } => Failure::too_large(
            "too_many_inputs",
            format!("more than {max} inputs in one request; at most {max} are allowed (--max-client-batch)"),
        ),
        ParseError::Json(e) => invalid(e),
    })
}

async fn openai(service: &Service, model: Option<&str>, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let models = service.models()?;
    let request: OpenAiRequest = parse_body(text, models.first(), |e| {
        invalid_json(
            e,
            "{\"input\": \"text\" | [\"text\", ...] | [token ids] | [[token ids], ...], \
             \"model\": \"...\", \"encoding_format\": \"float\" | \"base64\"}",
        )
    })?;
    let loaded = models.pick(model, request.model.as_deref(), Some("embedding"))?;
    if loaded.kind != ModelKind::Embedding {
        return Err(wrong_model(loaded, "/v1/embeddings"));
    }
    let dim = loaded.info.dimension;
    let dimensions = match request.dimensions {
        None => dim,
        Some(d) if (1..=dim as u64).contains(&d) => d as usize,
        Some(d) => {
            return Err(Failure::bad_request(
                "invalid_dimensions",
                format!(
                    "dimensions {d} is not available: this model answers 1 to {dim} dimensions"
                ),
            ))
        }
    };
    let prompt = request.prompt_name.as_deref();
    let input = match request.input {
        OpenAiInput::Text(t) => {
            let texts = service.prompted(loaded, prompt, vec![t])?;
            service
                .tokenize(loaded, texts, request.truncate, Keep::Start)
                .await
        }
        OpenAiInput::Texts(t) => {
            let texts = service.prompted(loaded, prompt, t)?;
            service
                .tokenize(loaded, texts, request.truncate, Keep::Start)
                .await
        }
        OpenAiInput::Tokens(ids) => service.token_ids(loaded, vec![ids], request.truncate),
        OpenAiInput::TokenLists(ids) => service.token_ids(loaded, ids, request.truncate),
    }?;
    let tokens = input.tokens;
    let mut vectors = service.embed(loaded, input, true).await?;
    if dimensions < dim {
        // Matryoshka: the leading dimensions, unit length again.
        for v in &mut vectors {
            v.truncate(dimensions);
            *v = crate::model::embedder::normalize(std::mem::take(v));
        }
    }
    let base64 = request.encoding_format == Some(EncodingFormat::Base64);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding".into(),
            embedding: if base64 {
                EmbeddingValue::Base64(to_base64(&v))
            } else {
                EmbeddingValue::Float(v)
            },
            index,
        })
        .collect();
    Ok(Reply::json(
        200,
        &OpenAiResponse {
            object: "list".into(),
            data,
            model: loaded.info.model_id.clone(),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        },
    ))
}

/// text-embeddings-inference's `/embed` (`{"inputs"}`: a bare list of vectors), or the original
/// `{"texts"}` (an object with unit vectors).
#[utoipa::path(
    post,
    path = "/embed",
    tag = "text-embeddings-inference",
    request_body(content = EmbedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"inputs\"}`: one vector per input; `{\"texts\"}`: `{model, dim, embeddings}`", body = EmbedAnswer),
        (status = 400, description = "Bad JSON or an empty input list", body = TeiError),
        (status = 408, description = "The body did not arrive within --body-timeout-ms", body = TeiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or an input over the maximum length without truncation", body = TeiError),
        (status = 401, description = "The server has an --api-key and the request did not present it as `Authorization: Bearer`", body = TeiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = TeiError),
        (status = 429, description = "Overloaded: the queue, the body budget or --max-concurrent-requests is full; the `Retry-After` header says when to retry", body = TeiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = TeiError),
    )
)]
pub async fn embed(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    embed_any(service, model, body)
        .await
        .unwrap_or_else(tei_failure)
}

/// A 400 `invalid_json` for a body that is not the route's shape: what was wrong (`e`) and the
/// shape `expected`.
pub(super) fn invalid_json(e: impl std::fmt::Display, expected: &str) -> Failure {
    Failure::bad_request(
        "invalid_json",
        format!("invalid JSON body: {e}; expected {expected}"),
    )
}

fn invalid_embed_body(e: impl std::fmt::Display) -> Failure {
    invalid_json(
        e,
        "{\"inputs\": \"text\" | [\"text\", ...], \"normalize\": true, \"truncate\": false} \
         or {\"texts\": [\"...\", ...]}",
    )
}

async fn embed_any(service: &Service, model: Option<&str>, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.model(model, None, Some("embedding"))?;
    if loaded.kind != ModelKind::Embedding {
        return Err(wrong_model(loaded, "/embed"));
    }
    let body: EmbedBody = parse_body(text, loaded, invalid_embed_body)?;
    match body {
        EmbedBody {
            inputs: None,
            texts: Some(texts),
            normalize: None,
            truncate: None,
            truncation_direction: None,
            prompt_name: None,
        } => {
            let texts = service.prompted(loaded, None, texts)?;
            let input = service.tokenize(loaded, texts, None, Keep::Start).await?;
            let embeddings = service.embed(loaded, input, true).await?;
            Ok(Reply::json(
                200,
                &EmbedResponse {
                    model: loaded.info.model_id.clone(),
                    dim: loaded.info.dimension,
                    embeddings,
                },
            ))
        }
        EmbedBody {
            inputs: Some(inputs),
            texts: None,
            normalize,
            truncate,
            truncation_direction,
            prompt_name,
        } => {
            let texts = service.prompted(loaded, prompt_name.as_deref(), inputs.into_texts())?;
            let keep = match truncation_direction {
                Some(TruncationDirection::Left) => Keep::End,
                _ => Keep::Start,
            };
            let input = service.tokenize(loaded, texts, truncate, keep).await?;
            let vectors = service
                .embed(loaded, input, normalize.unwrap_or(true))
                .await?;
            Ok(Reply::json(200, &vectors))
        }
        EmbedBody {
            inputs: Some(_),
            texts: Some(_),
            ..
        } => Err(invalid_embed_body(
            "`texts` and `inputs` are two forms; send one",
        )),
        EmbedBody { texts: Some(_), .. } => Err(invalid_embed_body(
            "`normalize`, `truncate`, `truncation_direction` and `prompt_name` go with `inputs`, \
             not `texts`",
        )),
        EmbedBody { .. } => Err(invalid_embed_body("missing field `inputs`")),
    }
}

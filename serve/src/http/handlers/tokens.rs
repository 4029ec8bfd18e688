//! The tokenizer's routes, as text-embeddings-inference answers them: `POST /tokenize` (the
//! tokens of each input, with byte offsets and special tokens marked) and `POST /decode`
//! (token ids back to text).

use crate::http::api::{
    DecodeRequest, DecodeResponse, SimpleToken, TeiError, TokenizeRequest, TokenizeResponse,
};
use crate::http::handlers::embeddings::{invalid_json, json_object, parse_body};
use crate::http::handlers::errors::tei_failure;
use crate::http::handlers::Reply;
use crate::service::{Failure, Service};

/// The tokens of each input.
#[utoipa::path(
    post,
    path = "/tokenize",
    tag = "text-embeddings-inference",
    request_body(content = TokenizeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One list of tokens per input", body = TokenizeResponse),
        (status = 400, description = "Bad JSON, an empty input list, or an unknown prompt name", body = TeiError),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = TeiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or more tokens than --max-client-batch x the model's longest input", body = TeiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = TeiError),
        (status = 429, description = "Overloaded; see `Retry-After`", body = TeiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = TeiError),
    )
)]
pub async fn tokenize(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    tokenize_any(service, model, body)
        .await
        .unwrap_or_else(tei_failure)
}

async fn tokenize_any(
    service: &Service,
    model: Option<&str>,
    body: &[u8],
) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.model(model, None, None)?;
    let request: TokenizeRequest = parse_body(text, loaded, |e| {
        invalid_json(
            e,
            "{\"inputs\": \"text\" | [\"text\", ...], \"add_special_tokens\": true}",
        )
    })?;
    let texts = request.inputs.into_texts();
    let texts = service.prompted(loaded, request.prompt_name.as_deref(), texts)?;
    let tokens = service
        .tokens(loaded, texts, request.add_special_tokens)
        .await?;
    let answer = TokenizeResponse(
        tokens
            .into_iter()
            .map(|input| {
                input
                    .into_iter()
                    .map(|t| SimpleToken {
                        id: t.id,
                        text: t.text,
                        special: t.span.is_none(),
                        start: t.span.map(|s| s.0),
                        stop: t.span.map(|s| s.1),
                    })
                    .collect()
            })
            .collect(),
    );
    Ok(Reply::json(200, &answer))
}

/// The text of token ids.
#[utoipa::path(
    post,
    path = "/decode",
    tag = "text-embeddings-inference",
    request_body(content = DecodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One text per input", body = DecodeResponse),
        (status = 400, description = "Bad JSON, an empty input list, or an id outside the vocabulary", body = TeiError),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = TeiError),
        (status = 413, description = "A body over 2 MiB, or more inputs than --max-client-batch", body = TeiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = TeiError),
        (status = 429, description = "Overloaded; see `Retry-After`", body = TeiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = TeiError),
    )
)]
pub fn decode(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    decode_any(service, model, body).unwrap_or_else(tei_failure)
}

fn decode_any(service: &Service, model: Option<&str>, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.model(model, None, None)?;
    let request: DecodeRequest = parse_body(text, loaded, |e| {
        invalid_json(
            e,
            "{\"ids\": [token ids] | [[token ids], ...], \"skip_special_tokens\": true}",
        )
    })?;
    let texts = service.decode(
        loaded,
        request.ids.into_lists(),
        request.skip_special_tokens,
    )?;
    Ok(Reply::json(200, &DecodeResponse(texts)))
}

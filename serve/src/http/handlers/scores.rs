//! The scoring routes of rerankers and classifiers: text-embeddings-inference's
//! `POST /rerank` and `POST /predict`, and `POST /v1/rerank` in Cohere's and Jina's shape.

use crate::http::api::{
    CohereRerankRequest, CohereRerankResponse, CohereResult, DocumentText, OpenAiError,
    PredictRequest, PredictResponse, Prediction, Rank, RerankRequest, RerankResponse, RerankUsage,
    TeiError,
};
use crate::http::handlers::embeddings::{invalid_json, json_object, parse_body};
use crate::http::handlers::errors::{openai_failure, tei_failure};
use crate::http::handlers::Reply;
use crate::model::ModelKind;
use crate::service::scores::wrong_model;
use crate::service::{Failure, Service};

/// Every text scored against the query, most relevant first.
#[utoipa::path(
    post,
    path = "/rerank",
    tag = "text-embeddings-inference",
    request_body(content = RerankRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Every text with its score, most relevant first", body = RerankResponse),
        (status = 400, description = "Bad JSON, no texts, or a model that is not a reranker", body = TeiError),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = TeiError),
        (status = 413, description = "A body over 2 MiB, more texts than --max-client-batch, or a pair over the model's longest input without truncate", body = TeiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = TeiError),
        (status = 429, description = "Overloaded; see `Retry-After`", body = TeiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = TeiError),
    )
)]
pub async fn rerank(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    rerank_any(service, model, body)
        .await
        .unwrap_or_else(tei_failure)
}

async fn rerank_any(service: &Service, model: Option<&str>, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.model(model, None, Some("reranker"))?;
    if loaded.kind != ModelKind::Reranker {
        return Err(wrong_model(loaded, "/rerank"));
    }
    let request: RerankRequest = parse_body(text, loaded, |e| {
        invalid_json(
            e,
            "{\"query\": \"...\", \"texts\": [\"...\", ...], \"raw_scores\": false, \
             \"return_text\": false, \"truncate\": false}",
        )
    })?;
    let texts = request.return_text.then(|| request.texts.clone());
    let (scores, _tokens) = service
        .rerank(
            loaded,
            request.query,
            request.texts,
            request.truncate,
            request.raw_scores,
        )
        .await?;
    let ranks = ranked(&scores)
        .map(|index| Rank {
            index,
            text: texts.as_ref().map(|t| t[index].clone()),
            score: scores[index],
        })
        .collect();
    Ok(Reply::json(200, &RerankResponse(ranks)))
}

/// The documents scored against the query, the `top_n` most relevant first (Cohere's and
/// Jina's rerank API).
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "cohere",
    request_body(content = CohereRerankRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The top_n documents with their relevance, most relevant first", body = CohereRerankResponse),
        (status = 400, description = "Bad JSON, no documents, or a model that is not a reranker", body = OpenAiError),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = OpenAiError),
        (status = 413, description = "A body over 2 MiB, more documents than --max-client-batch, or a pair over the model's longest input without truncate", body = OpenAiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = OpenAiError),
        (status = 404, description = "With several models served: `model` names none of them", body = OpenAiError),
        (status = 429, description = "Overloaded; see `Retry-After`", body = OpenAiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = OpenAiError),
    )
)]
pub async fn cohere_rerank(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    cohere_any(service, model, body)
        .await
        .unwrap_or_else(openai_failure)
}

async fn cohere_any(service: &Service, model: Option<&str>, body: &[u8]) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let models = service.models()?;
    let request: CohereRerankRequest = parse_body(text, models.first(), |e| {
        invalid_json(
            e,
            "{\"query\": \"...\", \"documents\": [\"...\" | {\"text\": \"...\"}, ...], \
             \"top_n\": N, \"return_documents\": false}",
        )
    })?;
    let loaded = models.pick(model, request.model.as_deref(), Some("reranker"))?;
    if loaded.kind != ModelKind::Reranker {
        return Err(wrong_model(loaded, "/v1/rerank"));
    }
    let most = loaded.info.max_client_batch_size;
    if let Some(top_n) = request.top_n.filter(|&k| k == 0 || k > most as u64) {
        return Err(Failure::bad_request(
            "invalid_request",
            format!("top_n is {top_n}; ask for 1 to {most} results (--max-client-batch)"),
        ));
    }
    let documents: Vec<String> = request
        .documents
        .into_iter()
        .map(crate::http::api::Document::into_text)
        .collect();
    let kept = request.return_documents.then(|| documents.clone());
    let n = documents.len();
    let (scores, total_tokens) = service
        .rerank(loaded, request.query, documents, request.truncate, false)
        .await?;
    let top_n = request.top_n.map_or(n, |k| (k as usize).min(n));
    let results = ranked(&scores)
        .take(top_n)
        .map(|index| CohereResult {
            index,
            relevance_score: scores[index],
            document: kept.as_ref().map(|d| DocumentText {
                text: d[index].clone(),
            }),
        })
        .collect();
    Ok(Reply::json(
        200,
        &CohereRerankResponse {
            model: loaded.info.model_id.clone(),
            results,
            usage: RerankUsage { total_tokens },
        },
    ))
}

/// Each input's label scores, highest first.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "text-embeddings-inference",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Every label with its score, highest first: one list for one input, a list of them for a list", body = PredictResponse),
        (status = 400, description = "Bad JSON, an empty input list, or a model that is not a classifier", body = TeiError),
        (status = 401, description = "The server has an --api-key and the request did not present it", body = TeiError),
        (status = 413, description = "A body over 2 MiB, more inputs than --max-client-batch, or an input over the model's longest input without truncate", body = TeiError),
        (status = 415, description = "The body is not declared `Content-Type: application/json`", body = TeiError),
        (status = 429, description = "Overloaded; see `Retry-After`", body = TeiError),
        (status = 503, description = "Model not loaded, failed, or shutting down", body = TeiError),
    )
)]
pub async fn predict(service: &Service, model: Option<&str>, body: &[u8]) -> Reply {
    predict_any(service, model, body)
        .await
        .unwrap_or_else(tei_failure)
}

async fn predict_any(
    service: &Service,
    model: Option<&str>,
    body: &[u8],
) -> Result<Reply, Failure> {
    let text = json_object(body)?;
    let loaded = service.model(model, None, Some("classifier"))?;
    let ModelKind::Classifier { labels, .. } = &loaded.kind else {
        return Err(wrong_model(loaded, "/predict"));
    };
    let request: PredictRequest = parse_body(text, loaded, |e| {
        invalid_json(
            e,
            "{\"inputs\": \"text\" | [\"first\", \"second\"] | [\"text\" | [\"first\", \"second\"], ...], \
             \"raw_scores\": false, \"truncate\": false}",
        )
    })?;
    let (inputs, one) = request.inputs.into_sequences();
    let scores = service
        .predict(loaded, inputs, request.truncate, request.raw_scores)
        .await?;
    let mut answers = scores.into_iter().map(|s| {
        ranked(&s)
            .map(|i| Prediction {
                label: labels[i].clone(),
                score: s[i],
            })
            .collect::<Vec<_>>()
    });
    let answer = if one {
        PredictResponse::One(answers.next().unwrap_or_default())
    } else {
        PredictResponse::Many(answers.collect())
    };
    Ok(Reply::json(200, &answer))
}

/// The indices of `scores`, highest score first (ties in index order; NaN last).
fn ranked(scores: &[f32]) -> impl Iterator<Item = usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or_else(|| scores[a].is_nan().cmp(&scores[b].is_nan()))
    });
    order.into_iter()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranked_is_highest_first_stable_and_nan_last() {
        let order: Vec<usize> = super::ranked(&[0.5, f32::NAN, 0.9, 0.5, -1.0]).collect();
        assert_eq!(order, [2, 0, 3, 4, 1]);
    }
}

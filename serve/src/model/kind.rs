//! What a model directory serves ([`ModelKind`]): sentence embeddings, reranking scores
//! (a cross-encoder) or class probabilities (a sequence classifier), decided as
//! text-embeddings-inference decides it, from `config.json`: an architecture ending in
//! `ForSequenceClassification` is a reranker with one label and a classifier with more (labels
//! from `id2label`, or `num_labels`); anything else embeds. The ONNX file's outputs are checked
//! against it when the model loads ([`TextEmbedder`](crate::model::TextEmbedder)).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// What a model answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// One vector per text, pooled from its token vectors (`/embed`, `/v1/embeddings`).
    #[default]
    Embedding,
    /// One relevance score per (query, text) pair: a cross-encoder (`/rerank`, `/v1/rerank`).
    Reranker,
    /// One score per label for a text or a pair (`/predict`).
    Classifier {
        /// The labels, in the order of the model's outputs.
        labels: Vec<String>,
        /// Each label scored on its own (sigmoid: `problem_type` is
        /// `multi_label_classification`) rather than one distribution over them (softmax).
        multi_label: bool,
    },
}

/// The fields of `config.json` read here.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    problem_type: Option<String>,
}

impl ModelKind {
    /// The kind `dir/config.json` declares (an embedding model without one); an error naming
    /// the file when it cannot be read or its labels are not numbered `0..n`.
    ///
    /// ```
    /// use corestream_serve::model::ModelKind;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// assert_eq!(ModelKind::from_dir(dir.path()).unwrap(), ModelKind::Embedding);
    /// std::fs::write(
    ///     dir.path().join("config.json"),
    ///     r#"{"architectures": ["BertForSequenceClassification"],
    ///         "id2label": {"0": "negative", "1": "positive"}}"#,
    /// )
    /// .unwrap();
    /// assert_eq!(
    ///     ModelKind::from_dir(dir.path()).unwrap(),
    ///     ModelKind::Classifier { labels: vec!["negative".into(), "positive".into()], multi_label: false }
    /// );
    /// ```
    pub fn from_dir(dir: &Path) -> Result<ModelKind, String> {
        let path = dir.join("config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelKind::Embedding),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ModelKind::from_config(config).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_config(config: Config) -> Result<ModelKind, String> {
        let classifies = config
            .architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"));
        if !classifies {
            return Ok(ModelKind::Embedding);
        }
        let labels: Vec<String> = if config.id2label.is_empty() {
            // Hugging Face's default: two labels, LABEL_0 and LABEL_1.
            (0..config.num_labels.unwrap_or(2))
                .map(|i| format!("LABEL_{i}"))
                .collect()
        } else {
            let mut numbered = Vec::with_capacity(config.id2label.len());
            for (key, label) in &config.id2label {
                let i: usize = key
                    .parse()
                    .map_err(|_| format!("id2label key {key:?} is not a label number"))?;
                numbered.push((i, label.clone()));
            }
            numbered.sort();
            if numbered.iter().enumerate().any(|(n, (i, _))| n != *i) {
                return Err("id2label does not number its labels 0, 1, 2, ...".to_owned());
            }
            numbered.into_iter().map(|(_, label)| label).collect()
        };
        Ok(match labels.len() {
            0 => return Err("a sequence classifier with no labels".to_owned()),
            1 => ModelKind::Reranker,
            _ => ModelKind::Classifier {
                labels,
                multi_label: config.problem_type.as_deref() == Some("multi_label_classification"),
            },
        })
    }

    /// Its name, as `GET /info` gives it: `embedding`, `reranker` or `classifier`.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Reranker => "reranker",
            ModelKind::Classifier { .. } => "classifier",
        }
    }

    /// How many scores it answers per input (its output width), for a reranker or classifier.
    pub fn scores(&self) -> Option<usize> {
        match self {
            ModelKind::Embedding => None,
            ModelKind::Reranker => Some(1),
            ModelKind::Classifier { labels, .. } => Some(labels.len()),
        }
    }
}

/// The logistic function: a raw score (logit) as a probability.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Raw scores as one probability distribution (the largest subtracted first, so no overflow).
pub fn softmax(xs: &[f32]) -> Vec<f32> {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = xs.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(json: &str) -> Result<ModelKind, String> {
        ModelKind::from_config(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn architectures_and_labels_decide() {
        assert_eq!(
            kind(r#"{"architectures": ["BertModel"], "id2label": {"0": "a", "1": "b"}}"#),
            Ok(ModelKind::Embedding)
        );
        assert_eq!(
            kind(
                r#"{"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}"#
            ),
            Ok(ModelKind::Reranker)
        );
        assert_eq!(
            kind(r#"{"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1}"#),
            Ok(ModelKind::Reranker)
        );
        assert_eq!(
            kind(
                r#"{"architectures": ["BertForSequenceClassification"], "problem_type": "multi_label_classification",
                    "id2label": {"1": "b", "0": "a", "2": "c"}}"#
            ),
            Ok(ModelKind::Classifier {
                labels: vec!["a".into(), "b".into(), "c".into()],
                multi_label: true
            })
        );
        assert_eq!(
            kind(r#"{"architectures": ["BertForSequenceClassification"]}"#)
                .unwrap()
                .scores(),
            Some(2)
        );
        assert!(kind(r#"{"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "2": "c"}}"#).is_err());
        assert!(kind(
            r#"{"architectures": ["BertForSequenceClassification"], "id2label": {"x": "a"}}"#
        )
        .is_err());
    }

    #[test]
    fn probabilities() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        let p = softmax(&[1000.0, 1000.0, f32::NEG_INFINITY]);
        assert_eq!(p, [0.5, 0.5, 0.0]);
    }
}

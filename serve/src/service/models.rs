//! The models a service serves, by name, and which one a request reaches.
//!
//! One process may serve several models (`--model` repeated), each behind its own batcher
//! and streams. A request reaches one of them, in this order:
//!
//! 1. the model its path names (`/models/{name}/v1/embeddings`, `/models/{name}/rerank`, ...);
//! 2. the model its body names (OpenAI's and Cohere's `model` field), when one is served by
//!    that name; a name no model has is a 404 when several are served, and ignored when one
//!    is (clients send their own model names, as text-embeddings-inference ignores them);
//! 3. else the first model (in `--model` order) that answers the route: `/embed` reaches the
//!    first embedding model, `/rerank` the first reranker, `/predict` the first classifier;
//!    routes any model answers (`/tokenize`, `/decode`, `/info`) the first model.

#[cfg(doc)]
use crate::model::ModelKind;
use crate::service::failure::{Failure, FailureKind};
use crate::service::state::Loaded;

/// The loaded models, in the order they were given; at least one, names unique.
///
/// ```no_run
/// # fn models(first: corestream_serve::service::Loaded, second: corestream_serve::service::Loaded) {
/// use corestream_serve::service::Models;
///
/// let models = Models::new(vec![first, second]).expect("two models of distinct names");
/// // A request for a reranker that names no model reaches the first reranker.
/// let reranker = models.pick(None, None, Some("reranker")).unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct Models {
    list: Vec<Loaded>,
}

impl Models {
    /// `list`, if it is not empty and no two models share a name (else why not); each
    /// model's `/info` then lists every name ([`Info::models`](crate::service::Info::models)).
    pub fn new(mut list: Vec<Loaded>) -> Result<Models, String> {
        if list.is_empty() {
            return Err("no model to serve".to_owned());
        }
        for (i, model) in list.iter().enumerate() {
            let name = &model.info.model_id;
            if list[..i].iter().any(|m| &m.info.model_id == name) {
                return Err(format!(
                    "two models are named {name:?}: name them apart with --model NAME=PATH"
                ));
            }
        }
        let names: Vec<String> = list.iter().map(|m| m.info.model_id.clone()).collect();
        for model in &mut list {
            model.info.models.clone_from(&names);
        }
        Ok(Models { list })
    }

    /// The models, in the order they were given.
    pub fn iter(&self) -> std::slice::Iter<'_, Loaded> {
        self.list.iter()
    }

    /// How many models.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never: there is always at least one model.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first model given (what `/info` describes first).
    pub fn first(&self) -> &Loaded {
        &self.list[0]
    }

    /// The model served as `name`.
    pub fn get(&self, name: &str) -> Option<&Loaded> {
        self.list.iter().find(|m| m.info.model_id == name)
    }

    /// The model a request reaches (see the module's documentation): `path`, the name its
    /// path gives; `body`, the name its body gives; `kind`, the kind of model its route needs
    /// ([`ModelKind::name`]; `None`: any model answers it).
    ///
    /// # Errors
    ///
    /// A 404 `model_not_found` naming the served models when `path` names none of them, or
    /// `body` names none of several.
    pub fn pick(
        &self,
        path: Option<&str>,
        body: Option<&str>,
        kind: Option<&str>,
    ) -> Result<&Loaded, Failure> {
        if let Some(name) = path {
            return self.get(name).ok_or_else(|| self.not_found(name));
        }
        if let Some(name) = body {
            match self.get(name) {
                Some(model) => return Ok(model),
                None if self.len() > 1 => return Err(self.not_found(name)),
                None => {}
            }
        }
        Ok(kind
            .and_then(|kind| self.list.iter().find(|m| m.kind.name() == kind))
            .unwrap_or_else(|| self.first()))
    }

    fn not_found(&self, name: &str) -> Failure {
        let served: Vec<&str> = self.list.iter().map(|m| m.info.model_id.as_str()).collect();
        // The name is the client's own: shown as JSON shows a string, at most 100 chars.
        let shown: String = name.chars().take(100).collect();
        Failure::new(
            FailureKind::NotFound,
            "model_not_found",
            format!(
                "the model {shown:?} is not served here; this server serves {}",
                served.join(", ")
            ),
        )
    }
}

impl From<Loaded> for Models {
    fn from(mut model: Loaded) -> Models {
        model.info.models = vec![model.info.model_id.clone()];
        Models { list: vec![model] }
    }
}

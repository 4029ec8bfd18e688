//! [`Prompts`]: the texts a sentence-transformers model wants before its inputs
//! (`config_sentence_transformers.json`: `"prompts": {"query": "query: ", ...}`,
//! `"default_prompt_name"`), chosen per request by `prompt_name` or by the server's default
//! (`--default-prompt-name`, `--default-prompt`), as text-embeddings-inference does. E5, BGE,
//! GTE and Nomic models are trained with such prefixes; without them their vectors are worse.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The prompts of a model and the default one.
///
/// ```
/// use corestream_serve::model::Prompts;
///
/// let prompts = Prompts::from_json(r#"{"prompts": {"query": "query: ", "passage": "passage: "}}"#)
///     .unwrap()
///     .with_default(None, Some("passage"))
///     .unwrap();
/// assert_eq!(prompts.resolve(Some("query")).unwrap(), Some("query: "));
/// assert_eq!(prompts.resolve(None).unwrap(), Some("passage: ")); // the default
/// assert!(prompts.resolve(Some("title")).is_err());
/// assert_eq!(prompts.apply(Some("query: "), vec!["cats".into()]), vec!["query: cats".to_owned()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompts {
    named: BTreeMap<String, String>,
    /// The default prompt's name, when it is a named one.
    default_name: Option<String>,
    /// The default prompt's text.
    default: Option<String>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// The file sentence-transformers keeps the prompts in.
pub const PROMPTS_FILE: &str = "config_sentence_transformers.json";

impl Prompts {
    /// The prompts of the model directory `dir` (none when it has no [`PROMPTS_FILE`]).
    pub fn from_dir(dir: &Path) -> Result<Prompts, String> {
        let path = dir.join(PROMPTS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Prompts::from_json(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Prompts::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The prompts of a [`PROMPTS_FILE`]'s text; its `default_prompt_name` (if any) must be
    /// one of them.
    pub fn from_json(text: &str) -> Result<Prompts, String> {
        let config: Config = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Prompts {
            named: config.prompts,
            default_name: None,
            default: None,
        }
        .with_default(None, config.default_prompt_name.as_deref())
    }

    /// The same prompts with the server's default: a text (`--default-prompt`), or the name
    /// of one of them (`--default-prompt-name`); neither keeps the current default.
    pub fn with_default(
        mut self,
        text: Option<&str>,
        name: Option<&str>,
    ) -> Result<Prompts, String> {
        match (text, name) {
            (Some(_), Some(_)) => {
                return Err("give a default prompt or a default prompt name, not both".to_owned())
            }
            (Some(text), None) => {
                self.default = Some(text.to_owned());
                self.default_name = None;
            }
            (None, Some(name)) => {
                let text = self.named.get(name).ok_or_else(|| self.unknown(name))?;
                self.default = Some(text.clone());
                self.default_name = Some(name.to_owned());
            }
            (None, None) => {}
        }
        Ok(self)
    }

    fn unknown(&self, name: &str) -> String {
        if self.named.is_empty() {
            format!("prompt {name:?} is not configured: this model has no prompts")
        } else {
            format!(
                "prompt {name:?} is not configured; this model's prompts: {}",
                self.names().collect::<Vec<_>>().join(", ")
            )
        }
    }

    /// The prompt's names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }

    /// The default prompt's name, when it is a named one.
    pub fn default_name(&self) -> Option<&str> {
        self.default_name.as_deref()
    }

    /// The default prompt's text, if any.
    pub fn default_text(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// The prompt a request gets: the one it names (an error saying which exist, when
    /// unknown), else the default, else none.
    pub fn resolve(&self, name: Option<&str>) -> Result<Option<&str>, String> {
        match name {
            Some(name) => self
                .named
                .get(name)
                .map(|t| Some(t.as_str()))
                .ok_or_else(|| self.unknown(name)),
            None => Ok(self.default.as_deref()),
        }
    }

    /// `texts`, each after `prompt`.
    pub fn apply(&self, prompt: Option<&str>, texts: Vec<String>) -> Vec<String> {
        match prompt {
            Some(p) if !p.is_empty() => texts.into_iter().map(|t| format!("{p}{t}")).collect(),
            _ => texts,
        }
    }
}

//! How token vectors become one sentence vector: the pooling a sentence-transformers model
//! declares in its `1_Pooling/config.json` (`pooling_mode_mean_tokens`,
//! `pooling_mode_cls_token`, `pooling_mode_max_tokens`, `pooling_mode_lasttoken`), as
//! text-embeddings-inference reads it. Models without the file are mean-pooled.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// One pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The mean of the input's token vectors (padding excluded).
    #[default]
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the input's tokens.
    Max,
    /// The last (non-padding) token's vector, for decoder models.
    LastToken,
}

impl Pooling {
    /// The pooling `dir/1_Pooling/config.json` declares, and where it was read; mean pooling
    /// (`default`) when there is no such file. Several modes at once (sentence-transformers
    /// concatenates them) are refused.
    pub fn from_dir(dir: &Path) -> Result<(Pooling, String), String> {
        let path = dir.join("1_Pooling").join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok((Pooling::Mean, "default".to_owned()));
        };
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let modes: Vec<Pooling> = [
            ("pooling_mode_mean_tokens", Pooling::Mean),
            ("pooling_mode_cls_token", Pooling::Cls),
            ("pooling_mode_max_tokens", Pooling::Max),
            ("pooling_mode_lasttoken", Pooling::LastToken),
        ]
        .into_iter()
        .filter(|(key, _)| config.get(key).and_then(serde_json::Value::as_bool) == Some(true))
        .map(|(_, mode)| mode)
        .collect();
        match modes[..] {
            [mode] => Ok((mode, "1_Pooling/config.json".to_owned())),
            [] => Err(format!("{}: no pooling mode is set", path.display())),
            _ => Err(format!(
                "{}: several pooling modes at once ({}) are not supported",
                path.display(),
                modes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Pools `tokens` token vectors of `dim` values each (row-major, `tokens * dim`) into one.
    pub fn pool(self, hidden: impl Fn(usize, usize) -> f32, tokens: usize, dim: usize) -> Vec<f32> {
        match self {
            Pooling::Cls => (0..dim).map(|d| hidden(0, d)).collect(),
            Pooling::LastToken => (0..dim).map(|d| hidden(tokens.max(1) - 1, d)).collect(),
            Pooling::Mean => {
                let n = tokens.max(1) as f32;
                (0..dim)
                    .map(|d| (0..tokens).map(|t| hidden(t, d)).sum::<f32>() / n)
                    .collect()
            }
            Pooling::Max => (0..dim)
                .map(|d| {
                    (0..tokens)
                        .map(|t| hidden(t, d))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect(),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::LastToken => "last-token",
        })
    }
}

impl FromStr for Pooling {
    type Err = String;

    fn from_str(text: &str) -> Result<Pooling, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "last-token" | "lasttoken" | "last_token" => Ok(Pooling::LastToken),
            other => Err(format!(
                "pooling {other:?}: expected mean, cls, max or last-token"
            )),
        }
    }
}

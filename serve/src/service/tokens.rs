//! What the model sees of a text: its prompt, and the tokenizer's own routes (`POST /tokenize`,
//! `POST /decode`) in the service's terms.

use crate::model::tokenizer::{Keep, Token};
use crate::service::embedding::in_vocabulary;
use crate::service::{Failure, Loaded, Service};

impl Service {
    /// `texts` after the prompt named `name` (an unknown name is a 400 listing the model's
    /// prompts), or after the server's default prompt when `name` is `None`.
    pub fn prompted(
        &self,
        loaded: &Loaded,
        name: Option<&str>,
        texts: Vec<String>,
    ) -> Result<Vec<String>, Failure> {
        let prompt = loaded
            .prompts
            .resolve(name)
            .map_err(|m| Failure::bad_request("invalid_request", m))?;
        Ok(loaded.prompts.apply(prompt, texts))
    }

    /// The tokens of each text (special tokens added when `add_special`), with their byte
    /// offsets. Bounded like an embedding request: at most `--max-client-batch` texts, and
    /// at most that many times the model's longest input in tokens over all of them (else
    /// 413, found without tokenising a long text whole); large requests are tokenised off
    /// the HTTP threads.
    pub async fn tokens(
        &self,
        loaded: &Loaded,
        texts: Vec<String>,
        add_special: bool,
    ) -> Result<Vec<Vec<Token>>, Failure> {
        self.check_count(loaded, texts.len())?;
        let longest = loaded.info.max_input_length;
        let budget = loaded.info.max_client_batch_size.saturating_mul(longest);
        self.with_tokenizer(loaded, texts, move |tokenizer, texts| {
            let mut left = budget;
            let mut all = Vec::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                // A long text's first `left + 1` tokens say whether it fits, at the cost of
                // those tokens only.
                let ids = tokenizer
                    .encode_within(text, left.saturating_add(1), Keep::Start)
                    .map_err(|m| Failure::bad_request("invalid_request", m))?;
                if ids.len() > left {
                    return Err(Failure::too_large(
                        "too_many_tokens",
                        format!(
                            "input {i} takes the request past {budget} tokens, the most one \
                             request may tokenise (--max-client-batch x the model's \
                             {longest} tokens)"
                        ),
                    ));
                }
                let tokens = tokenizer
                    .tokens(text, add_special)
                    .map_err(|m| Failure::bad_request("invalid_request", m))?;
                left -= tokens.len().min(left);
                all.push(tokens);
            }
            Ok(all)
        })
        .await?
    }

    /// The text of each list of token ids (the special tokens left out when
    /// `skip_special`): at most `--max-client-batch` lists, each id in the vocabulary (400).
    pub fn decode(
        &self,
        loaded: &Loaded,
        ids: Vec<Vec<u32>>,
        skip_special: bool,
    ) -> Result<Vec<String>, Failure> {
        self.check_count(loaded, ids.len())?;
        ids.iter()
            .enumerate()
            .map(|(i, row)| {
                in_vocabulary(loaded, i, row)?;
                loaded
                    .tokenizer
                    .decode(row, skip_special)
                    .map_err(|m| Failure::bad_request("invalid_request", m))
            })
            .collect()
    }
}

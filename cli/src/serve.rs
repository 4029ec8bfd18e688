//! `corestream serve ...`: the embedding service of the `corestream-serve` crate (OpenAI
//! `/v1/embeddings`, text-embeddings-inference `/embed`, `/info`), with its own options (see
//! `corestream serve --help`). It runs until SIGTERM or Ctrl-C.

/// Runs the service; returns the exit status: 0 once it has shut down, 1 (after one
/// `error: ...` line on stderr) when it fails.
pub fn run(args: corestream_serve::Args) -> i32 {
    match corestream_serve::run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

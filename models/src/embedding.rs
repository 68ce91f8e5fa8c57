//! Sentence embeddings from a BERT-family encoder: `photon.models:SentenceEmbedding`.
//!
//! The model folder holds `config.json`, `tokenizer.json` and `model.safetensors` (optionally
//! `sentence_bert_config.json` for the maximum sequence length, as sentence-transformers
//! folders have). An embedding is the mean of the last hidden states over the attention mask
//! (padding excluded), L2-normalised; inputs longer than the maximum sequence length are
//! truncated. Requests go through a [`Batcher`]: concurrent requests share forward passes.

use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use photon_proto::v1 as pb;
use photon_replica::batch::{BatchHandler, Batcher};
use photon_replica::metrics::BatchMetrics;
use photon_replica::{BuildContext, Deployment, DeploymentError, Protocol, Reply, Request};
use prost::Message;
use serde::Serialize;
use serde_json::Value;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::api;
use crate::options::{self, Keys, ModelOptions};
use crate::worker::ModelWorker;

/// The files a model folder must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

const KEYS: Keys = Keys {
    location: "model_dir",
    location_help: "the folder holding config.json, tokenizer.json and model.safetensors",
    batching: true,
};

/// One input's embedding and how many tokens it used.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The unit-length embedding.
    pub vector: Vec<f32>,
    /// Tokens after truncation, special tokens included.
    pub tokens: usize,
}

/// A loaded encoder and its tokenizer.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    /// The longest input in tokens; longer ones are truncated.
    pub max_seq_len: usize,
}

fn load_error(dir: &Path, what: impl std::fmt::Display) -> DeploymentError {
    DeploymentError(format!("could not load the model in {}: {}", dir.display(), crate::first_line(&what)))
}

impl Embedder {
    /// Loads the model folder `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, DeploymentError> {
        for file in MODEL_FILES {
            if !dir.join(file).is_file() {
                return Err(load_error(dir, format!("{file} is missing (user_config.model_dir)")));
            }
        }
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| load_error(dir, format!("config.json: {e}")))?,
        )
        .map_err(|e| load_error(dir, format!("config.json: {e}")))?;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), device)
            .map_err(|e| load_error(dir, format!("model.safetensors: {e}")))?;
        let model = BertModel::load(VarBuilder::from_tensors(weights, DType::F32, device), &config)
            .map_err(|e| load_error(dir, format!("model.safetensors does not fit config.json: {e}")))?;

        // sentence-transformers' limit when the folder says; the model's own otherwise.
        let max_seq_len = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
            .map_or(config.max_position_embeddings, |n| n as usize)
            .min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_error(dir, format!("tokenizer.json: {e}")))?;
        // Exported tokenizer.json files often pin padding and truncation to the exporter's
        // settings (all-MiniLM-L6-v2's: 128); embeddings need the model's limit and padding to
        // the longest input of a batch only.
        let pad = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..pad }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_len, ..Default::default() }))
            .map_err(|e| load_error(dir, format!("tokenizer.json truncation: {e}")))?;
        Ok(Embedder { model, tokenizer, device: device.clone(), max_seq_len })
    }

    /// Embeds `texts` in one forward pass.
    pub fn embed(&mut self, texts: Vec<String>) -> Result<Vec<Embedded>, DeploymentError> {
        let n = texts.len();
        let encodings =
            self.tokenizer.encode_batch(texts, true).map_err(|e| DeploymentError(format!("tokenizer: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        let mut tokens = Vec::with_capacity(n);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            tokens.push(e.get_attention_mask().iter().filter(|&&m| m == 1).count());
        }
        let vectors = self.forward(ids, mask, n, len).map_err(|e| DeploymentError(format!("model: {e}")))?;
        Ok(vectors.into_iter().zip(tokens).map(|(vector, tokens)| Embedded { vector, tokens }).collect())
    }

    fn forward(&self, ids: Vec<u32>, mask: Vec<u32>, n: usize, len: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        // Mean over the real tokens, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

struct Loaded {
    options: ModelOptions,
    worker: Arc<ModelWorker<Embedder>>,
    batcher: Batcher<String, Embedded>,
}

/// The `photon.models:SentenceEmbedding` deployment.
pub struct SentenceEmbedding {
    ctx: BuildContext,
    loaded: RwLock<Option<Arc<Loaded>>>,
}

impl SentenceEmbedding {
    /// A deployment with no model yet: `reconfigure` loads it.
    pub fn new(ctx: &BuildContext) -> Self {
        SentenceEmbedding { ctx: ctx.clone(), loaded: RwLock::new(None) }
    }

    fn loaded(&self) -> Result<Arc<Loaded>, DeploymentError> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| DeploymentError("no model is loaded".into()))
    }

    fn batcher(&self, options: &ModelOptions, worker: Arc<ModelWorker<Embedder>>) -> Batcher<String, Embedded> {
        let handler: BatchHandler<String, Embedded> = Arc::new(move |texts: Vec<String>| {
            let worker = worker.clone();
            Box::pin(async move {
                let n = texts.len();
                match worker.run(move |m| m.embed(texts)).await.and_then(|r| r) {
                    Ok(out) => out.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e); n],
                }
            })
        });
        let metrics = BatchMetrics::new(&self.ctx.app, &self.ctx.deployment, &self.ctx.replica_id);
        Batcher::new(options.batch, metrics, handler)
    }

    async fn embed(&self, inputs: Vec<String>) -> Result<(Vec<Embedded>, String), DeploymentError> {
        let loaded = self.loaded()?;
        let out = loaded.batcher.submit_many(inputs).await.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok((out, loaded.options.model_name.clone()))
    }

    async fn http(&self, request: &Request) -> Result<Reply, DeploymentError> {
        let inputs = match parse_http(request) {
            Ok(inputs) => inputs,
            Err(message) => return Ok(api::bad_request(&message)),
        };
        let (out, model) = self.embed(inputs).await?;
        let usage = out.iter().map(|e| e.tokens).sum();
        let body = EmbeddingList {
            object: "list",
            data: out
                .into_iter()
                .enumerate()
                .map(|(index, e)| EmbeddingItem { object: "embedding", index, embedding: e.vector })
                .collect(),
            model,
            usage: Usage { prompt_tokens: usage, total_tokens: usage },
        };
        api::json_reply(&body)
    }

    async fn grpc(&self, request: &Request) -> Result<Reply, DeploymentError> {
        if request.method != "Embed" {
            return Err(DeploymentError(format!(
                "SentenceEmbedding has no gRPC method {:?} (it has Embed)",
                request.method
            )));
        }
        let input = pb::EmbedRequest::decode(request.body.clone())
            .map_err(|e| DeploymentError(format!("bad EmbedRequest: {e}")))?;
        if input.input.is_empty() {
            return Err(DeploymentError("EmbedRequest.input is empty".into()));
        }
        if input.input.len() > MAX_INPUTS {
            return Err(DeploymentError(format!(
                "EmbedRequest.input has {} items; at most {MAX_INPUTS} are accepted",
                input.input.len()
            )));
        }
        let (out, model) = self.embed(input.input).await?;
        let reply = pb::EmbedResponse {
            prompt_tokens: out.iter().map(|e| e.tokens as u32).sum(),
            data: out
                .into_iter()
                .enumerate()
                .map(|(i, e)| pb::Embedding { index: i as u32, embedding: e.vector })
                .collect(),
            model,
        };
        Ok(Reply::bytes(Bytes::from(reply.encode_to_vec()), None))
    }
}

/// OpenAI's limit on the inputs of one embeddings request.
const MAX_INPUTS: usize = 2048;

/// `{"input": "text" | ["a", "b"], ...}`; other keys (`model`, `encoding_format`) are ignored.
fn parse_http(request: &Request) -> Result<Vec<String>, String> {
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
            Err(format!("input has {} items; at most {MAX_INPUTS} are accepted", items.len()))
        }
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| format!("input[{i}] must be a string, got {v}")))
            .collect(),
        Some(Value::Array(_)) => Err("input is an empty list".into()),
        Some(other) => Err(format!("input must be a string or a list of strings, got {other}")),
        None => Err("the body has no \"input\" (a string or a list of strings)".into()),
    }
}

#[derive(Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[async_trait::async_trait]
impl Deployment for SentenceEmbedding {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        match request.protocol {
            Protocol::Http => self.http(&request).await,
            Protocol::Grpc => self.grpc(&request).await,
        }
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let options = options::parse(user_config, KEYS)?;
        let current = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let worker = match current {
            Some(c) if c.options.same_model(&options) => {
                if c.options == options {
                    return Ok(());
                }
                c.worker.clone()
            }
            _ => {
                let (dir, device) = (options.location.clone(), options.device);
                let name = format!("model-{}", self.ctx.deployment);
                // Jobs are whole batches; a few may wait behind the running one.
                let queue = 4 * options.batch.max_concurrent_batches;
                Arc::new(ModelWorker::load(&name, queue, move || Embedder::load(&dir, &device.open()?)).await?)
            }
        };
        let batcher = self.batcher(&options, worker.clone());
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(Loaded { options, worker, batcher }));
        Ok(())
    }

    async fn check_health(&self) -> Result<(), DeploymentError> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(Ok(()), |l| l.worker.check())
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn request(body: Vec<u8>) -> Request {
        Request {
            protocol: photon_replica::Protocol::Http,
            request_id: String::new(),
            method: "__call__".into(),
            http_method: "POST".into(),
            path: "/".into(),
            route_prefix: "/".into(),
            query: String::new(),
            headers: http::HeaderMap::new(),
            body: body.into(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any embeddings request parses or is refused with a reason, never a panic, and never
        /// yields more than OpenAI's 2,048 inputs.
        #[test]
        fn embedding_requests_parse_without_panic(raw in prop::collection::vec(any::<u8>(), 0..64),
                                                  text in "\\PC{0,4}", count in 0usize..2100, numbers in any::<bool>()) {
            let _ = parse_http(&request(raw));
            let input: Vec<serde_json::Value> = (0..count)
                .map(|i| if numbers && i == 0 { serde_json::json!(i) } else { serde_json::json!(text) }).collect();
            if let Ok(texts) = parse_http(&request(serde_json::json!({"input": input}).to_string().into_bytes())) {
                prop_assert!(!texts.is_empty() && texts.len() <= MAX_INPUTS);
            }
        }
    }
}

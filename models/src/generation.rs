//! Text generation from a quantized llama-family GGUF file: `photon.models:TextGeneration`.
//!
//! The GGUF file is the whole model: weights and tokenizer (see [`crate::gguf_tokenizer`]).
//! One sequence runs at a time on the model thread; requests wait their turn in its queue.
//! Decoding is greedy at `temperature: 0`, otherwise sampled (with `top_p` when below 1) from a
//! seeded generator: the same prompt, parameters and seed give the same text. Text goes out as
//! it is produced: as server-sent events over HTTP with `stream: true`, as a server stream over
//! gRPC (`CompleteStream`).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use photon_proto::v1 as pb;
use photon_replica::{BuildContext, ChunkStream, Deployment, DeploymentError, Piece, Protocol, Reply, Request};
use prost::Message;
use serde::Serialize;
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use crate::api;
use crate::gguf_tokenizer;
use crate::options::{self, Keys, ModelOptions};
use crate::worker::ModelWorker;

const KEYS: Keys = Keys { location: "model_path", location_help: "a GGUF file (llama family)", batching: false };

/// OpenAI's default `max_tokens` for completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// 0 decodes greedily.
    pub temperature: f64,
    /// Nucleus sampling mass; 1 samples from the whole distribution.
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Text that ends the completion when generated (not included in it).
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-sequence token.
    Stop,
    /// `max_tokens` were produced, or the context is full.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What the model thread reports while it generates, in this order: `Started` (or `Rejected`),
/// any number of `Text`, then `Done` (or `Failed`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt fits; `prompt_tokens` long.
    Started {
        /// Prompt length in tokens.
        prompt_tokens: usize,
    },
    /// The request cannot be served as asked (the message says why); nothing was generated.
    Rejected(String),
    /// The next piece of text.
    Text(String),
    /// Generation ended.
    Done {
        /// Why.
        finish: Finish,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The model failed part-way.
    Failed(String),
}

/// A loaded GGUF model and its tokenizer.
pub struct Generator {
    model: ModelWeights,
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    bos: Option<u32>,
    /// Prompt plus completion may not exceed this many tokens.
    pub context_length: usize,
    device: Device,
}

fn load_error(path: &Path, what: impl std::fmt::Display) -> DeploymentError {
    DeploymentError(format!("could not load the model {}: {}", path.display(), crate::first_line(&what)))
}

impl Generator {
    /// Loads the GGUF file at `path` onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, DeploymentError> {
        let mut file =
            std::fs::File::open(path).map_err(|e| load_error(path, format!("{e} (user_config.model_path)")))?;
        // Checked here so that no error quotes the bytes of a file that is not a model.
        let mut magic = [0u8; 4];
        let is_gguf = std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"GGUF";
        if !is_gguf {
            return Err(load_error(path, "not a GGUF file (user_config.model_path)"));
        }
        std::io::Seek::rewind(&mut file).map_err(|e| load_error(path, e))?;
        let content =
            gguf_file::Content::read(&mut file).map_err(|e| load_error(path, format!("not a GGUF file: {e}")))?;
        let tok = gguf_tokenizer::from_gguf(&content).map_err(|e| load_error(path, e))?;
        let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        let context_length = content
            .metadata
            .get(&format!("{}.context_length", arch.as_deref().unwrap_or("llama")))
            .and_then(|v| v.to_u32().ok())
            .map_or(2048, |n| n as usize)
            // candle's llama precomputes rotary embeddings for this many positions only.
            .min(candle_transformers::models::quantized_llama::MAX_SEQ_LEN);
        if arch.as_deref() != Some("llama") {
            return Err(load_error(
                path,
                format!("general.architecture is {arch:?}; Photon runs \"llama\" GGUF files"),
            ));
        }
        let model = ModelWeights::from_gguf(content, &mut file, device).map_err(|e| load_error(path, e))?;
        Ok(Generator {
            model,
            tokenizer: tok.tokenizer,
            stop_ids: tok.stop_ids,
            bos: tok.bos,
            context_length,
            device: device.clone(),
        })
    }

    /// Generates a completion of `prompt`, reporting through `emit`; stops early when `emit`
    /// returns false (nobody is listening any more).
    pub fn generate(&mut self, prompt: &str, params: &GenerateParams, emit: &mut dyn FnMut(Event) -> bool) {
        let mut tokens = match self.tokenizer.encode(prompt, false) {
            Ok(e) => e.get_ids().to_vec(),
            Err(e) => {
                emit(Event::Rejected(format!("the prompt could not be tokenised: {e}")));
                return;
            }
        };
        if let Some(bos) = self.bos {
            tokens.insert(0, bos);
        }
        if tokens.is_empty() {
            emit(Event::Rejected("prompt is empty".into()));
            return;
        }
        let prompt_tokens = tokens.len();
        // Compared without adding: a max_tokens near u64::MAX wrapped the sum.
        if params.max_tokens > self.context_length.saturating_sub(prompt_tokens) {
            emit(Event::Rejected(format!(
                "prompt ({prompt_tokens} tokens) plus max_tokens ({}) exceeds the model's context of {} tokens",
                params.max_tokens, self.context_length
            )));
            return;
        }
        if !emit(Event::Started { prompt_tokens }) {
            return;
        }
        match self.decode_loop(tokens, params, emit) {
            Ok(Some(done)) => {
                emit(done);
            }
            Ok(None) => {}
            Err(e) => {
                emit(Event::Failed(format!("model: {e}")));
            }
        }
    }

    /// The token loop; `None` when the listener went away.
    fn decode_loop(
        &mut self,
        prompt: Vec<u32>,
        params: &GenerateParams,
        emit: &mut dyn FnMut(Event) -> bool,
    ) -> candle_core::Result<Option<Event>> {
        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else if params.top_p < 1.0 {
            Sampling::TopP { p: params.top_p, temperature: params.temperature }
        } else {
            Sampling::All { temperature: params.temperature }
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        let mut generated: Vec<u32> = Vec::with_capacity(params.max_tokens);
        let mut sent = 0; // bytes of the decoded text already emitted
        let mut text = String::new();
        let mut input = prompt;
        let mut position = 0;
        while generated.len() < params.max_tokens {
            let x = Tensor::new(input.as_slice(), &self.device)?.unsqueeze(0)?;
            let logits = self.model.forward(&x, position)?.squeeze(0)?.to_dtype(DType::F32)?;
            position += input.len();
            let next = sampler.sample(&logits)?;
            if self.stop_ids.contains(&next) {
                return Ok(Some(Event::Done { finish: Finish::Stop, completion_tokens: generated.len() }));
            }
            generated.push(next);
            input = vec![next];
            text = self.tokenizer.decode(&generated, true).map_err(candle_core::Error::msg)?;
            if let Some(cut) = params.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                if let Some(delta) = text.get(sent..cut).filter(|d| !d.is_empty()) {
                    if !emit(Event::Text(delta.to_string())) {
                        return Ok(None);
                    }
                }
                return Ok(Some(Event::Done { finish: Finish::Stop, completion_tokens: generated.len() }));
            }
            // Hold back a piece that ends inside a multi-byte character until it is complete,
            // and one that may be the start of a stop string until it is known not to be.
            if text.ends_with('\u{FFFD}') {
                continue;
            }
            let end = emittable_end(&text, &params.stop);
            if let Some(delta) = text.get(sent..end).filter(|d| !d.is_empty()) {
                if !emit(Event::Text(delta.to_string())) {
                    return Ok(None);
                }
                sent = end;
            }
        }
        if let Some(rest) = text.get(sent..).filter(|d| !d.is_empty() && !d.ends_with('\u{FFFD}')) {
            if !emit(Event::Text(rest.to_string())) {
                return Ok(None);
            }
        }
        Ok(Some(Event::Done { finish: Finish::Length, completion_tokens: generated.len() }))
    }
}

/// Where `text` may be emitted up to: before the longest tail that is a proper start of a stop
/// string.
pub(crate) fn emittable_end(text: &str, stop: &[String]) -> usize {
    let held = stop
        .iter()
        .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k])))
        .max()
        .unwrap_or(0);
    let mut end = text.len() - held;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

struct Loaded {
    options: ModelOptions,
    worker: Arc<ModelWorker<Generator>>,
}

/// The `photon.models:TextGeneration` deployment.
pub struct TextGeneration {
    ctx: BuildContext,
    loaded: RwLock<Option<Arc<Loaded>>>,
}

/// A parsed completion request.
struct Completion {
    prompt: String,
    params: GenerateParams,
    stream: bool,
}

fn number(body: &Value, key: &str, default: f64, ok: impl Fn(f64) -> bool, want: &str) -> Result<f64, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().filter(|x| ok(*x)).ok_or_else(|| format!("{key} must be {want}, got {v}")),
    }
}

fn params_from(
    max_tokens: Option<u64>,
    temperature: f64,
    top_p: f64,
    seed: Option<u64>,
    stop: Vec<String>,
) -> Result<GenerateParams, String> {
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err("stop must be at most 4 non-empty strings".into());
    }
    let max_tokens = max_tokens.map_or(Ok(DEFAULT_MAX_TOKENS), |n| {
        if n >= 1 {
            Ok(n as usize)
        } else {
            Err("max_tokens must be at least 1".to_string())
        }
    })?;
    if !(0.0..=100.0).contains(&temperature) {
        return Err(format!("temperature must be between 0 and 100, got {temperature}"));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(format!("top_p must be in (0, 1], got {top_p}"));
    }
    Ok(GenerateParams { max_tokens, temperature, top_p, seed: seed.unwrap_or_else(|| fastrand::u64(..)), stop })
}

/// OpenAI's completion request: `prompt` (a string, or a list holding one), `max_tokens`,
/// `temperature`, `top_p`, `seed`, `stop`, `stream`; other keys (`model`, ...) are ignored.
fn parse_http(body: &[u8]) -> Result<Completion, String> {
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => items[0].as_str().unwrap_or("").into(),
        Some(Value::Array(_)) => return Err("prompt must be one string (lists of prompts are not supported)".into()),
        Some(other) => return Err(format!("prompt must be a string, got {other}")),
        None => return Err("the body has no \"prompt\"".into()),
    };
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| format!("max_tokens must be a positive integer, got {v}"))?),
    };
    let temperature = number(&body, "temperature", 1.0, |_| true, "a number")?;
    let top_p = number(&body, "top_p", 1.0, |_| true, "a number")?;
    let seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| format!("seed must be a non-negative integer, got {v}"))?),
    };
    let stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("stop must hold strings, got {v}")))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("stop must be a string or a list of strings, got {other}")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(format!("stream must be true or false, got {v}")),
    };
    Ok(Completion { prompt, params: params_from(max_tokens, temperature, top_p, seed, stop)?, stream })
}

fn parse_grpc(body: &Bytes) -> Result<Completion, String> {
    let req = pb::CompletionRequest::decode(body.clone()).map_err(|e| format!("bad CompletionRequest: {e}"))?;
    let params = params_from(
        req.max_tokens.map(u64::from),
        req.temperature.map_or(1.0, f64::from),
        req.top_p.map_or(1.0, f64::from),
        req.seed,
        req.stop,
    )?;
    Ok(Completion { prompt: req.prompt, params, stream: false })
}

#[derive(Serialize)]
struct Choice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

fn completion_json(id: &str, created: u64, model: &str, text: &str, finish: Option<Finish>) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [Choice { text, index: 0, logprobs: None, finish_reason: finish.map(Finish::as_str) }],
    })
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens})
}

impl TextGeneration {
    /// A deployment with no model yet: `reconfigure` loads it.
    pub fn new(ctx: &BuildContext) -> Self {
        TextGeneration { ctx: ctx.clone(), loaded: RwLock::new(None) }
    }

    /// Queues the completion on the model thread; answers its events, or the reason it was
    /// rejected.
    async fn start(
        &self,
        completion: Completion,
    ) -> Result<Result<(usize, mpsc::Receiver<Event>, String), String>, DeploymentError> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or("no model is loaded")?;
        let (tx, mut events) = mpsc::channel(64);
        let Completion { prompt, params, .. } = completion;
        loaded
            .worker
            .spawn(move |g| g.generate(&prompt, &params, &mut |event| tx.blocking_send(event).is_ok()))
            .await?;
        match events.recv().await {
            Some(Event::Started { prompt_tokens }) => {
                Ok(Ok((prompt_tokens, events, loaded.options.model_name.clone())))
            }
            Some(Event::Rejected(why)) => Ok(Err(why)),
            other => Err(DeploymentError(format!("the model thread answered {other:?} before starting"))),
        }
    }

    async fn http(&self, request: &Request) -> Result<Reply, DeploymentError> {
        let completion = match parse_http(&request.body) {
            Ok(c) => c,
            Err(why) => return Ok(api::bad_request(&why)),
        };
        let stream = completion.stream;
        let (prompt_tokens, mut events, model) = match self.start(completion).await? {
            Ok(started) => started,
            Err(why) => return Ok(api::bad_request(&why)),
        };
        let id = format!("cmpl-{}", request.request_id);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if stream {
            let chunks: ChunkStream = Box::pin(async_stream(events, move |event| match event {
                Event::Text(text) => Some(Ok(Piece::Chunk(sse(&completion_json(&id, created, &model, &text, None))))),
                Event::Done { finish, completion_tokens } => {
                    let mut last = completion_json(&id, created, &model, "", Some(finish));
                    last["usage"] = usage(prompt_tokens, completion_tokens);
                    let mut bytes = sse(&last).to_vec();
                    bytes.extend_from_slice(b"data: [DONE]\n\n");
                    Some(Ok(Piece::Chunk(Bytes::from(bytes))))
                }
                Event::Failed(why) => Some(Err(DeploymentError(why))),
                Event::Started { .. } | Event::Rejected(_) => None,
            }));
            return Ok(Reply::stream("text/event-stream", chunks));
        }
        let (text, finish, completion_tokens) = whole(&mut events).await?;
        let mut body = completion_json(&id, created, &model, &text, Some(finish));
        body["usage"] = usage(prompt_tokens, completion_tokens);
        api::json_reply(&body)
    }

    async fn grpc(&self, request: &Request) -> Result<Reply, DeploymentError> {
        let streamed = match request.method.as_str() {
            "Complete" => false,
            "CompleteStream" => true,
            other => {
                return Err(DeploymentError(format!(
                    "TextGeneration has no gRPC method {other:?} (it has Complete and CompleteStream)"
                )))
            }
        };
        let completion = parse_grpc(&request.body).map_err(DeploymentError)?;
        let (prompt_tokens, mut events, _) = self.start(completion).await?.map_err(DeploymentError)?;
        let message = move |text: String, finish: Option<Finish>, completion_tokens: usize| {
            Bytes::from(
                pb::CompletionResponse {
                    text,
                    finish_reason: finish.map_or("", Finish::as_str).to_string(),
                    prompt_tokens: prompt_tokens as u32,
                    completion_tokens: completion_tokens as u32,
                }
                .encode_to_vec(),
            )
        };
        if streamed {
            let chunks: ChunkStream = Box::pin(async_stream(events, move |event| match event {
                Event::Text(text) => Some(Ok(Piece::Chunk(message(text, None, 0)))),
                Event::Done { finish, completion_tokens } => {
                    Some(Ok(Piece::Chunk(message(String::new(), Some(finish), completion_tokens))))
                }
                Event::Failed(why) => Some(Err(DeploymentError(why))),
                Event::Started { .. } | Event::Rejected(_) => None,
            }));
            return Ok(Reply::stream("application/grpc", chunks));
        }
        let (text, finish, completion_tokens) = whole(&mut events).await?;
        Ok(Reply::bytes(message(text, Some(finish), completion_tokens), None))
    }
}

/// The whole completion: its text, why it ended and how many tokens it took.
async fn whole(events: &mut mpsc::Receiver<Event>) -> Result<(String, Finish, usize), DeploymentError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, completion_tokens } => return Ok((text, finish, completion_tokens)),
            Event::Failed(why) => return Err(DeploymentError(why)),
            Event::Started { .. } | Event::Rejected(_) => {}
        }
    }
    Err(DeploymentError("the model thread stopped part-way".into()))
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The events as a stream of chunks: `f` maps each event to a chunk, or to nothing. Dropping
/// the stream (the client went away) closes the channel, which stops the generation.
fn async_stream(
    events: mpsc::Receiver<Event>,
    f: impl FnMut(Event) -> Option<Result<Piece, DeploymentError>> + Send + 'static,
) -> impl tokio_stream::Stream<Item = Result<Piece, DeploymentError>> + Send + 'static {
    tokio_stream::StreamExt::filter_map(tokio_stream::wrappers::ReceiverStream::new(events), f)
}

#[async_trait::async_trait]
impl Deployment for TextGeneration {
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
            Some(c) if c.options.same_model(&options) => c.worker.clone(),
            _ => {
                let (path, device) = (options.location.clone(), options.device);
                let name = format!("model-{}", self.ctx.deployment);
                Arc::new(ModelWorker::load(&name, 256, move || Generator::load(&path, &device.open()?)).await?)
            }
        };
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(Loaded { options, worker }));
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

    fn number() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(
                |f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            ),
            Just(serde_json::Value::Null),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Any completion request parses or is refused with a reason, never a panic.
        #[test]
        fn completion_requests_parse_without_panic(raw in prop::collection::vec(any::<u8>(), 0..64),
                                                  prompt in "\\PC{0,16}", max_tokens in number(), temperature in number(),
                                                  top_p in number(), seed in number(), stop in number()) {
            let _ = parse_http(&raw);
            let _ = parse_grpc(&Bytes::from(raw));
            let body = serde_json::json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "seed": seed, "stop": stop, "stream": false});
            let _ = parse_http(body.to_string().as_bytes());
        }
    }
}

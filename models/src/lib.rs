//! Model deployments on candle, without Python: `photon.models:SentenceEmbedding` (a BERT-family
//! encoder with dynamic batching) and `photon.models:TextGeneration` (a quantized llama-family
//! GGUF model, streaming its text). Both take their model from `user_config` (see
//! [`options`]), run it on a thread of its own (see [`worker`]), and answer OpenAI-style JSON
//! over HTTP and `photon.v1` messages over gRPC.

#![warn(missing_docs)]

mod api;
pub mod embedding;
pub mod generation;
pub mod gguf_tokenizer;
pub mod options;
pub mod tiny;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use photon_replica::{AppDef, DeploymentDef};
use serde_json::json;

pub use embedding::{Embedder, SentenceEmbedding};
pub use generation::{Generator, TextGeneration};

/// The applications this crate adds to a replica binary's registry.
pub fn apps() -> Vec<AppDef> {
    vec![
        AppDef {
            import_path: "photon.models:SentenceEmbedding",
            ingress: "SentenceEmbedding",
            deployments: vec![DeploymentDef {
                name: "SentenceEmbedding",
                defaults: json!({"name": "SentenceEmbedding"}),
                build: |ctx| Ok(Arc::new(SentenceEmbedding::new(ctx))),
            }],
        },
        AppDef {
            import_path: "photon.models:TextGeneration",
            ingress: "TextGeneration",
            deployments: vec![DeploymentDef {
                name: "TextGeneration",
                defaults: json!({"name": "TextGeneration"}),
                build: |ctx| Ok(Arc::new(TextGeneration::new(ctx))),
            }],
        },
    ]
}

/// The first line of an error: what a status message says of a library's error, never the
/// backtrace some (candle's) append below it.
pub(crate) fn first_line(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().trim_end().to_string()
}

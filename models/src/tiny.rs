//! Tiny random-weight models in the real file formats, so tests everywhere exercise the real
//! loading and inference code without downloading weights: a 2-layer BERT folder
//! (`config.json`, `tokenizer.json` with the exporter-pinned padding and truncation that real
//! folders have, `model.safetensors`, `sentence_bert_config.json`) and a 2-layer llama GGUF
//! file (Q4_1 weights, byte-level BPE tokenizer in its metadata).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value as Meta;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::gguf_tokenizer::byte_chars;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const BERT_HIDDEN: usize = 32;
const BERT_LAYERS: usize = 2;
const BERT_INTERMEDIATE: usize = 64;
const BERT_POSITIONS: usize = 64;
/// The `max_seq_length` written to the tiny BERT's `sentence_bert_config.json`.
pub const BERT_MAX_SEQ: usize = 24;

fn randn(shape: &[usize], scale: f64) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, scale as f32, shape, &Device::Cpu)
}

fn layer_norm(tensors: &mut HashMap<String, Tensor>, prefix: &str, size: usize) -> candle_core::Result<()> {
    tensors.insert(format!("{prefix}.weight"), (randn(&[size], 0.05)? + 1.0)?);
    tensors.insert(format!("{prefix}.bias"), randn(&[size], 0.05)?);
    Ok(())
}

fn dense(tensors: &mut HashMap<String, Tensor>, prefix: &str, out: usize, inp: usize) -> candle_core::Result<()> {
    tensors.insert(format!("{prefix}.weight"), randn(&[out, inp], 0.2)?);
    tensors.insert(format!("{prefix}.bias"), randn(&[out], 0.05)?);
    Ok(())
}

/// Writes a random 2-layer BERT sentence-embedding folder into `dir`.
pub fn write_bert(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "'"].iter().map(|s| s.to_string()).collect();
    for c in 'a'..='z' {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for word in ["the", "weather", "is", "lovely", "today", "it", "so", "sunny", "outside", "he", "drove", "to"] {
        vocab.push(word.to_string());
    }
    let ids: tokenizers::models::bpe::Vocab = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let wordpiece = WordPiece::builder().vocab(ids).unk_token("[UNK]".into()).build()?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer.with_normalizer(Some(BertNormalizer::default()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2))));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    // As exported folders often have: pinned to a length other than the model's.
    tokenizer.with_truncation(Some(TruncationParams { max_length: 8, ..Default::default() }))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(8),
        pad_token: "[PAD]".into(),
        ..Default::default()
    }));
    tokenizer.save(dir.join("tokenizer.json"), false)?;

    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab.len(),
        "hidden_size": BERT_HIDDEN, "num_hidden_layers": BERT_LAYERS, "num_attention_heads": 4,
        "intermediate_size": BERT_INTERMEDIATE, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": BERT_POSITIONS,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    std::fs::write(dir.join("sentence_bert_config.json"), json!({"max_seq_length": BERT_MAX_SEQ}).to_string())?;

    let mut t = HashMap::new();
    t.insert("embeddings.word_embeddings.weight".to_string(), randn(&[vocab.len(), BERT_HIDDEN], 0.5)?);
    t.insert("embeddings.position_embeddings.weight".to_string(), randn(&[BERT_POSITIONS, BERT_HIDDEN], 0.1)?);
    t.insert("embeddings.token_type_embeddings.weight".to_string(), randn(&[2, BERT_HIDDEN], 0.1)?);
    layer_norm(&mut t, "embeddings.LayerNorm", BERT_HIDDEN)?;
    for i in 0..BERT_LAYERS {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            dense(&mut t, &format!("{p}.attention.self.{part}"), BERT_HIDDEN, BERT_HIDDEN)?;
        }
        dense(&mut t, &format!("{p}.attention.output.dense"), BERT_HIDDEN, BERT_HIDDEN)?;
        layer_norm(&mut t, &format!("{p}.attention.output.LayerNorm"), BERT_HIDDEN)?;
        dense(&mut t, &format!("{p}.intermediate.dense"), BERT_INTERMEDIATE, BERT_HIDDEN)?;
        dense(&mut t, &format!("{p}.output.dense"), BERT_HIDDEN, BERT_INTERMEDIATE)?;
        layer_norm(&mut t, &format!("{p}.output.LayerNorm"), BERT_HIDDEN)?;
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    Ok(())
}

const LLAMA_EMBED: usize = 64;
const LLAMA_HEADS: usize = 4;
const LLAMA_KV_HEADS: usize = 2;
const LLAMA_FFN: usize = 128;
const LLAMA_LAYERS: usize = 2;
/// The context length written to the tiny llama's metadata.
pub const LLAMA_CONTEXT: u32 = 128;
/// The tiny llama's special tokens, after the 256 byte tokens and the merged ones.
pub const LLAMA_SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Writes a random 2-layer llama GGUF file (Q4_1) with a byte-level BPE tokenizer to `path`.
pub fn write_llama_gguf(path: &Path) -> Result<(), BoxError> {
    let chars = byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let space = chars[b' ' as usize];
    let merge_pairs =
        [(format!("{space}"), "t".to_string()), ("h".into(), "e".into()), (format!("{space}t"), "he".into())];
    let mut merges = Vec::new();
    for (a, b) in &merge_pairs {
        tokens.push(format!("{a}{b}"));
        merges.push(Meta::String(format!("{a} {b}")));
    }
    let mut token_types = vec![Meta::I32(1); tokens.len()];
    for special in LLAMA_SPECIAL {
        tokens.push(special.to_string());
        token_types.push(Meta::I32(3));
    }
    let vocab = tokens.len();
    let eos = (vocab - 1) as u32;

    let head_dim = LLAMA_EMBED / LLAMA_HEADS;
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    let q =
        |shape: &[usize]| -> candle_core::Result<QTensor> { QTensor::quantize(&randn(shape, 0.3)?, GgmlDType::Q4_1) };
    let norm = || -> candle_core::Result<QTensor> {
        QTensor::quantize(&(randn(&[LLAMA_EMBED], 0.05)? + 1.0)?.to_dtype(DType::F32)?, GgmlDType::F32)
    };
    qtensors.push(("token_embd.weight".into(), q(&[vocab, LLAMA_EMBED])?));
    qtensors.push(("output_norm.weight".into(), norm()?));
    qtensors.push(("output.weight".into(), q(&[vocab, LLAMA_EMBED])?));
    for i in 0..LLAMA_LAYERS {
        let p = format!("blk.{i}");
        qtensors.push((format!("{p}.attn_q.weight"), q(&[LLAMA_EMBED, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.attn_k.weight"), q(&[LLAMA_KV_HEADS * head_dim, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.attn_v.weight"), q(&[LLAMA_KV_HEADS * head_dim, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.attn_output.weight"), q(&[LLAMA_EMBED, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.ffn_gate.weight"), q(&[LLAMA_FFN, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.ffn_up.weight"), q(&[LLAMA_FFN, LLAMA_EMBED])?));
        qtensors.push((format!("{p}.ffn_down.weight"), q(&[LLAMA_EMBED, LLAMA_FFN])?));
        qtensors.push((format!("{p}.attn_norm.weight"), norm()?));
        qtensors.push((format!("{p}.ffn_norm.weight"), norm()?));
    }

    let metadata: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::String("llama".into())),
        ("general.name", Meta::String("photon-tiny-llama".into())),
        ("llama.block_count", Meta::U32(LLAMA_LAYERS as u32)),
        ("llama.context_length", Meta::U32(LLAMA_CONTEXT)),
        ("llama.embedding_length", Meta::U32(LLAMA_EMBED as u32)),
        ("llama.feed_forward_length", Meta::U32(LLAMA_FFN as u32)),
        ("llama.attention.head_count", Meta::U32(LLAMA_HEADS as u32)),
        ("llama.attention.head_count_kv", Meta::U32(LLAMA_KV_HEADS as u32)),
        ("llama.rope.dimension_count", Meta::U32(head_dim as u32)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::String("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::String("smollm".into())),
        ("tokenizer.ggml.tokens", Meta::Array(tokens.into_iter().map(Meta::String).collect())),
        ("tokenizer.ggml.token_type", Meta::Array(token_types)),
        ("tokenizer.ggml.merges", Meta::Array(merges)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(eos)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
    ];
    let metadata_refs: Vec<(&str, &Meta)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path)?;
    candle_core::quantized::gguf_file::write(&mut file, &metadata_refs, &tensor_refs)?;
    Ok(())
}

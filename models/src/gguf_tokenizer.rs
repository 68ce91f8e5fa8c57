//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`), rebuilt as a Hugging
//! Face `tokenizers` tokenizer, so a GGUF file is the whole model.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE: GPT-2, SmolLM, Qwen, Llama 3
//! style vocabularies). SentencePiece vocabularies (`"llama"`) are refused with that reason.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A GGUF file's tokenizer and its special tokens.
pub struct GgufTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Tokens that end a sequence: the end-of-sequence token and every control token.
    pub stop_ids: Vec<u32>,
    /// The token to put first, when the file says to (`tokenizer.ggml.add_bos_token`).
    pub bos: Option<u32>,
}

fn get<'a>(content: &'a Content, key: &str) -> Result<&'a Value, String> {
    content.metadata.get(key).ok_or_else(|| format!("the file has no {key}"))
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>, String> {
    get(content, key)?
        .to_vec()
        .map_err(|e| format!("{key}: {e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// Builds the tokenizer from `content`'s metadata.
pub fn from_gguf(content: &Content) -> Result<GgufTokenizer, String> {
    let model = get(content, "tokenizer.ggml.model")?.to_string().map_err(|e| e.to_string())?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model is {model:?}; Photon reads byte-level BPE (\"gpt2\") tokenizers from GGUF files"
        ));
    }
    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let merges = strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or(format!("bad merge {m:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| format!("BPE vocabulary: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let byte_level = ByteLevel::new(false, true, true);
    let pre = content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str);
    // SmolLM and StarCoder vocabularies split digits one by one before the byte-level split.
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        Some("smollm" | "starcoder" | "refact") => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        _ => byte_level.into(),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec().map_err(|e| e.to_string())?.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let mut special = Vec::new();
    let mut stop_ids = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(&types).enumerate() {
        if *kind == TOKEN_TYPE_CONTROL || *kind == TOKEN_TYPE_USER_DEFINED {
            special.push(AddedToken::from(token.clone(), true));
        }
        if *kind == TOKEN_TYPE_CONTROL {
            stop_ids.push(id as u32);
        }
    }
    tokenizer.add_special_tokens(special).map_err(|e| format!("special tokens: {e}"))?;
    let id_of = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
    if let Some(eos) = id_of("tokenizer.ggml.eos_token_id") {
        if !stop_ids.contains(&eos) {
            stop_ids.push(eos);
        }
    }
    let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    let bos = if add_bos { id_of("tokenizer.ggml.bos_token_id") } else { None };
    Ok(GgufTokenizer { tokenizer, stop_ids, bos })
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the others are moved
/// to code points from 256 on, so every byte sequence is a string of visible characters.
pub fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below 0x200")
        };
    }
    table
}

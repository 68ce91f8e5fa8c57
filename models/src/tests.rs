//! The loading and inference code on the tiny random-weight models, in process.

use candle_core::Device;

use crate::generation::{Event, Finish, GenerateParams, Generator};
use crate::{tiny, Embedder};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("photon-models-{name}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn embeddings_are_unit_length_truncated_and_the_same_batched_or_alone() {
    let dir = scratch("bert");
    tiny::write_bert(&dir).unwrap();
    let mut embedder = Embedder::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(embedder.max_seq_len, tiny::BERT_MAX_SEQ, "sentence_bert_config.json sets the limit");
    let texts: Vec<String> =
        ["the weather is lovely today.", "he drove", &"it is so sunny outside! ".repeat(20)].map(String::from).to_vec();
    let together = embedder.embed(texts.clone()).unwrap();
    assert_eq!(together[2].tokens, tiny::BERT_MAX_SEQ, "long input truncated, not the exporter's 8");
    assert_eq!(together[1].tokens, 4, "[CLS] he drove [SEP]: padding is not counted");
    for (text, batched) in texts.into_iter().zip(&together) {
        let alone = embedder.embed(vec![text]).unwrap().remove(0);
        let norm: f32 = alone.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let worst = alone.vector.iter().zip(&batched.vector).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "padding changed an embedding by {worst}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn generate(g: &mut Generator, prompt: &str, params: &GenerateParams) -> Vec<Event> {
    let mut events = Vec::new();
    g.generate(prompt, params, &mut |e| {
        events.push(e);
        true
    });
    events
}

#[test]
fn gguf_model_and_tokenizer_load_and_generate_reproducibly() {
    let dir = scratch("llama");
    let path = dir.join("tiny.gguf");
    tiny::write_llama_gguf(&path).unwrap();
    let mut g = Generator::load(&path, &Device::Cpu).unwrap();
    assert_eq!(g.context_length, tiny::LLAMA_CONTEXT as usize);

    let params = GenerateParams { max_tokens: 10, temperature: 0.7, top_p: 0.9, seed: 3, stop: Vec::new() };
    let first = generate(&mut g, "the tea 42", &params);
    assert!(matches!(first[0], Event::Started { prompt_tokens } if prompt_tokens > 3), "{first:?}");
    match first.last().unwrap() {
        Event::Done { finish: Finish::Length, completion_tokens } => assert_eq!(*completion_tokens, 10),
        Event::Done { finish: Finish::Stop, completion_tokens } => assert!(*completion_tokens < 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(generate(&mut g, "the tea 42", &params), first, "same prompt, parameters and seed");
    let greedy = GenerateParams { temperature: 0.0, ..params.clone() };
    assert_eq!(generate(&mut g, "hello", &greedy), generate(&mut g, "hello", &greedy));

    let too_long = GenerateParams { max_tokens: 200, ..params.clone() };
    assert!(
        matches!(&generate(&mut g, "hi", &too_long)[0], Event::Rejected(why) if why.contains("context of 128 tokens"))
    );
    // Nobody listening: generation stops at the first event.
    let mut seen = 0;
    g.generate("the", &params, &mut |_| {
        seen += 1;
        false
    });
    assert_eq!(seen, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gguf_tokenizer_round_trips_text_and_knows_its_special_tokens() {
    let dir = scratch("tok");
    let path = dir.join("tiny.gguf");
    tiny::write_llama_gguf(&path).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let tok = crate::gguf_tokenizer::from_gguf(&content).unwrap();
    let text = "the tea at 10:45, héhé";
    let ids = tok.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(tok.tokenizer.decode(&ids, false).unwrap(), text);
    let merged = tok.tokenizer.encode(" the", false).unwrap().get_ids().to_vec();
    assert_eq!(merged.len(), 1, "\" the\" is one merged token: {merged:?}");
    let digits = tok.tokenizer.encode("45", false).unwrap().get_ids().len();
    assert_eq!(digits, 2, "SmolLM-style vocabularies split digits one by one");
    let end = tok.tokenizer.encode("<|im_end|>", false).unwrap().get_ids().to_vec();
    assert_eq!(end.len(), 1);
    assert!(tok.stop_ids.contains(&end[0]));
    assert_eq!(tok.bos, None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn text_is_held_back_only_while_it_may_start_a_stop_string() {
    use crate::generation::emittable_end;
    let stop = vec!["\n\n".to_string(), "END".to_string()];
    assert_eq!(emittable_end("Paris.", &stop), 6);
    assert_eq!(emittable_end("Paris.\n", &stop), 6);
    assert_eq!(emittable_end("Paris. EN", &stop), 7);
    assert_eq!(emittable_end("héé", &["é!".to_string()]), "hé".len());
    assert_eq!(emittable_end("anything", &[]), 8);
}

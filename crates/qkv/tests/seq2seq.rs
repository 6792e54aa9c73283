//! The encoder–decoder: cross-attention's gradients, decoding with caches
//! equal to full recomputation, padding that changes nothing, and beam
//! bookkeeping (selecting batch rows of caches and memories).

use qkv::models::seq2seq::{Seq2Seq, Seq2SeqConfig, Side};
use qkv::nn::Dropout;
use qkv::nn::attention::Attention;
use qkv::nn::positional::Positions;
use qkv_tensor::gradcheck::GradCheck;
use qkv_tensor::{Rng, Tensor, no_grad};

fn small(positions: Positions, pre: bool) -> Seq2SeqConfig {
    Seq2SeqConfig {
        vocab_size: 23,
        d_model: 12,
        encoder_layers: 2,
        decoder_layers: 2,
        encoder_attention_heads: 3,
        decoder_attention_heads: 2,
        encoder_ffn_dim: 20,
        decoder_ffn_dim: 18,
        max_position_embeddings: 32,
        normalize_before: pre,
        qkv_positions: positions,
        dropout: 0.0,
        activation_function: "swish".into(),
        ..Seq2SeqConfig::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d > m || d.is_nan() { d } else { m })
}

#[test]
fn cross_attention_gradients_match_finite_differences() {
    let mut rng = Rng::new(3);
    let attn = Attention::new_separate(8, 2, true, 0.3, &mut rng);
    let x = Tensor::randn(&[2, 3, 8], 1.0, &mut rng); // queries: 3 target positions
    let memory = Tensor::randn(&[2, 5, 8], 1.0, &mut rng); // keys and values: 5 source positions
    let mask = [true, true, true, false, false, true, true, true, true, true]; // the first source is padded
    let gc = GradCheck { step: 1e-2, atol: 3e-3, rtol: 3e-2 };
    let r = gc
        .run(&[x, memory], |t| {
            let m = attn.memory(&t[1], Some(&mask))?;
            attn.forward_cross(&t[0], &m)
        })
        .unwrap();
    if let Err(msg) = r {
        panic!("{msg}");
    }
}

#[test]
fn padding_keys_are_invisible_to_cross_attention() {
    let mut rng = Rng::new(4);
    let attn = Attention::new_separate(8, 2, true, 0.3, &mut rng);
    let x = Tensor::randn(&[1, 3, 8], 1.0, &mut rng);
    let memory = Tensor::randn(&[1, 4, 8], 1.0, &mut rng);
    let short = memory.narrow(1, 0, 2).unwrap().contiguous();
    let alone = attn.forward_cross(&x, &attn.memory(&short, Some(&[true, true])).unwrap()).unwrap();
    let masked = attn.forward_cross(&x, &attn.memory(&memory, Some(&[true, true, false, false])).unwrap()).unwrap();
    assert!(max_diff(&alone.to_vec(), &masked.to_vec()) < 1e-6);
    let p = attn.cross_probabilities(&x, &attn.memory(&memory, Some(&[true, true, false, false])).unwrap()).unwrap();
    assert_eq!(p.shape(), &[1, 2, 3, 4]);
    for row in p.to_vec().chunks(4) {
        assert!((row[0] + row[1] - 1.0).abs() < 1e-6 && row[2] == 0.0 && row[3] == 0.0, "{row:?}");
    }
}

#[test]
fn rows_sharing_a_memory_equal_rows_with_copies_of_it() {
    // beam search's k hypotheses of a sentence read its one memory
    let mut rng = Rng::new(6);
    let attn = Attention::new_separate(8, 2, true, 0.3, &mut rng);
    let x = Tensor::randn(&[6, 2, 8], 1.0, &mut rng); // 3 sentences × 2 hypotheses, 2 positions each
    let memory = Tensor::randn(&[3, 4, 8], 1.0, &mut rng);
    let mask = [true, true, true, false, true, true, true, true, true, true, false, false];
    let shared = attn.memory(&memory, Some(&mask)).unwrap();
    let copied = shared.select(&[0, 0, 1, 1, 2, 2]).unwrap();
    let a = attn.forward_cross(&x, &shared).unwrap().to_vec();
    let b = attn.forward_cross(&x, &copied).unwrap().to_vec();
    assert!(a.iter().all(|v| v.is_finite()) && max_diff(&a, &b) < 1e-6, "{}", max_diff(&a, &b));
    // rows that cannot share the sequences evenly are refused, not misread
    let five = Tensor::randn(&[5, 2, 8], 1.0, &mut rng);
    let err = attn.forward_cross(&five, &shared).unwrap_err().to_string();
    assert!(err.contains("5 query rows") && err.contains("3 sequences"), "{err}");
}

/// Source `[2, 6]` (the second padded after 4 tokens), target `[2, 5]`.
fn batch(rng: &mut Rng) -> (Vec<u32>, Vec<bool>, Vec<u32>) {
    let src: Vec<u32> = (0..12).map(|_| 2 + rng.below(21) as u32).collect();
    let mut mask = vec![true; 12];
    mask[10] = false;
    mask[11] = false;
    let tgt: Vec<u32> = (0..10).map(|_| 2 + rng.below(21) as u32).collect();
    (src, mask, tgt)
}

#[test]
fn decoding_through_caches_equals_the_full_forward() {
    for (positions, pre) in [(Positions::Sinusoidal, false), (Positions::Learned, true), (Positions::Rope, false)] {
        let model = Seq2Seq::new(small(positions, pre), 7).unwrap();
        let (src, mask, tgt) = batch(&mut Rng::new(1));
        let s = Side { ids: &src, mask: &mask, b: 2, t: 6 };
        let tmask = vec![true; 10];
        let full = no_grad(|| model.forward(&s, &Side { ids: &tgt, mask: &tmask, b: 2, t: 5 }, &Dropout::default()))
            .unwrap()
            .to_vec();
        no_grad(|| {
            let memory = model.encode(&s, &Dropout::default()).unwrap();
            let memories = model.memories(&memory, &mask).unwrap();
            let mut caches = model.new_caches(2, 8);
            for pos in 0..5 {
                let ids = [tgt[pos], tgt[5 + pos]];
                let one = Side { ids: &ids, mask: &[true, true], b: 2, t: 1 };
                let h = model.decode(&one, &memories, Some(&mut caches), &Dropout::default()).unwrap();
                let got = model.logits(&h).unwrap().to_vec();
                for b in 0..2 {
                    let want = &full[(b * 5 + pos) * 23..(b * 5 + pos + 1) * 23];
                    let d = max_diff(&got[b * 23..(b + 1) * 23], want);
                    assert!(d < 1e-5, "{positions:?} pre={pre}: position {pos} of sentence {b} differs by {d}");
                }
            }
        });
    }
}

#[test]
fn a_sentence_alone_and_padded_in_a_batch_translates_the_same() {
    let model = Seq2Seq::new(small(Positions::Sinusoidal, false), 8).unwrap();
    let (src, mask, tgt) = batch(&mut Rng::new(2));
    let tmask = [true; 5];
    let run = |src: &[u32], mask: &[bool], b: usize| {
        let t = src.len() / b;
        let tgt: Vec<u32> = tgt[5..].iter().copied().cycle().take(5 * b).collect();
        let tm: Vec<bool> = tmask.iter().copied().cycle().take(5 * b).collect();
        no_grad(|| {
            model.forward(&Side { ids: src, mask, b, t }, &Side { ids: &tgt, mask: &tm, b, t: 5 }, &Dropout::default())
        })
        .unwrap()
        .to_vec()
    };
    let alone = run(&src[6..10], &[true; 4], 1);
    let padded = run(&src, &mask, 2);
    assert!(max_diff(&alone, &padded[5 * 23..]) < 1e-5);
}

#[test]
fn selecting_batch_rows_of_caches_and_memories_follows_the_rows() {
    let model = Seq2Seq::new(small(Positions::Sinusoidal, false), 9).unwrap();
    let (src, mask, tgt) = batch(&mut Rng::new(5));
    let s = Side { ids: &src, mask: &mask, b: 2, t: 6 };
    no_grad(|| {
        let memory = model.encode(&s, &Dropout::default()).unwrap();
        let memories = model.memories(&memory, &mask).unwrap();
        let mut caches = model.new_caches(2, 8);
        let first = [tgt[0], tgt[5]];
        model
            .decode(
                &Side { ids: &first, mask: &[true; 2], b: 2, t: 1 },
                &memories,
                Some(&mut caches),
                &Dropout::default(),
            )
            .unwrap();
        // swap the sentences and duplicate the second: three hypotheses
        let idx = [1, 0, 1];
        let picked: Vec<_> = memories.iter().map(|m| m.select(&idx).unwrap()).collect();
        for c in caches.iter_mut() {
            c.select(&idx).unwrap();
        }
        let next = [tgt[6], tgt[1], tgt[6]];
        let h = model
            .decode(&Side { ids: &next, mask: &[true; 3], b: 3, t: 1 }, &picked, Some(&mut caches), &Dropout::default())
            .unwrap();
        let got = model.logits(&h).unwrap().to_vec();
        // the same as decoding each sentence on its own
        let tmask = [true; 2];
        for (row, sentence) in idx.iter().enumerate() {
            let one_src = &src[sentence * 6..(sentence + 1) * 6];
            let one_mask = &mask[sentence * 6..(sentence + 1) * 6];
            let ids = [tgt[sentence * 5], tgt[sentence * 5 + 1]];
            let full = model
                .forward(
                    &Side { ids: one_src, mask: one_mask, b: 1, t: 6 },
                    &Side { ids: &ids, mask: &tmask, b: 1, t: 2 },
                    &Dropout::default(),
                )
                .unwrap()
                .to_vec();
            let d = max_diff(&got[row * 23..(row + 1) * 23], &full[23..]);
            assert!(d < 1e-5, "row {row}: {d}");
        }
    });
}

#[test]
fn bad_configurations_are_refused_with_the_option_named() {
    let bad = |c: Seq2SeqConfig| Seq2Seq::new(c, 0).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        bad(Seq2SeqConfig { d_model: 10, encoder_attention_heads: 4, ..Seq2SeqConfig::default() }).contains("multiple")
    );
    assert!(bad(Seq2SeqConfig { activation_function: "mish".into(), ..Seq2SeqConfig::default() }).contains("mish"));
    let mut c = Seq2SeqConfig::default();
    c.extra.insert("share_encoder_decoder_embeddings".into(), false.into());
    assert!(bad(c).contains("share_encoder_decoder_embeddings"));
    assert!(bad(Seq2SeqConfig { eos_token_id: 9000, ..Seq2SeqConfig::default() }).contains("9000"));
}

// ---------------------------------------------------------------- Marian

mod marian {
    use std::path::PathBuf;

    use qkv::io::safetensors::load;
    use qkv::models::inference::InferenceWeights;
    use qkv::models::seq2seq::{Seq2Seq, Side};
    use qkv::nn::Dropout;
    use qkv::translate::{Decoding, EarlyStopping, translate};
    use qkv_tensor::no_grad;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/marian-odd")
    }

    fn rows(t: &qkv_tensor::Tensor) -> Vec<Vec<f32>> {
        let w = t.shape()[1];
        t.to_vec().chunks(w).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn marian_logits_match_transformers() {
        let r = load(&dir().join("reference.safetensors")).expect("regenerate with scripts/make_seq2seq_fixtures.py");
        let model = Seq2Seq::load(&dir()).unwrap();
        let (b, ts) = (r.tensors["src"].shape()[0], r.tensors["src"].shape()[1]);
        let tt = r.tensors["dec_in"].shape()[1];
        let src: Vec<u32> = r.tensors["src"].to_vec().iter().map(|&v| v as u32).collect();
        let mask: Vec<bool> = r.tensors["src_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
        let dec: Vec<u32> = r.tensors["dec_in"].to_vec().iter().map(|&v| v as u32).collect();
        let tmask = vec![true; dec.len()];
        let logits = no_grad(|| {
            model.forward(
                &Side { ids: &src, mask: &mask, b, t: ts },
                &Side { ids: &dec, mask: &tmask, b, t: tt },
                &Dropout::default(),
            )
        })
        .unwrap();
        let want = &r.tensors["logits"];
        assert_eq!(logits.shape(), want.shape());
        let d = logits.max_abs_diff(want).unwrap();
        assert!(d < 1e-4, "logits differ from transformers' by {d}");
    }

    /// The probabilities `qkv attention` draws are the ones `transformers`
    /// returns with `output_attentions`, for every decoder layer and head.
    #[test]
    fn marian_cross_attention_matches_output_attentions() {
        let r = load(&dir().join("reference.safetensors")).unwrap();
        let model = Seq2Seq::load(&dir()).unwrap();
        let ts = r.tensors["src"].shape()[1];
        let tt = r.tensors["dec_in"].shape()[1];
        let src: Vec<u32> = r.tensors["src"].to_vec()[..ts].iter().map(|&v| v as u32).collect();
        let dec: Vec<u32> = r.tensors["dec_in"].to_vec()[..tt].iter().map(|&v| v as u32).collect();
        let maps = model.cross_attention(&src, &dec).unwrap();
        let want = &r.tensors["cross_attentions"]; // [L, H, Tt, Ts]
        assert_eq!(maps.len(), want.shape()[0]);
        let per_layer = want.shape()[1..].iter().product::<usize>();
        for (l, m) in maps.iter().enumerate() {
            assert_eq!(m.shape(), &want.shape()[1..]);
            let w = &want.to_vec()[l * per_layer..(l + 1) * per_layer];
            let d = super::max_diff(&m.to_vec(), w);
            assert!(d < 1e-5, "layer {l}: cross-attention differs from transformers' by {d}");
        }
    }

    #[test]
    fn marian_greedy_and_beam_translations_match_generate() {
        let r = load(&dir().join("reference.safetensors")).unwrap();
        let model = Seq2Seq::load(&dir()).unwrap();
        let max_new: usize = r.metadata["max_new_tokens"].parse().unwrap();
        let src = rows(&r.tensors["src"]);
        let mask = rows(&r.tensors["src_mask"]);
        // each source without its padding
        let sources: Vec<Vec<u32>> = src
            .iter()
            .zip(&mask)
            .map(|(s, m)| s.iter().zip(m).filter(|(_, m)| **m > 0.5).map(|(&x, _)| x as u32).collect())
            .collect();
        let fixed = Decoding { max_len_ratio: 0.0, max_len_extra: max_new, ..Decoding::default() };
        for (name, how) in [
            ("greedy", Decoding { beam: 1, ..fixed }),
            ("beam4", Decoding { beam: 4, length_penalty: 1.0, early_stopping: EarlyStopping::Heuristic, ..fixed }),
            (
                "beam3_lp06_early",
                Decoding { beam: 3, length_penalty: 0.6, early_stopping: EarlyStopping::Done, ..fixed },
            ),
        ] {
            let want: Vec<Vec<u32>> = rows(&r.tensors[name])
                .iter()
                .map(|row| row.iter().filter(|&&x| x >= 0.0).map(|&x| x as u32).collect())
                .collect();
            let got = translate(&model, &sources, &how).unwrap();
            assert_eq!(got, want, "{name}");
            // as `qkv translate` opens it: packed weights, the same translations
            let prepared = Seq2Seq::load(&dir()).unwrap().prepared_for_inference(InferenceWeights::PACKED).unwrap();
            assert_eq!(translate(&prepared, &sources, &how).unwrap(), want, "{name}, prepared for inference");
        }
    }
}

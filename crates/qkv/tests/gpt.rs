//! GPT behaviour: the KV cache gives the logits of full recomputation, every
//! architecture option trains, and bad configurations are refused.

use qkv::generate::{Sampling, generate};
use qkv::models::gpt::{Gpt, GptConfig};
use qkv::nn::block::Placement;
use qkv::nn::mlp::Activation;
use qkv::nn::norm::NormKind;
use qkv::nn::positional::Positions;
use qkv::nn::{Dropout, Module};
use qkv::train::optimizer::{AdamW, AdamWConfig};
use qkv_tensor::{Rng, no_grad};

fn small(positions: Positions) -> GptConfig {
    GptConfig {
        vocab_size: 13,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        positions,
        bias: true,
        ..GptConfig::default()
    }
}

#[test]
fn cached_logits_equal_full_recomputation() {
    for positions in [Positions::Learned, Positions::Sinusoidal, Positions::Rope, Positions::Alibi, Positions::None] {
        let model = Gpt::new(small(positions), 3).unwrap();
        let mut rng = Rng::new(1);
        let ids: Vec<u32> = (0..11).map(|_| rng.below(13) as u32).collect();
        let full = no_grad(|| model.forward(&ids, 1, ids.len(), &Dropout::default())).unwrap().to_vec();
        // prompt of 4 tokens, then one token at a time through the cache
        let mut caches = model.new_caches(1);
        let v = 13;
        let check = |pos: usize, logits: Vec<f32>| {
            let expect = &full[pos * v..(pos + 1) * v];
            for (a, e) in logits.iter().zip(expect) {
                assert!((a - e).abs() < 1e-5, "{positions:?} position {pos}: {a} vs {e}");
            }
        };
        let l = no_grad(|| model.next_logits(&ids[..4], 1, 4, &mut caches)).unwrap();
        check(3, l.to_vec());
        for pos in 4..ids.len() {
            let l = no_grad(|| model.next_logits(&ids[pos..pos + 1], 1, 1, &mut caches)).unwrap();
            check(pos, l.to_vec());
        }
        assert_eq!(caches[0].len(), ids.len());
    }
}

#[test]
fn greedy_generation_is_deterministic_and_survives_a_full_context() {
    let model = Gpt::new(small(Positions::Learned), 5).unwrap();
    let s = Sampling { greedy: true, ..Default::default() };
    // 40 new tokens through a context of 16: the cache is rebuilt twice
    let a = generate(&model, &[1, 2, 3], 40, &s, |_| Ok(true)).unwrap();
    let b = generate(&model, &[1, 2, 3], 40, &s, |_| Ok(true)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 40);
    // greedy continuation equals argmax of a full forward over the same window
    let window: Vec<u32> = [1, 2, 3].iter().copied().chain(a[..5].iter().copied()).collect();
    let logits = no_grad(|| model.forward(&window, 1, window.len(), &Dropout::default())).unwrap().to_vec();
    let last = &logits[(window.len() - 1) * 13..];
    let argmax = last.iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0;
    assert_eq!(a[5], argmax as u32);
    assert!(generate(&model, &[], 5, &s, |_| Ok(true)).is_err(), "empty prompt");
}

#[test]
fn every_architecture_option_learns_a_repeating_pattern() {
    let variants: Vec<(&str, GptConfig)> = vec![
        ("default", small(Positions::Learned)),
        (
            "rope+rmsnorm+swiglu",
            GptConfig { norm: NormKind::RmsNorm, activation: Activation::SwiGlu, ..small(Positions::Rope) },
        ),
        ("alibi+relu", GptConfig { activation: Activation::Relu, ..small(Positions::Alibi) }),
        ("sinusoidal+gelu-tanh", GptConfig { activation: Activation::GeluTanh, ..small(Positions::Sinusoidal) }),
        ("post-norm", GptConfig { norm_placement: Placement::Post, ..small(Positions::Learned) }),
        (
            "untied+no-bias+dropout",
            GptConfig { tie_embeddings: false, bias: false, dropout: 0.1, ..small(Positions::Learned) },
        ),
    ];
    // the sequence 0 1 2 … 12 0 1 2 …: each token determines the next
    let data: Vec<u32> = (0..400).map(|i| (i % 13) as u32).collect();
    for (name, cfg) in variants {
        let model = Gpt::new(cfg, 0).unwrap();
        let params = model.named_params();
        let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, &params);
        let mut rng = Rng::new(0);
        let (b, t) = (4, 16);
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..100 {
            params.iter().for_each(|p| p.param.zero_grad());
            let (x, y) = qkv::data::text::random_batch(&data, b, t, &mut rng);
            let drop = Dropout { p: model.config.dropout, seed: Some(rng.next_u64()) };
            let loss = model.loss(&x, &y, b, t, &drop).unwrap();
            last = loss.item().unwrap();
            first.get_or_insert(last);
            loss.backward().unwrap();
            opt.update(&params, 1e-2);
        }
        let first = first.unwrap();
        assert!(first > 2.0 && last < 0.6, "{name}: loss {first} -> {last}");
    }
}

#[test]
fn bad_configurations_are_refused_before_allocating() {
    let bad = [
        GptConfig { n_head: 3, ..small(Positions::Learned) }, // 8 % 3 != 0
        GptConfig { n_layer: 0, ..small(Positions::Learned) },
        GptConfig { vocab_size: 0, ..small(Positions::Learned) },
        GptConfig { dropout: 1.0, ..small(Positions::Learned) },
        GptConfig { n_embd: 6, n_head: 2, ..small(Positions::Rope) }, // head width 3 is odd
        GptConfig { mlp_ratio: 0.0, ..small(Positions::Learned) },
    ];
    for cfg in bad {
        let e = Gpt::new(cfg.clone(), 0).err().unwrap_or_else(|| panic!("{cfg:?} accepted"));
        assert!(e.to_string().starts_with("invalid configuration"), "{e}");
    }
    let model = Gpt::new(small(Positions::Learned), 0).unwrap();
    assert!(model.forward(&[1, 2, 99], 1, 3, &Dropout::default()).is_err(), "id outside the vocabulary");
    assert!(model.forward(&[1; 17], 1, 17, &Dropout::default()).is_err(), "longer than the context");
    assert!(model.forward(&[1; 6], 2, 4, &Dropout::default()).is_err(), "ids do not fill the batch");
}

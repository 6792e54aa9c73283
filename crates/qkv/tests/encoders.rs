//! Encoder behaviour: padding does not change a sentence's vectors, and the
//! heads train.

use qkv::data::bert_input::Specials;
use qkv::models::bert::{Batch, Bert, BertClassifier, BertConfig, Pooling};
use qkv::models::inference::InferenceWeights;
use qkv::nn::{Dropout, Module};
use qkv::train::TrainConfig;
use qkv::train::optimizer::AdamWConfig;
use qkv::train::run::Trainer;
use qkv::train::text_classification::TextClassifier;
use qkv_tensor::{InferenceCopy, Rng, Tensor, no_grad};

fn tiny() -> BertConfig {
    BertConfig {
        vocab_size: 40,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 16,
        hidden_dropout_prob: 0.0,
        ..BertConfig::default()
    }
}

#[test]
fn a_sentence_alone_and_in_a_padded_batch_gives_the_same_vectors() {
    let bert = Bert::new(tiny(), true, &mut Rng::new(0)).unwrap();
    let short = [2u32, 7, 9, 11, 3];
    let long = [2u32, 5, 6, 7, 8, 9, 10, 12, 3];
    let alone = no_grad(|| {
        bert.forward(&Batch { ids: &short, type_ids: None, mask: &[true; 5], b: 1, t: 5 }, &Dropout::default())
    })
    .unwrap();
    // batch: the long sentence first, the short one padded with id 0 after it
    let mut ids = long.to_vec();
    ids.extend(short);
    ids.extend([0u32; 4]);
    let mut mask = vec![true; 9 + 5];
    mask.extend([false; 4]);
    let batch =
        no_grad(|| bert.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 2, t: 9 }, &Dropout::default()))
            .unwrap();
    let in_batch = batch.narrow(0, 1, 1).unwrap().narrow(1, 0, 5).unwrap().contiguous();
    assert!(alone.max_abs_diff(&in_batch).unwrap() < 1e-5);
    // and the pooled sentence vectors too
    let p_alone = Bert::pool_mean(&alone, &[true; 5]).unwrap();
    let p_batch = Bert::pool_mean(&batch, &mask).unwrap().narrow(0, 1, 1).unwrap().contiguous();
    assert!(p_alone.max_abs_diff(&p_batch).unwrap() < 1e-5);
}

#[test]
fn a_classifier_learns_which_token_a_sentence_contains() {
    // label 1 iff token 20 occurs; random fillers otherwise
    let sp = Specials { cls: 2, sep: 3, pad: 0, mask: 4 };
    let mut rng = Rng::new(1);
    let mut make = |n: usize| -> Vec<(Vec<u32>, u32)> {
        (0..n)
            .map(|_| {
                let len = 3 + rng.below(6) as usize;
                let mut s: Vec<u32> = (0..len).map(|_| 5 + rng.below(15) as u32).collect();
                let y = rng.below(2) as u32;
                if y == 1 {
                    let at = rng.below(len as u64) as usize;
                    s[at] = 20;
                }
                let mut seq = vec![sp.cls];
                seq.extend(s);
                seq.push(sp.sep);
                (seq, y)
            })
            .collect()
    };
    let (train, test) = (make(400), make(100));
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let model = BertClassifier::new(tiny(), 2, pooling, 0).unwrap();
        assert_eq!(model.named_params().iter().any(|p| p.name.contains("pooler")), pooling == Pooling::Cls);
        let cfg = TrainConfig {
            batch_size: 32,
            max_steps: 150,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 10,
            adamw: AdamWConfig { weight_decay: 0.0, ..Default::default() },
            ..TrainConfig::default()
        };
        let labels = vec!["without".to_string(), "with".to_string()];
        let task = TextClassifier::new(model, sp, labels, train.clone(), test.clone(), &cfg).unwrap();
        let mut tr = Trainer::new(Box::new(task), cfg).unwrap();
        for _ in 0..150 {
            tr.train_step().unwrap();
        }
        let r = tr.task.evaluate().unwrap();
        let accuracy = r.accuracy.unwrap();
        assert!(accuracy > 0.9, "{pooling:?}: accuracy {accuracy}");
        assert!(r.loss.is_finite() && r.loss < 0.4, "{pooling:?}: the held-out loss is a cross-entropy: {}", r.loss);
    }
}

#[test]
fn a_prepared_encoder_gives_the_same_vectors_and_its_copies_step_aside_once_a_weight_changes() {
    let plain = Bert::new(tiny(), true, &mut Rng::new(0)).unwrap();
    let prepared =
        Bert::new(tiny(), true, &mut Rng::new(0)).unwrap().prepared_for_inference(InferenceWeights::PACKED).unwrap();
    let mut rng = Rng::new(3);
    let ids: Vec<u32> = (0..2 * 9).map(|_| rng.below(40) as u32).collect();
    let mask = [true; 18];
    let run = |m: &Bert| {
        no_grad(|| m.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 2, t: 9 }, &Dropout::default()))
    };
    let before = run(&plain).unwrap();
    assert!(run(&prepared).unwrap().max_abs_diff(&before).unwrap() < 1e-5);

    // where the CPU has the packed GEMM, the copies exist and are read only
    // by products of several rows without gradients
    let fc = prepared.layers[0].mlp.c_fc.w_in_out().unwrap();
    let copy = |x: &[usize]| Tensor::zeros(x).inference_copy_for(&fc);
    let packed = no_grad(|| copy(&[3, 16])).is_some();
    if packed {
        assert_eq!(no_grad(|| copy(&[3, 16])), Some(InferenceCopy::Packed));
        assert_eq!(copy(&[3, 16]), None, "gradients are recorded");
        assert_eq!(no_grad(|| copy(&[1, 16])), None, "one row");
    }

    // a training step changes weights (here: every weight scaled) in both
    // models; the packed copies are dropped and the products read the new weights
    for m in [&plain, &prepared] {
        for p in m.named_params() {
            p.param.update(|w, _| w.iter_mut().for_each(|x| *x *= 1.5));
        }
    }
    let fc = prepared.layers[0].mlp.c_fc.w_in_out().unwrap();
    assert_eq!(no_grad(|| Tensor::zeros(&[3, 16]).inference_copy_for(&fc)), None, "dropped");
    let after = run(&plain).unwrap();
    assert!(after.max_abs_diff(&before).unwrap() > 1e-3, "the update changed the model");
    assert!(run(&prepared).unwrap().max_abs_diff(&after).unwrap() < 1e-5);
}

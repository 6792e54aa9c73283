//! A model prepared for inference: the same model, plus copies of its
//! projection weights in the forms that inference reads fastest. The
//! architecture modules ([`crate::nn`]) know nothing of them; the weights'
//! buffers carry them, and the engine's matrix product reads them when no
//! gradient is recorded ([`qkv_tensor::copies`]).
//!
//! What is copied ([`InferenceWeights`]), for every block's projections
//! (q/k/v, attention output, both MLP layers) and a GPT's LM head:
//!
//! * **packed** — each weight already cut into the panels the GEMM reads.
//!   Every product of several rows otherwise copies its weight into those
//!   panels first, on every call, for a weight that never changes (an encoder
//!   embedding batch after batch, a classifier, a prompt): ~4–8 % of MiniLM's
//!   forward pass. Costs about the weights' size again in memory (f32,
//!   columns rounded up to 16). The same numbers: the same kernel sweeps the
//!   same panels.
//! * **f16** — each weight rounded to 16 bits, read by one-row products (every
//!   generated token). Decoding reads all the weights once per token and is
//!   limited by memory bandwidth, not arithmetic, so streaming half the bytes
//!   makes it ~1.6× faster (GPT-2 124M). Costs half the weights' size in
//!   memory. Sums stay f32, but every weight is rounded (≤ 2⁻¹¹ relative):
//!   a generated token's logits move by ~1e-3, which can change a near-tie.
//!
//! BERT's and ViT's separate query, key and value projections are also
//! fused ([`QkvProjection::fused`]) into one `[3C, C]` weight (their `[out,
//! in]` weights stacked, biases concatenated): the unprepared model stacks
//! the three on every call, the prepared one multiplies once by one weight
//! that lasts, with one packed copy.
//!
//! Copies are used only where no gradient is recorded: a forward pass with
//! gradients, and every backward pass, read the f32 weights and give the same
//! numbers, bit for bit, as the unprepared model. Changing a weight (an
//! optimizer step, loading new values) drops its copies, so they never go
//! stale. Still, a prepared model is for inference only: do not train or save
//! it — its fused q/k/v are new parameters under other names than the
//! checkpoint's, and training would only throw the copies away.

use qkv_tensor::Result as TResult;

use crate::error::Result;
use crate::models::bert::{Bert, BertClassifier};
use crate::models::gpt::Gpt;
use crate::models::sentence::SentenceEncoder;
use crate::models::seq2seq::Seq2Seq;
use crate::models::vit::Vit;
use crate::nn::attention::QkvProjection;
use crate::nn::block::Block;
use crate::nn::linear::Linear;

/// Which copies of its weights a prepared model keeps (see the module notes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InferenceWeights {
    /// Packed for the GEMM: read by products of several rows.
    pub packed: bool,
    /// Rounded to 16 bits: read by one-row products (generated tokens).
    pub f16: bool,
}

impl InferenceWeights {
    /// Packed copies only: same numbers, for encoders over many batches.
    pub const PACKED: InferenceWeights = InferenceWeights { packed: true, f16: false };
    /// 16-bit copies only: faster decoding, logits moved by ~1e-3.
    pub const F16: InferenceWeights = InferenceWeights { packed: false, f16: true };
}

/// Attach the copies `w` asks for to a projection's weight.
fn prepare_linear(l: &Linear, w: InferenceWeights) -> TResult<()> {
    if w.packed {
        l.w_in_out()?.attach_packed_copy()?;
    }
    if w.f16 {
        l.weight.value().attach_f16_copy()?;
    }
    Ok(())
}

/// A block with its q/k/v fused and copies of its four projections' weights.
fn prepare_block(mut block: Block, w: InferenceWeights) -> TResult<Block> {
    block.attn.qkv = block.attn.qkv.fused()?;
    let QkvProjection::Fused(qkv) = &block.attn.qkv else { unreachable!("just fused") };
    for l in [qkv, &block.attn.c_proj, &block.mlp.c_fc, &block.mlp.c_proj] {
        prepare_linear(l, w)?;
    }
    Ok(block)
}

fn prepare_blocks(blocks: Vec<Block>, w: InferenceWeights) -> TResult<Vec<Block>> {
    blocks.into_iter().map(|b| prepare_block(b, w)).collect()
}

impl Gpt {
    /// This model with copies of its blocks' weights and of its LM head, for
    /// generation (`f16`) or no-grad passes over many tokens (`packed`). For
    /// inference only (see the module notes). A tied head's f16 copy is one
    /// of the token embedding, which the lookup never reads.
    pub fn prepared_for_inference(mut self, w: InferenceWeights) -> Result<Gpt> {
        self.h = prepare_blocks(self.h, w)?;
        let head = self.head().value(); // [V, C], read transposed
        if w.packed {
            head.t()?.attach_packed_copy()?;
        }
        if w.f16 {
            head.attach_f16_copy()?;
        }
        Ok(self)
    }
}

impl Bert {
    /// This encoder with its blocks' q/k/v fused and copies of their weights
    /// (usually [`InferenceWeights::PACKED`], for more than one batch). For
    /// inference only (see the module notes).
    pub fn prepared_for_inference(mut self, w: InferenceWeights) -> Result<Bert> {
        self.layers = prepare_blocks(self.layers, w)?;
        Ok(self)
    }
}

impl BertClassifier {
    /// [`Bert::prepared_for_inference`] for the encoder under the head.
    pub fn prepared_for_inference(self, w: InferenceWeights) -> Result<BertClassifier> {
        Ok(BertClassifier { bert: self.bert.prepared_for_inference(w)?, ..self })
    }
}

impl SentenceEncoder {
    /// [`Bert::prepared_for_inference`] for the encoder.
    pub fn prepared_for_inference(self, w: InferenceWeights) -> Result<SentenceEncoder> {
        Ok(SentenceEncoder { bert: self.bert.prepared_for_inference(w)?, ..self })
    }
}

impl Vit {
    /// This model with its blocks' q/k/v fused and copies of their weights
    /// (usually [`InferenceWeights::PACKED`], for more than one image). For
    /// inference only (see the module notes).
    pub fn prepared_for_inference(mut self, w: InferenceWeights) -> Result<Vit> {
        self.layers = prepare_blocks(self.layers, w)?;
        Ok(self)
    }
}

impl Seq2Seq {
    /// This encoder–decoder with copies of its weights, for translation:
    /// every step of the decoder multiplies a few rows (the sentences, or
    /// their beams) by weights that never change, the largest the `[C, V]`
    /// output projection. The encoder's and the decoder's self-attention
    /// q/k/v are fused; cross-attention keeps its separate projections (its
    /// keys and values come from the encoder). For inference only (see the
    /// module notes).
    pub fn prepared_for_inference(mut self, w: InferenceWeights) -> Result<Seq2Seq> {
        self.encoder = prepare_blocks(self.encoder, w)?;
        for block in &mut self.decoder {
            block.self_attn.qkv = block.self_attn.qkv.fused()?;
            let QkvProjection::Fused(qkv) = &block.self_attn.qkv else { unreachable!("just fused") };
            let QkvProjection::Separate { query, .. } = &block.encoder_attn.qkv else {
                unreachable!("cross-attention has separate projections")
            };
            for l in
                [qkv, &block.self_attn.c_proj, query, &block.encoder_attn.c_proj, &block.mlp.c_fc, &block.mlp.c_proj]
            {
                prepare_linear(l, w)?;
            }
        }
        let head = self.shared.weight.value(); // [V, C], read transposed
        if w.packed {
            head.t()?.attach_packed_copy()?;
        }
        if w.f16 {
            head.attach_f16_copy()?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bert::{Batch, BertConfig};
    use crate::models::gpt::GptConfig;
    use crate::nn::linear::WeightLayout;
    use crate::nn::{Dropout, Module};
    use qkv_tensor::{InferenceCopy, Rng, Tensor, no_grad};

    fn tiny_gpt() -> Gpt {
        let config =
            GptConfig { vocab_size: 50, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32, ..GptConfig::default() };
        Gpt::new(config, 7).unwrap()
    }

    /// Loss and every gradient of one forward and backward pass with gradients.
    fn loss_and_grads(m: &Gpt, ids: &[u32], targets: &[u32]) -> (f32, Vec<Vec<f32>>) {
        let params = m.named_params();
        params.iter().for_each(|p| p.param.zero_grad());
        let loss = m.loss(ids, targets, 2, 6, &Dropout::default()).unwrap();
        loss.backward().unwrap();
        (loss.item().unwrap(), params.iter().map(|p| p.param.grad().unwrap().to_vec()).collect())
    }

    #[test]
    fn a_prepared_gpt_trains_bit_for_bit_and_reads_its_copies_only_without_gradients() {
        let mut rng = Rng::new(1);
        let ids: Vec<u32> = (0..12).map(|_| rng.below(50) as u32).collect();
        let targets: Vec<u32> = (0..12).map(|_| rng.below(50) as u32).collect();
        let plain = tiny_gpt();
        let prepared = tiny_gpt().prepared_for_inference(InferenceWeights { packed: true, f16: true }).unwrap();
        // with gradients: the f32 weights, forward and backward
        assert_eq!(loss_and_grads(&plain, &ids, &targets), loss_and_grads(&prepared, &ids, &targets));

        // without: several rows read the packed copies (the same numbers) ...
        let full = |m: &Gpt| no_grad(|| m.forward(&ids, 2, 6, &Dropout::default())).unwrap();
        assert!(full(&prepared).max_abs_diff(&full(&plain)).unwrap() < 1e-5);
        // ... and one row (a generated token) the 16-bit ones, which move the logits a little
        let decode = |m: &Gpt| {
            let mut caches = m.new_caches(1);
            let rows: Vec<Tensor> =
                ids[..6].iter().map(|&id| no_grad(|| m.next_logits(&[id], 1, 1, &mut caches)).unwrap()).collect();
            Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0).unwrap()
        };
        let d = decode(&prepared).max_abs_diff(&decode(&plain)).unwrap();
        assert!(d > 0.0 && d < 1e-2, "f16 logits differ by {d}");

        let fc = prepared.h[0].mlp.c_fc.w_in_out().unwrap();
        let (rows, one) = (Tensor::zeros(&[2, 6, 32]), Tensor::zeros(&[1, 1, 32]));
        let packed = no_grad(|| rows.inference_copy_for(&fc));
        assert!(packed == Some(InferenceCopy::Packed) || packed.is_none(), "no packed GEMM on this CPU");
        assert_eq!(no_grad(|| one.inference_copy_for(&fc)), Some(InferenceCopy::F16));
        assert_eq!(rows.inference_copy_for(&fc), None, "gradients are recorded");
        assert_eq!(one.inference_copy_for(&fc), None, "gradients are recorded");
        let head = prepared.head().value().t().unwrap();
        assert_eq!(no_grad(|| one.inference_copy_for(&head)), Some(InferenceCopy::F16));
    }

    #[test]
    fn a_prepared_bert_multiplies_by_one_fused_qkv_weight_with_the_same_numbers() {
        let config = BertConfig {
            vocab_size: 40,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 32,
            max_position_embeddings: 16,
            hidden_dropout_prob: 0.0,
            ..BertConfig::default()
        };
        let plain = Bert::new(config.clone(), true, &mut Rng::new(0)).unwrap();
        let prepared = Bert::new(config, true, &mut Rng::new(0)).unwrap();
        let prepared = prepared.prepared_for_inference(InferenceWeights::PACKED).unwrap();
        let QkvProjection::Fused(qkv) = &prepared.layers[0].attn.qkv else { panic!("q/k/v not fused") };
        assert_eq!((qkv.weight.shape(), qkv.layout), (vec![48, 16], WeightLayout::OutIn));
        assert_eq!(qkv.bias.as_ref().unwrap().shape(), vec![48]);
        let mut rng = Rng::new(3);
        let ids: Vec<u32> = (0..2 * 9).map(|_| rng.below(40) as u32).collect();
        let mask = [true; 18];
        let run =
            |m: &Bert| m.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 2, t: 9 }, &Dropout::default());
        // with gradients: the same numbers, bit for bit
        assert_eq!(run(&prepared).unwrap().to_vec(), run(&plain).unwrap().to_vec());
        // without: the packed copies, the same numbers up to the GEMM's rounding
        let d = no_grad(|| run(&prepared)).unwrap().max_abs_diff(&no_grad(|| run(&plain)).unwrap()).unwrap();
        assert!(d < 1e-5, "{d}");
    }
}

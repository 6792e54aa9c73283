//! A recurrent language model: token embedding → a stack of RNN, LSTM or GRU
//! layers ([`crate::nn::rnn`]) → a linear head over the vocabulary. The same
//! next-token task as the GPT, for comparing the two architectures: the
//! state it carries between windows replaces the GPT's context.
//!
//! Checkpoint names: `embedding.weight`, `rnn.weight_ih_l0`, …, `head.weight`
//! (`[V, H]`, as `nn.Linear` stores it), `head.bias`.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, Tensor};

use crate::error::{Error, Result};
use crate::nn::embedding::Embedding;
use crate::nn::linear::Linear;
use crate::nn::rnn::{Rnn, RnnKind, RnnState};
use crate::nn::{Dropout, Module, NamedParam};

/// The architecture of a recurrent language model. Every field has a
/// default (`qkv train --model lstm`: about 2 M parameters, like the default GPT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecurrentConfig {
    /// The cell: rnn, lstm or gru. Default lstm.
    pub kind: RnnKind,
    /// V: number of token ids. Default 65 (the characters of the bundled corpus).
    pub vocab_size: usize,
    /// Width of the token embedding. Default 128.
    pub n_embd: usize,
    /// Width of the state, H. Default 384.
    pub hidden: usize,
    /// Recurrent layers. Default 2.
    pub n_layer: usize,
    /// Steps of one training window (truncated back-propagation through
    /// time: the state flows on to the next window, the gradient stops).
    /// Default 128.
    pub block_size: usize,
    /// Dropout on the embedding and on the last layer's output while training. Default 0.
    pub dropout: f32,
}

impl Default for RecurrentConfig {
    fn default() -> Self {
        RecurrentConfig {
            kind: RnnKind::Lstm,
            vocab_size: 65,
            n_embd: 128,
            hidden: 384,
            n_layer: 2,
            block_size: 128,
            dropout: 0.0,
        }
    }
}

impl RecurrentConfig {
    /// Trainable numbers of the model this describes, from the sizes alone
    /// (every product checked: `None` if it overflows).
    pub fn num_params(&self) -> Option<usize> {
        let (g, h) = (self.kind.cell().gates(), self.hidden);
        // a layer: W_ih [G·H, in], W_hh [G·H, H] and two biases [G·H]
        let layer = |input: usize| g.checked_mul(h)?.checked_mul(input.checked_add(h)?.checked_add(2)?);
        let rest = layer(h)?.checked_mul(self.n_layer.saturating_sub(1))?;
        // the embedding [V, E] and the head [V, H] with its bias
        let ends = self.vocab_size.checked_mul(self.n_embd.checked_add(h)?.checked_add(1)?)?;
        layer(self.n_embd)?.checked_add(rest)?.checked_add(ends)
    }

    /// Reject sizes that cannot work, before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_embd", self.n_embd),
            ("hidden (the state size)", self.hidden),
            ("n_layer", self.n_layer),
            ("block_size (the window)", self.block_size),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("dropout {} must be in [0, 1)", self.dropout)));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(Error::Config("vocab_size does not fit token ids of 32 bits".into()));
        }
        const LIMIT: usize = 4_000_000_000;
        match self.num_params() {
            Some(p) if p <= LIMIT => Ok(()),
            _ => Err(Error::Config(format!("this configuration asks for more than {LIMIT} parameters"))),
        }
    }
}

pub struct RecurrentLm {
    pub config: RecurrentConfig,
    pub embedding: Embedding,
    pub rnn: Rnn,
    pub head: Linear,
}

impl RecurrentLm {
    pub fn new(config: RecurrentConfig, seed: u64) -> Result<RecurrentLm> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let c = &config;
        let embedding = Embedding::new(c.vocab_size, c.n_embd, 1.0, &mut rng);
        let rnn = Rnn::new(c.kind, c.n_embd, c.hidden, c.n_layer, &mut rng);
        let head = Linear::new_out_in(c.hidden, c.vocab_size, true, 1.0 / (c.hidden as f32).sqrt(), &mut rng);
        Ok(RecurrentLm { config, embedding, rnn, head })
    }

    /// Zeros for `b` sequences.
    pub fn zero_state(&self, b: usize) -> RnnState {
        self.rnn.zero_state(b)
    }

    /// Scores of the next token at every position, and the state after the
    /// last one.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, V]`
    pub fn forward(
        &self,
        ids: &[u32],
        b: usize,
        t: usize,
        state: &RnnState,
        drop: &Dropout,
    ) -> Result<(Tensor, RnnState)> {
        if ids.len() != b * t {
            return Err(Error::Data(format!("{} ids for {b} sequences of {t}", ids.len())));
        }
        let v = self.config.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(Error::Data(format!("token id {bad} is outside the vocabulary of {v}")));
        }
        let x = drop.apply(&self.embedding.forward(ids, &[b, t])?, 1)?;
        let (h, next) = self.rnn.forward(&x, state)?;
        let h = drop.apply(&h, 2)?;
        Ok((self.head.forward(&h)?, next))
    }

    /// Mean next-token cross-entropy of a window, and the state after it.
    pub fn loss(
        &self,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        state: &RnnState,
        drop: &Dropout,
    ) -> Result<(Tensor, RnnState)> {
        let (logits, next) = self.forward(ids, b, t, state, drop)?;
        Ok((qkv_tensor::cross_entropy(&logits, targets, None)?, next))
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} {} layers × {} state, embedding {}, window {}, {:.2} M parameters",
            c.kind.name(),
            c.n_layer,
            c.hidden,
            c.n_embd,
            c.block_size,
            self.num_params() as f64 / 1e6
        )
    }
}

impl Module for RecurrentLm {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.embedding.collect_params(&format!("{prefix}embedding."), out);
        self.rnn.collect_params(&format!("{prefix}rnn."), out);
        self.head.collect_params(&format!("{prefix}head."), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_count_from_the_sizes_is_the_models() {
        for kind in [RnnKind::Rnn, RnnKind::Lstm, RnnKind::Gru] {
            for n_layer in [1, 3] {
                let c = RecurrentConfig { kind, vocab_size: 11, n_embd: 5, hidden: 7, n_layer, ..Default::default() };
                assert_eq!(
                    c.num_params(),
                    Some(RecurrentLm::new(c.clone(), 0).unwrap().num_params()),
                    "{kind:?} × {n_layer}"
                );
            }
        }
        let huge = RecurrentConfig { hidden: usize::MAX / 2 + 1, ..Default::default() };
        assert_eq!(huge.num_params(), None);
        assert!(huge.validate().is_err());
    }
}

//! Recurrent networks — the architecture the transformer replaced. An RNN
//! reads a sequence one token at a time and carries a fixed-size **state**
//! from each step to the next; everything it knows about the past must fit
//! in that state. Attention instead looks back at every earlier token
//! directly, and a whole sequence trains in one parallel pass; a recurrent
//! network must walk its steps in order, but each new token costs the same
//! however long the past.
//!
//! Three cells, with PyTorch's weight layout and names (`weight_ih_l0`,
//! `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, then `_l1`, …), so `nn.RNN`,
//! `nn.LSTM` and `nn.GRU` state dicts load as they are:
//!
//! - **RNN** (Elman): `h_t = tanh(W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh)`.
//! - **LSTM**: four gates — input, forget, cell, output — and a second state
//!   `c`, the cell, which the forget gate keeps or clears: gradients can flow
//!   along `c` over many steps without vanishing.
//! - **GRU**: a reset and an update gate; the update gate mixes the old state
//!   with a candidate (`h = (1 - z)·n + z·h_prev`).
//!
//! Layers stack: layer `l + 1` reads layer `l`'s outputs. The input's share
//! of the gates is one product over all steps; the walk through time is
//! [`qkv_tensor::ops::recurrent::recurrence`], fused per step.

use serde::{Deserialize, Serialize};

use qkv_tensor::kernels::recurrent::Cell;
use qkv_tensor::ops::recurrent::recurrence;
use qkv_tensor::{Param, Result, Rng, Tensor};

use super::{Module, NamedParam};

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RnnKind {
    /// Elman's network, `tanh` (PyTorch's `nn.RNN`).
    Rnn,
    Lstm,
    Gru,
}

impl RnnKind {
    pub fn cell(self) -> Cell {
        match self {
            RnnKind::Rnn => Cell::Tanh,
            RnnKind::Lstm => Cell::Lstm,
            RnnKind::Gru => Cell::Gru,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RnnKind::Rnn => "RNN",
            RnnKind::Lstm => "LSTM",
            RnnKind::Gru => "GRU",
        }
    }
}

/// One layer's weights, PyTorch's layout: `[G·H, in]` and `[G·H, H]`, the
/// `G` gate blocks stacked (LSTM `i, f, g, o`; GRU `r, z, n`).
#[derive(Clone, Debug)]
pub struct RnnLayer {
    pub weight_ih: Param,
    pub weight_hh: Param,
    pub bias_ih: Param,
    pub bias_hh: Param,
}

/// The state carried from one step (or window) to the next: per layer
/// `h` `[B, H]`, and for an LSTM `c` `[B, H]`. Constants: truncated
/// back-propagation through time does not reach past the window.
#[derive(Clone, Debug)]
pub struct RnnState {
    pub h: Vec<Tensor>,
    pub c: Vec<Tensor>,
}

impl RnnState {
    /// Keep the batch rows `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Result<RnnState> {
        let pick = |t: &Tensor| -> Result<Tensor> {
            let (_, h) = t.dims2()?;
            let d = t.contiguous().to_vec();
            Tensor::from_vec(
                rows.iter().flat_map(|&r| d[r * h..(r + 1) * h].iter().copied()).collect(),
                &[rows.len(), h],
            )
        };
        Ok(RnnState {
            h: self.h.iter().map(pick).collect::<Result<_>>()?,
            c: self.c.iter().map(pick).collect::<Result<_>>()?,
        })
    }

    /// Floats held: the memory a sequence needs, whatever its length.
    pub fn floats(&self) -> usize {
        self.h.iter().chain(&self.c).map(Tensor::numel).sum()
    }
}

/// A stack of recurrent layers.
#[derive(Clone, Debug)]
pub struct Rnn {
    pub kind: RnnKind,
    pub hidden: usize,
    pub layers: Vec<RnnLayer>,
}

impl Rnn {
    /// PyTorch's initialisation: every weight and bias uniform in `±1/√H`.
    pub fn new(kind: RnnKind, input: usize, hidden: usize, layers: usize, rng: &mut Rng) -> Rnn {
        let g = kind.cell().gates() * hidden;
        let k = 1.0 / (hidden.max(1) as f32).sqrt();
        let mut u = |shape: &[usize]| Param::new(Tensor::rand_uniform(shape, -k, k, rng));
        let layers = (0..layers)
            .map(|l| {
                let i = if l == 0 { input } else { hidden };
                RnnLayer { weight_ih: u(&[g, i]), weight_hh: u(&[g, hidden]), bias_ih: u(&[g]), bias_hh: u(&[g]) }
            })
            .collect();
        Rnn { kind, hidden, layers }
    }

    /// Zeros for `b` sequences.
    pub fn zero_state(&self, b: usize) -> RnnState {
        let z = || (0..self.layers.len()).map(|_| Tensor::zeros(&[b, self.hidden])).collect();
        RnnState { h: z(), c: if self.kind == RnnKind::Lstm { z() } else { Vec::new() } }
    }

    /// Run every layer over the sequence from `state`.
    ///
    /// # Shapes
    /// x `[B, T, in]` → y `[B, T, H]` (the last layer's states), and the
    /// state after the last step.
    pub fn forward(&self, x: &Tensor, state: &RnnState) -> Result<(Tensor, RnnState)> {
        let want_c = if self.kind == RnnKind::Lstm { self.layers.len() } else { 0 };
        if state.h.len() != self.layers.len() || state.c.len() != want_c {
            return Err(qkv_tensor::Error::invalid(
                "rnn",
                format!(
                    "a state of {} h and {} c for {} {} layers",
                    state.h.len(),
                    state.c.len(),
                    self.layers.len(),
                    self.kind.name()
                ),
            ));
        }
        let mut h = x.clone();
        let mut next = RnnState { h: Vec::new(), c: Vec::new() };
        for (l, layer) in self.layers.iter().enumerate() {
            // the input's share of every step's gates at once: [B, T, G·H]
            let xg = h.matmul(&layer.weight_ih.value().t()?)?;
            let (xg, bias) = match self.kind {
                // the GRU's reset gate scales the hidden share with its bias,
                // so the two biases must enter apart
                RnnKind::Gru => (xg.add_into(&layer.bias_ih.value())?, layer.bias_hh.value()),
                // elsewhere they only add up: one [G·H] sum, added inside
                // each step, instead of a pass over all B·T·G·H gates
                RnnKind::Rnn | RnnKind::Lstm => (xg, layer.bias_ih.value().add(&layer.bias_hh.value())?),
            };
            let c0 = state.c.get(l);
            let r = recurrence(self.kind.cell(), &xg, &layer.weight_hh.value(), &bias, &state.h[l], c0)?;
            h = r.y;
            next.h.push(r.h);
            next.c.extend(r.c);
        }
        Ok((h, next))
    }
}

impl Module for Rnn {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, p, decay) in [
                ("weight_ih", &layer.weight_ih, true),
                ("weight_hh", &layer.weight_hh, true),
                ("bias_ih", &layer.bias_ih, false),
                ("bias_hh", &layer.bias_hh, false),
            ] {
                out.push(NamedParam { name: format!("{prefix}{name}_l{l}"), param: p.clone(), decay });
            }
        }
    }
}

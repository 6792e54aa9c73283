//! Recurrent layers against PyTorch: `nn.RNN`, `nn.LSTM` and `nn.GRU` (2
//! layers, input 5, hidden 7, batch-first) with the weights, inputs and
//! initial states of `scripts/make_rnn_fixtures.py`: outputs, final states,
//! and the gradients of the input and of every weight.

use qkv::nn::Module;
use qkv::nn::rnn::{Rnn, RnnKind, RnnState};
use qkv_tensor::{Param, Rng, Tensor};

mod common;
use common::{assert_close, fixture, set_params};

/// Layer `l` of a `[L, B, H]` state.
fn layer(t: &Tensor, l: usize) -> Tensor {
    let (_, b, h) = t.dims3().unwrap();
    t.narrow(0, l, 1).unwrap().reshape(&[b, h]).unwrap().contiguous()
}

#[test]
fn rnn_lstm_and_gru_match_pytorch_outputs_states_and_gradients() {
    for (kind, file) in [(RnnKind::Rnn, "rnn"), (RnnKind::Lstm, "lstm"), (RnnKind::Gru, "gru")] {
        let f = fixture(&format!("rnn/{file}.safetensors"));
        let t = &f.tensors;
        let rnn = Rnn::new(kind, 5, 7, 2, &mut Rng::new(0));
        let params = rnn.named_params();
        set_params(&params, t, "");
        let state = RnnState {
            h: (0..2).map(|l| layer(&t["h0"], l)).collect(),
            c: if kind == RnnKind::Lstm { (0..2).map(|l| layer(&t["c0"], l)).collect() } else { Vec::new() },
        };
        let x = Param::new(t["x"].clone());
        let (y, next) = rnn.forward(&x.value(), &state).unwrap();
        assert_close(&format!("{file} y"), &y, &t["y"], 1e-5);
        for l in 0..2 {
            assert_close(&format!("{file} h_n[{l}]"), &next.h[l], &layer(&t["h_n"], l), 1e-5);
            if kind == RnnKind::Lstm {
                assert_close(&format!("{file} c_n[{l}]"), &next.c[l], &layer(&t["c_n"], l), 1e-5);
            }
        }
        y.backward_with(&t["dy"]).unwrap();
        assert_close(&format!("{file} grad x"), &x.grad().unwrap(), &t["grad.x"], 1e-4);
        for p in &params {
            let key = format!("grad.{}", p.name);
            assert_close(&format!("{file} {key}"), &p.param.grad().unwrap(), &t[&key], 1e-4);
        }
    }
}

#[test]
fn a_state_of_the_wrong_size_is_refused() {
    let rnn = Rnn::new(RnnKind::Lstm, 3, 4, 2, &mut Rng::new(1));
    let mut state = rnn.zero_state(2);
    state.c.pop();
    let err = rnn.forward(&Tensor::zeros(&[2, 5, 3]), &state).unwrap_err().to_string();
    assert!(err.contains("2 LSTM layers"), "{err}");
}

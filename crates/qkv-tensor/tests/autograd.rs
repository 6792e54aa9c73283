//! The autograd contract: accumulation, no-grad mode, freed graphs, in-place updates.

use qkv_tensor::{Param, Rng, Tensor, no_grad};

fn loss_of(w: &Param, x: &Tensor) -> Tensor {
    x.matmul(&w.value()).unwrap().square().sum_all()
}

#[test]
fn gradients_accumulate_across_backward_passes_until_zeroed() {
    let mut rng = Rng::new(0);
    let w = Param::new(Tensor::randn(&[3, 2], 1.0, &mut rng));
    let x = Tensor::randn(&[4, 3], 1.0, &mut rng);
    loss_of(&w, &x).backward().unwrap();
    let once = w.grad().unwrap().to_vec();
    loss_of(&w, &x).backward().unwrap();
    let twice = w.grad().unwrap().to_vec();
    for (a, b) in once.iter().zip(&twice) {
        assert!((2.0 * a - b).abs() < 1e-5 * (1.0 + b.abs()));
    }
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn a_parameter_used_twice_gets_both_contributions() {
    // d/dw of sum(w * w) = 2w; the two uses of w must add up.
    let w = Param::new(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap());
    let v = w.value();
    v.mul(&v).unwrap().sum_all().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![2.0, -4.0, 6.0]);
}

#[test]
fn no_grad_records_nothing() {
    let w = Param::new(Tensor::ones(&[2, 2]));
    let x = Tensor::ones(&[1, 2]);
    let y = no_grad(|| x.matmul(&w.value()).unwrap());
    assert!(!y.requires_grad());
    assert!(y.sum_all().backward().is_err(), "nothing to differentiate under no_grad");
    // recording is back on afterwards
    assert!(x.matmul(&w.value()).unwrap().requires_grad());
}

#[test]
fn backward_frees_the_graph_and_a_second_call_says_so() {
    let w = Param::new(Tensor::ones(&[2]));
    let loss = w.value().square().sum_all();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("already freed"), "{err}");
}

#[test]
fn backward_needs_a_scalar() {
    let w = Param::new(Tensor::ones(&[2]));
    let err = w.value().square().backward().unwrap_err().to_string();
    assert!(err.contains("scalar"), "{err}");
}

#[test]
fn update_is_in_place_once_the_graph_is_gone_and_copies_otherwise() {
    let w = Param::new(Tensor::ones(&[4]));
    let before = w.value();
    w.update(|v, _| v.iter_mut().for_each(|x| *x = 2.0));
    // `before` still holds the old buffer, so the update had to copy: it keeps its numbers
    assert_eq!(before.to_vec(), vec![1.0; 4]);
    assert_eq!(w.value().to_vec(), vec![2.0; 4]);
    drop(before);
    let ptr = w.value().storage_slice().as_ptr();
    w.update(|v, _| v.iter_mut().for_each(|x| *x += 1.0));
    assert_eq!(w.value().storage_slice().as_ptr(), ptr, "no holder left: updated in place");
    assert_eq!(w.value().to_vec(), vec![3.0; 4]);
}
